"""The direct grouped convolution (``grouped_src.grouped_conv_tile``) on the GPU, against float64
numpy on fresh random data (skipped without CUDA): ResNeXt-50 32x4d's grouped 3x3 layers at batch 2
(56x56x128, the stride-2 first blocks, 28x28x256, 14x14x512, 7x7x1024, 32 groups) with both column
counts, bias, ReLU and a residual; RegNet's group width 24 and a layer whose channels are not a
multiple of 8; the tactic timing offers the kernel; and a ResNeXt-style block through
``GpuPartition`` with the direct tactic forced on its grouped layers, against the reference backend.
"""

from __future__ import annotations

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

import cupy as cp  # noqa: E402
import grouped_nets  # noqa: E402
from gpu_reference import act_ref, assert_close, conv_ref  # noqa: E402

from backends.gpu.backend import GpuPartition, split_segments  # noqa: E402
from backends.gpu.kernels import grouped  # noqa: E402
from backends.gpu.kernels.conv import ConvGeometry  # noqa: E402
from backends.gpu.layout import pad_bias, pad_channels  # noqa: E402
from backends.gpu.tactics import time_conv_gdirect  # noqa: E402
from backends.reference import execute as reference_execute  # noqa: E402
from engine.builder import Builder, BuilderConfig  # noqa: E402
from engine.ir.logger import Logger, Severity  # noqa: E402
from engine.onnx_parser import parse  # noqa: E402

pytestmark = pytest.mark.gpu

RESNEXT = {  # name: (h, w, c, k, groups, stride)
    "s1_56x56x128": (56, 56, 128, 128, 32, 1),
    "s2_first_56to28x256": (56, 56, 256, 256, 32, 2),
    "s2_28x28x256": (28, 28, 256, 256, 32, 1),
    "s3_first_28to14x512": (28, 28, 512, 512, 32, 2),
    "s3_14x14x512": (14, 14, 512, 512, 32, 1),
    "s4_first_14to7x1024": (14, 14, 1024, 1024, 32, 2),
    "s4_7x7x1024": (7, 7, 1024, 1024, 32, 1),
}


def _run(rng, n, h, w, c, k, groups, stride, columns, act=(1, 0.0, 0.0), residual=False, r=3) -> None:
    g = ConvGeometry(n, h, w, c, k, r, r, (stride, stride), (r // 2, r // 2))
    tactic = grouped.GroupedDirectTactic(columns)
    assert tactic in grouped.grouped_direct_tactics(g, groups)
    cg = c // groups
    x = rng.uniform(-1, 1, (n, h, w, c)).astype(np.float16)
    wt = (rng.standard_normal((k, cg, r, r)) / np.sqrt(r * r * cg)).astype(np.float16)
    b = rng.uniform(-0.5, 0.5, k).astype(np.float16).astype(np.float32)
    res = rng.uniform(-1, 1, (n, g.p, g.q, k)).astype(np.float16) if residual else None
    y = cp.full((n, g.p, g.q, g.kp), np.nan, cp.float16)
    grouped.grouped_conv(cp.asarray(pad_channels(x)), cp.asarray(grouped.pack_grouped_weights(wt, groups)),
                         cp.asarray(pad_bias(b, k)), y, g, groups, tactic, act,
                         None if res is None else cp.asarray(pad_channels(res)))
    out = y.get()
    assert not out[..., k:].view(np.uint16).any(), "padded channels must be written as zeros"
    ref = conv_ref(x, wt, (stride, stride), (r // 2, r // 2), groups=groups) + b
    ref = act_ref(ref + (0 if res is None else res.astype(np.float64)), *act)
    assert_close(out[..., :k], ref)


@pytest.mark.parametrize("name", list(RESNEXT))
@pytest.mark.parametrize("columns", grouped.GD_COLUMNS)
def test_resnext50_grouped_layers(rng, name, columns):
    h, w, c, k, groups, stride = RESNEXT[name]
    _run(rng, 2, h, w, c, k, groups, stride, columns, residual=(name == "s3_14x14x512"))


@pytest.mark.parametrize("case", [  # n, h, w, c, k, groups, stride, act, residual, window
    (1, 14, 14, 240, 240, 10, 1, (5, 0.0, 0.0), False, 3),  # RegNet's group width 24, SiLU
    (2, 9, 11, 12, 12, 3, 1, (2, 0.0, 6.0), True, 3),  # 3 groups of 4: C = K = 12, padded to 16; clip
    (2, 17, 13, 64, 128, 8, 2, (0, 0.0, 0.0), False, 3),  # 8 -> 16 channels a group, stride 2
    (2, 15, 15, 128, 128, 32, 1, (1, 0.0, 0.0), True, 1),  # 1x1
])
@pytest.mark.parametrize("columns", grouped.GD_COLUMNS)
def test_other_grouped_layers(rng, case, columns):
    n, h, w, c, k, groups, stride, act, residual, r = case
    _run(rng, n, h, w, c, k, groups, stride, columns, act, residual, r)


def test_tactic_timing_offers_the_direct_kernel():
    merged = ConvGeometry(2, 56, 56, 128, 128, 3, 3, (1, 1), (1, 1), groups=16)  # 32 groups of 4, merged
    times = time_conv_gdirect(merged, 32, (1, 0.0, 0.0), False)
    assert sorted(times) == ["gdirect_q2", "gdirect_q4"] and all(t > 0 for t in times.values())
    assert time_conv_gdirect(ConvGeometry(2, 7, 7, 2048, 2048, 3, 3, (1, 1), (1, 1), groups=32), 32,
                             (1, 0.0, 0.0), False) == {}  # 64-channel groups: not the direct kernel's


@pytest.mark.parametrize("columns", grouped.GD_COLUMNS)
def test_resnext_block_through_a_partition_with_the_tactic_forced(rng, columns):
    model = grouped_nets.resnext_model(rng, batch=2)
    net = Builder(Logger(Severity.ERROR)).build(parse(model), BuilderConfig(fp16=True)).network
    names = [la.name for la in net.layers]
    (_, layers), = split_segments(net, names)
    forced = {la.name: f"gdirect_q{columns}" for la in layers if getattr(la.params, "groups", 1) > 1}
    part = GpuPartition(net, names, tactics=forced)
    kinds = [op.kind for u in part.units if u.lowered for op in u.lowered.ops]
    assert kinds.count("conv_gdirect") == len(forced) == 4, kinds
    feeds = {"input": rng.uniform(-1, 1, (2, 32, 16, 16)).astype(np.float32)}
    got = part.create_context().execute(feeds)
    ref = reference_execute(net, feeds)
    for name in ("features", "logits"):
        assert_close(np.asarray(got[name], np.float64), np.asarray(ref[name], np.float64), rtol=3e-2)
