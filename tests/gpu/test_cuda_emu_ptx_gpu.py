"""The emulator's tensor-core test kernels on the GPU: the fragment layouts the emulation assumes
(``cuda_emu_ptx``) must be the hardware's, or kernels checked only in the emulator could pass with
a layout the GPU does not have. Skipped without CUDA."""

from __future__ import annotations

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

from test_cuda_emu_ptx_cpu import TEST_SRC  # noqa: E402

from backends.gpu.kernels.common import COMMON_SRC  # noqa: E402
from backends.gpu.kernels.compile import get_function  # noqa: E402
from backends.gpu.kernels.int8_src import INT8_SRC  # noqa: E402

SRC = INT8_SRC + TEST_SRC[len(COMMON_SRC):]  # the int8 mma helper besides

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("kernel, b_shape", [("mma_f16", (8, 16)), ("mma_f16_kn", (16, 8))])
def test_fp16_fragment_layouts_match_the_emulator(rng, kernel, b_shape) -> None:
    import cupy

    a = rng.standard_normal((16, 16)).astype(np.float16)
    b = rng.standard_normal(b_shape).astype(np.float16)
    c0 = rng.standard_normal((16, 8)).astype(np.float32)
    c = cupy.full((16, 8), np.nan, cupy.float32)
    fn = get_function(SRC, kernel)
    fn((1,), (32,), (cupy.asarray(a), cupy.asarray(b), cupy.asarray(c0), c, np.int32(0)), shared_mem=768)
    bt = b.astype(np.float64) if kernel == "mma_f16_kn" else b.astype(np.float64).T
    np.testing.assert_allclose(c.get(), c0 + a.astype(np.float64) @ bt, rtol=1e-5, atol=1e-5)


def test_int8_fragment_layout_matches_the_emulator(rng) -> None:
    import cupy

    a = rng.integers(-128, 128, (16, 32), dtype=np.int8)
    b = rng.integers(-128, 128, (8, 32), dtype=np.int8)
    c0 = rng.integers(-2**20, 2**20, (16, 8), dtype=np.int32)
    c = cupy.zeros((16, 8), cupy.int32)
    get_function(SRC, "mma_s8")((1,), (32,), (cupy.asarray(a), cupy.asarray(b), cupy.asarray(c0), c, np.int32(0)),
                                shared_mem=768)
    np.testing.assert_array_equal(c.get(), c0 + a.astype(np.int64) @ b.astype(np.int64).T)
