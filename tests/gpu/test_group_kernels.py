"""Generated group kernels (reduce, softmax, log-softmax, layer/instance/group normalization) on the
GPU vs float64 numpy on fresh random data: every reduce op, kept and dropped dims, last / middle /
several axes, rows of 7 to 5000 (and longer), linear and NHWC-slot inputs, and every row mapping
(a thread, a warp or a block per kept coordinate). Cases and tolerances: group_cases.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

import cupy as cp  # noqa: E402
from group_cases import CASES, GPU_CASES, Case, check, prepare  # noqa: E402

from backends.gpu.kernels.compile import get_module  # noqa: E402
from backends.gpu.kernels.gen import GEN_PRELUDE  # noqa: E402

pytestmark = pytest.mark.gpu

ALL = CASES + GPU_CASES


@pytest.fixture(scope="module")
def module():
    """All the cases' kernels in one NVRTC module, as a GPU partition compiles its kernels."""
    names = {c.id: f"g{i}" for i, c in enumerate(ALL)}
    rng = np.random.default_rng(0)  # the sources do not depend on the data
    src = GEN_PRELUDE + "".join(prepare(c, rng, names[c.id]).source for c in ALL)
    return get_module(src), names


@pytest.mark.parametrize("case", ALL, ids=lambda c: c.id)
def test_group_kernel(module, rng, case: Case):
    mod, names = module
    p = prepare(case, rng, names[case.id])
    args = [cp.asarray(a) for a in p.arrays]
    mod.get_function(p.name)((max(1, -(-p.threads // 256)),), (256,), tuple(args))
    cp.cuda.Device().synchronize()
    check(p, args[1].get())
    if case.layout == "nhwc":  # the kernel must not have written into its input's padding
        assert np.isnan(args[0].get()[..., case.shape[1]:]).all()
