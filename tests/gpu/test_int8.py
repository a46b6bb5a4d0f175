"""INT8 on the GPU (integer tensor cores) against the reference INT8 kernels, bit for bit.

Every case draws fresh random data (the seed is printed), runs the network through
``GpuPartition`` (lowering, arena, CUDA graph) and through ``backends.reference.execute``, and
requires identical float32 outputs: the INT8 results travel as ``q * scale``, so equal floats
mean equal integers. Skipped without CUDA.
"""

from __future__ import annotations

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

import int8_nets as nets  # noqa: E402

from backends import reference  # noqa: E402
from backends.gpu.backend import GpuPartition  # noqa: E402
from backends.gpu.kernels.conv import ConvGeometry  # noqa: E402
from backends.gpu.kernels.int8 import (  # noqa: E402
    TILES8_WG,
    Tactic8,
    candidate_tactics8,
    merge_groups8,
    wgmma_usable8,
)
from engine.ir.dtypes import Precision  # noqa: E402
from engine.ir.network import Network  # noqa: E402

pytestmark = pytest.mark.gpu


class _NoGpu:
    """The GPU backend as on a machine without a GPU: the same plan runs on the reference backend."""

    name = "gpu"

    def available(self):
        return False, "disabled by the test"



def _check(net: Network, feeds: dict[str, np.ndarray], tactics: dict[str, str] | None = None) -> GpuPartition:
    ref = reference.execute(net, feeds)
    part = GpuPartition(net, [la.name for la in net.layers], tactics)
    assert part.fallback_layers == [], part.fallback_layers
    ctx = part.create_context()
    for _ in range(2):  # a second replay must give the same values
        got = ctx.execute(feeds)
        for name in net.outputs:
            g, r = got[name], ref[name]
            assert g.shape == r.shape and g.dtype == r.dtype, (name, g.shape, g.dtype, r.shape, r.dtype)
            bad = np.flatnonzero(g.view(np.uint32) != r.view(np.uint32))
            assert bad.size == 0, f"{name}: {bad.size} of {g.size} differ, first {bad[:5]}: " \
                                  f"{g.reshape(-1)[bad[:5]]} vs {r.reshape(-1)[bad[:5]]}"
    return part


CONVS = [  # n, c, h, w, k, r, stride, pad, act, residual
    pytest.param(2, 64, 56, 56, 64, 3, 1, 1, nets.RELU, False, id="r50-3x3-64"),
    pytest.param(2, 64, 28, 28, 256, 1, 1, 0, nets.RELU, True, id="r50-1x1-expand-residual-relu"),
    pytest.param(2, 128, 28, 28, 128, 3, 2, 1, nets.RELU, False, id="r50-3x3-stride2"),
    pytest.param(2, 256, 28, 28, 512, 1, 2, 0, None, False, id="r50-1x1-stride2-downsample"),
    pytest.param(1, 3, 32, 32, 64, 7, 2, 3, nets.RELU, False, id="stem-7x7-c3"),
    pytest.param(1, 512, 7, 7, 512, 3, 1, 1, nets.RELU, True, id="batch1-deep-splitk"),
    pytest.param(3, 5, 9, 7, 6, 3, 1, 1, nets.CLIP6, True, id="odd-channels-clip"),
]


@pytest.mark.parametrize("n,c,h,w,k,r,stride,pad,act,residual", CONVS)
def test_int8_conv_bit_exact(rng, n, c, h, w, k, r, stride, pad, act, residual):
    _check(*nets.conv_net(rng, n, c, h, w, k, r, stride, pad, act, residual))


def test_int8_conv_float_output(rng):
    _check(*nets.conv_net(rng, 2, 20, 6, 6, 10, 3, 1, 1, None, False, s_out=None))


@pytest.mark.parametrize("c,h,k,r,act", [(96, 14, 80, 3, nets.RELU), (64, 20, 256, 1, None)],
                         ids=["3x3-splitk", "1x1-short-k"])
