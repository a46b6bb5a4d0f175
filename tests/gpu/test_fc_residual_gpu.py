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


def test_convnext_block_as_one_fused_mlp_on_the_gpu(monkeypatch):
    """The block's two FCs as one fused launch (forced on the test's few rows), against float64 numpy."""
    from backends.gpu.lowering import mlp

    monkeypatch.setattr(mlp, "MIN_BLOCKS", 1)
    _check_fused(np.random.default_rng(), (N, C, H, W), 2)


@pytest.mark.parametrize("shape", [(8, 96, 56, 56), (2, 64, 20, 20), (3, 40, 33, 35)])
def test_convnext_stage_blocks_fuse_their_mlp_on_the_gpu(monkeypatch, shape):
    """ConvNeXt-T's first stage at batch 8 (208 KB of shared memory, 196 row blocks on the
    persistent grid), a narrower block and a ragged one, against float64 numpy."""
    from backends.gpu.lowering import mlp

    monkeypatch.setattr(mlp, "MIN_BLOCKS", 1)
    _check_fused(np.random.default_rng(), shape, 4)


def _check_fused(rng, shape, widen):
    original, params = convnext_block(rng, shape, widen)
    net = _fp16(original)
    part = GpuPartition(net, [la.name for la in net.layers])
    ops = [op for u in part.units if u.lowered for op in u.lowered.ops]
    assert any(op.label.startswith("fc1 + fc2") for op in ops), [op.label for op in ops]
    x = rng.standard_normal(shape).astype(np.float16).astype(np.float32)
    (got,) = part.create_context().execute({"x": x}).values()
    want = convnext_reference(x, params)
    assert np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want) < 5e-3
