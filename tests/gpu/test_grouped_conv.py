"""Grouped convolutions on the tensor-core implicit GEMM, against float64 numpy on fresh random data
(skipped without CUDA).

The kernel through ``conv2d`` (groups on grid y, groups of 4 channels merged block-diagonally, every
tile, split-K, residual and activation epilogues) with the tolerance of tests/gpu/test_kernels.py
(gpu_reference.assert_close), and a ResNeXt-style network (grouped 1x1 and 3x3, BN, ReLU, residual
adds) through ONNX -> builder (FP16) -> plan -> runtime against ONNX Runtime fp32 with the tolerance
of tests/gpu/test_models.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

import cupy as cp  # noqa: E402
import grouped_nets  # noqa: E402
from gpu_reference import act_ref, assert_close, conv_ref  # noqa: E402

from backends.gpu.kernels.conv import (  # noqa: E402
    TILES,
    ConvGeometry,
    ConvTactic,
    candidate_tactics,
    conv2d,
    heuristic_tactic,
)
from backends.gpu.layout import group_merge_factor, merge_groups, pack_conv_weights, pad_channels  # noqa: E402
from engine.builder import BuilderConfig, build_from_onnx  # noqa: E402
from engine.compare import onnxruntime_outputs  # noqa: E402
from engine.ir.logger import Logger, Severity  # noqa: E402
from engine.runtime import Runtime  # noqa: E402

pytestmark = pytest.mark.gpu


def _run_grouped(rng, n: int, h: int, w: int, c: int, k: int, groups: int, r: int, stride: int, pad: int,
                 tactic: ConvTactic | None = None, act=(1, 0.0, 0.0), residual: bool = False,
                 dilation: int = 1) -> ConvGeometry:
    """One grouped convolution on the GPU (merged as the lowering merges it) against float64."""
    cg, kg = c // groups, k // groups
    m = group_merge_factor(groups, cg, kg)
    assert m is not None
    g = ConvGeometry(n, h, w, c, k, r, r, (stride, stride), (pad, pad), (dilation, dilation), groups=groups // m)
    tactic = tactic or heuristic_tactic(g)
    x = rng.uniform(-1, 1, (n, h, w, c)).astype(np.float16)
    wt = (rng.standard_normal((k, cg, r, r)) / math.sqrt(cg * r * r)).astype(np.float16)
    b = (0.5 * rng.standard_normal(k)).astype(np.float32)
    res = rng.uniform(-1, 1, (n, g.p, g.q, k)).astype(np.float16) if residual else None
    ref = conv_ref(x, wt, g.stride, g.pad, g.dilation, groups=groups) + b
    if res is not None:
        ref = ref + res
    ref = act_ref(ref, *act)
    packed = pack_conv_weights(merge_groups(wt, groups, m) if m > 1 else wt)
    assert packed.shape == (k, r, r, g.cgp)
    y = cp.full((n, g.p, g.q, g.kp), cp.nan, dtype=cp.float16)  # unwritten outputs stay NaN
    ws = cp.empty(max(tactic.workspace_bytes(g), 4) // 4, cp.float32)
    conv2d(cp.asarray(pad_channels(x)), cp.asarray(packed), cp.asarray(b), y, g, tactic, act,
           None if res is None else cp.asarray(res), ws)
    assert_close(y.get(), ref)
    return g


# (n, h, w, c, k, groups, r, stride, pad, residual): C/G = 4 (merged), 8, 16, 32, 64; K/G != C/G
SHAPES = {
    "g32_cg4_3x3": (3, 14, 14, 128, 128, 32, 3, 1, 1, True),  # ResNeXt-50 32x4d stage 1 (pairs merged)
    "g32_cg4_3x3_s2": (1, 15, 13, 128, 128, 32, 3, 2, 1, False),
    "g2_cg4_kg8_s2": (3, 9, 9, 8, 16, 2, 3, 2, 1, True),  # both groups merged into one
    "g4_cg4_kg12_1x1": (1, 7, 9, 16, 48, 4, 1, 1, 0, True),
    "g4_cg8_3x3": (3, 10, 10, 32, 32, 4, 3, 1, 1, True),
    "g32_cg8_3x3_s2": (1, 14, 14, 256, 256, 32, 3, 2, 1, False),  # ResNeXt-50 stage 2
    "g4_cg16_kg32_3x3": (3, 12, 11, 64, 128, 4, 3, 1, 1, True),
    "g32_cg16_3x3": (1, 7, 7, 512, 512, 32, 3, 1, 1, True),  # ResNeXt-50 stage 3
    "g2_cg32_kg24_1x1": (3, 7, 7, 64, 48, 2, 1, 1, 0, False),
    "g32_cg32_3x3_s2": (1, 14, 14, 1024, 1024, 32, 3, 2, 1, False),  # ResNeXt-50 stage 4 entry
    "g4_cg64_kg16_3x3_s2": (1, 8, 8, 256, 64, 4, 3, 2, 1, True),
    "g2_cg64_kg200_1x1": (3, 6, 5, 128, 400, 2, 1, 1, 0, True),  # two column tiles per group, the second partial
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_grouped_conv_shapes(rng, name):
    n, h, w, c, k, groups, r, st, pd, residual = SHAPES[name]
    _run_grouped(rng, n, h, w, c, k, groups, r, st, pd, residual=residual)


@pytest.mark.parametrize("tile", TILES, ids=lambda t: f"{t.dims}w{t.wm}x{t.wn}s{t.stages}")
@pytest.mark.parametrize("splits", [1, 2, 4])
def test_grouped_conv_every_tile(rng, tile, splits):
    _run_grouped(rng, 2, 11, 13, 96, 96, 4, 3, 1, 1, ConvTactic(tile, splits), act=(5, 0.0, 0.0), residual=True)


def test_grouped_conv_every_candidate(rng):
    """Every tactic the builder may time for a batch-1 layer (32-wide tiles, split-K 1-4)."""
    g = ConvGeometry(1, 14, 14, 256, 256, 3, 3, (1, 1), (1, 1), groups=8)
    cands = candidate_tactics(g)
    assert any(t.splits > 1 for t in cands)
    for t in cands:
        _run_grouped(rng, 1, 14, 14, 256, 256, 8, 3, 1, 1, t, residual=True)


def test_grouped_conv_dilated_with_clip(rng):
    _run_grouped(rng, 2, 13, 12, 48, 72, 3, 3, 1, 2, act=(2, 0.0, 6.0), dilation=2)


def test_resnext_block_through_the_runtime():
    """ONNX -> builder (FP16, tactic timing) -> plan -> runtime on the GPU, against ONNX Runtime fp32."""
    rng = np.random.default_rng()
    model = grouped_nets.resnext_model(rng, batch=3)
    plan = build_from_onnx(model, BuilderConfig(fp16=True, batch=3), Logger(Severity.ERROR))
    engine = Runtime(Logger(Severity.ERROR)).deserialize(plan)
    assert engine.placement["gpu_backend"] == "gpu"
    assert all(p.backend == "gpu" for p in engine.partitions if p.planned_backend == "gpu")
    assert [p for p in engine.partitions if p.planned_backend == "gpu"]
    feeds = {"input": rng.uniform(-1, 1, (3, 32, 16, 16)).astype(np.float32)}
    got = engine.create_execution_context().execute(feeds)
    ref = onnxruntime_outputs(model.SerializeToString(), feeds)
    for name in ("logits", "features"):
        g, r = np.asarray(got[name], np.float64), np.asarray(ref[name], np.float64)
        assert g.shape == r.shape and np.isfinite(g).all(), name
        rel = np.linalg.norm(g - r) / max(np.linalg.norm(r), 1e-30)
        assert rel < 3e-2, f"{name}: relative L2 {rel:.2e}"
        np.testing.assert_allclose(g, r, rtol=3e-2, atol=3e-2 * float(np.abs(r).max()))

