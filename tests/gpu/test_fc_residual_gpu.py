"""Residual adds folded into fully connected epilogues, on the GPU: the ConvNeXt-style block
(layer scale folded into the second FC through the permute back, the residual added in its
epilogue on the NHWC bytes) through ``GpuPartition``, every tactic the builder would pick among
left to the heuristic, against float64 numpy on fresh random data. Skipped without CUDA."""

from __future__ import annotations

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

from test_fc_residual_emu_cpu import C, H, N, W, _fp16, convnext_block, convnext_reference  # noqa: E402

from backends.gpu.backend import GpuPartition  # noqa: E402

pytestmark = pytest.mark.gpu


def test_convnext_block_on_the_gpu_matches_float64():
    rng = np.random.default_rng()
    original, params = convnext_block(rng)
    net = _fp16(original)
    part = GpuPartition(net, [la.name for la in net.layers])
    ops = [op for u in part.units if u.lowered for op in u.lowered.ops]
    assert "residual" not in {op.label for op in ops}
    x = rng.standard_normal((N, C, H, W)).astype(np.float16).astype(np.float32)
    (got,) = part.create_context().execute({"x": x}).values()
    want = convnext_reference(x, params)
    assert np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want) < 5e-3