def test_int8_conv_every_tactic(rng, c, h, k, r, act):
    """Every tile (two-stage ones for the short reduction) and split-K variant gives the same integers."""
    net, feeds = nets.conv_net(rng, 2, c, h, h, k, r, 1, r // 2, act, True)
    g = ConvGeometry(2, h, h, c, k, r, r, (1, 1), (r // 2, r // 2))
    tactics = candidate_tactics8(g)
    assert len(tactics) > 10
    assert any(t.splits > 1 for t in tactics) if r == 3 else any(t.tile.stages == 2 for t in tactics)
    for t in tactics:
        _check(net, feeds, {"conv": t.name})


@pytest.mark.parametrize("n,c,h,k,stride,groups,residual", [
    pytest.param(2, 128, 28, 128, 1, 32, False, id="resnext-stage1-4ch-groups"),
    pytest.param(2, 256, 28, 256, 2, 32, False, id="resnext-stage2-8ch-groups-stride2"),
    pytest.param(2, 512, 14, 512, 1, 32, True, id="resnext-stage3-16ch-groups-residual"),
    pytest.param(1, 192, 14, 192, 1, 4, False, id="regnet-48ch-groups"),
    pytest.param(2, 104, 28, 104, 2, 13, True, id="regnety-13-groups-of-8-ragged-merge"),
])
def test_int8_grouped_conv_bit_exact(rng, n, c, h, k, stride, groups, residual):
    """Grouped INT8 convolutions (merged to 16-channel groups where narrower), every candidate tactic."""
    net, feeds = nets.conv_net(rng, n, c, h, h, k, 3, stride, 1, nets.RELU, residual, groups=groups)
    part = _check(net, feeds)
    assert [u for u in part.units if u.lowered], "the grouped layer must run on the GPU"
    _, g = merge_groups8(np.zeros((k, c // groups, 3, 3), np.int8), ConvGeometry(n, h, h, c, k, 3, 3, (stride, stride),
                                                                               (1, 1)), groups)
    for t in candidate_tactics8(g):
        _check(net, feeds, {"conv": t.name})


@pytest.mark.skipif(not wgmma_usable8(), reason="wgmma needs an sm_90 device")
@pytest.mark.parametrize("tile", TILES8_WG, ids=lambda t: f"{t.dims}s{t.stages}")
@pytest.mark.parametrize("splits", [1, 3])
def test_int8_conv_wgmma_tiles(rng, tile, splits):
    """The sm_90a INT8 tiles give the reference's integers (a 5-k-tile reduction with a ragged tail,
    M and K not multiples of the tile, residual and ReLU)."""
    net, feeds = nets.conv_net(rng, 2, 72, 14, 14, 264, 3, 1, 1, nets.RELU, True)
    _check(net, feeds, {"conv": Tactic8(tile, splits).name})


@pytest.mark.parametrize("m,c,k,act,float_out", [(4, 100, 37, nets.RELU, False), (8, 2048, 1000, None, True),
                                                 (1, 64, 10, None, True), (33, 48, 64, nets.CLIP6, False)])
def test_int8_fc_bit_exact(rng, m, c, k, act, float_out):
    _check(*nets.fc_net(rng, m, c, k, act, float_out))


@pytest.mark.parametrize("shape,kind,window,stride,pad", [
    ((2, 64, 16, 16), "max", 3, 2, 1), ((2, 30, 8, 8), "average", 2, 2, 0), ((2, 40, 7, 7), "average", 7, 1, 0),
    ((1, 20, 9, 9), "average", 3, 2, 1), ((2, 17, 6, 6), "max", 2, 2, 0),
    ((2, 96, 56, 56), "average", 56, 1, 0), ((1, 1280, 7, 7), "max", 7, 1, 0)])  # global: global_pool_s8
def test_int8_pooling_bit_exact(rng, shape, kind, window, stride, pad):
    _check(*nets.pool_net(rng, shape, kind, window, stride, pad))


@pytest.mark.parametrize("fc_scale,flat_out", [(1.0, False), (1.0, True), (1.5, False)])
def test_int8_classifier_tail_bit_exact(rng, fc_scale, flat_out):
    """conv -> global pooling -> flatten -> FC: the FC reads the pooled int8 bytes through an alias
    at the same scale (requantized through float at another, dequantized for a float reader)."""
    part = _check(*nets.classifier_net(rng, fc_scale=fc_scale, flat_out=flat_out))
    labels = [op.label for u in part.units if u.lowered for op in u.lowered.ops]
    assert ("quant_flatten" in labels) == (fc_scale != 1.0), labels


@pytest.mark.parametrize("precision", [Precision.FP32, Precision.FP16])
def test_int8_concatenations_bit_exact(rng, precision):
    """DenseNet's growing concatenations of INT8 results, read by INT8 convolutions at their own
    scales: one int8 -> int8 launch each (no dequantize, float copy or quantize)."""
    part = _check(*nets.dense_net(rng, precision))
    labels = [op.label for u in part.units if u.lowered for op in u.lowered.ops]
    assert labels.count("gather8_cat1") == labels.count("gather8_cat2") == 1
    assert not any(lb.startswith("dequant_") or lb in ("cat1", "cat2") for lb in labels), labels


@pytest.mark.parametrize("fp16_concat", [False, True])
def test_int8_shuffle_units_bit_exact(rng, fp16_concat):
    """ShuffleNetV2-style units (split, concatenate, channel shuffle) between INT8 convolutions: each
    INT8 reader's input gathered int8 -> int8 (lowering/int8_gather.py), the reference's bytes."""
    from test_int8_gather_emu_cpu import _built

    part = _check(*_built(rng, fp16_concat))
    labels = [op.label for u in part.units if u.lowered for op in u.lowered.ops]
    assert sum(lb.startswith("gather8_") for lb in labels) == 4, labels


def test_int8_chain_stays_on_device(rng):
    part = _check(*nets.chain_net(rng))
    kinds = [op.kind for u in part.units if u.lowered for op in u.lowered.ops]
    assert kinds.count("conv8") == 3 and kinds.count("pool8") == 1, kinds
    assert sum(1 for op in (o for u in part.units if u.lowered for o in u.lowered.ops)
               if op.label.startswith("quant_")) == 2  # the input, and c3's input at its own scale


def test_digits_int8_on_the_gpu_equals_reference(monkeypatch):
    """The digits CNN (trained, entropy-calibrated) through builder -> plan -> runtime on the GPU
    gives the reference backend's INT8 logits bit for bit, hence the same top-1."""
    pytest.importorskip("sklearn")
    pytest.importorskip("jax")
    from engine import runtime as rt
    from engine.builder import BuilderConfig, build_from_onnx
    from engine.evaluation import digits
    from engine.ir.logger import Logger, Severity
    from engine.quantization import make_calibrator

    quiet = Logger(Severity.ERROR)
    s = digits.load_splits()
    model = digits.to_onnx(digits.train(s))
    b = 64
    calib = [{"image": x} for x in digits.batched(s.x_calib, b)]
    fp32_plan = build_from_onnx(model, BuilderConfig(batch=b), quiet)
    plan = build_from_onnx(model, BuilderConfig(batch=b, int8=True, calibrator=make_calibrator("entropy", calib)),
                           quiet)

    def logits() -> tuple[np.ndarray, object]:
        engine = rt.Runtime(quiet).deserialize(plan)
        ctx = engine.create_execution_context()
        out = np.concatenate([ctx.execute({"image": x})["logits"] for x in digits.batched(s.x_test, b)])
        return out[:len(s.x_test)], engine

    gpu, engine = logits()
    gpu_parts = [c for c in engine.compiled_partitions if c.desc.backend == "gpu"]
    assert gpu_parts, "the plan must run through the GPU backend"
    assert all(p.backend == "gpu" for p in engine.partitions), [p.reason for p in engine.partitions]
    kinds = [c.describe()["kernels"] for c in gpu_parts]
    assert sum(k.get("conv8", 0) for k in kinds) == 3 and sum(k.get("pool8", 0) for k in kinds) == 2, kinds
    with monkeypatch.context() as m:  # conv1, conv2, fc; pool1, pool2 above; the same plan on the reference here
        m.setitem(rt.BACKENDS, "gpu", _NoGpu)
        ref, _ = logits()
    np.testing.assert_array_equal(gpu, ref)
    ctx32 = rt.Runtime(quiet).deserialize(fp32_plan).create_execution_context()
    fp32 = np.concatenate([ctx32.execute({"image": x})["logits"] for x in digits.batched(s.x_test, b)])
    acc32, acc8 = digits.top1(fp32[:len(s.x_test)], s.y_test), digits.top1(gpu, s.y_test)
    assert acc32 > 0.93, f"FP32 top-1 {acc32:.3f}: the model did not train (not an INT8 problem)"
    if acc8 < acc32 - 0.01:
        from engine import plan as plan_format
        from engine.quantization.per_layer import compare_networks, format_rows

        rows = compare_networks(plan_format.deserialize(fp32_plan).network, plan_format.deserialize(plan).network,
                                {"image": digits.batched(s.x_test, b)[0]})
        pytest.fail(f"INT8 top-1 {acc8:.3f} vs FP32 {acc32:.3f}; per-layer SQNR:\n{format_rows(rows)}")
