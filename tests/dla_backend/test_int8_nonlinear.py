"""INT8 convolutions with SiLU / hard-swish epilogues on the DLA: the exported form (Sigmoid + Mul,
fused by the optimizer) and the fused form, against the reference backend's INT8 definition (the
exact function, correctly rounded: ``engine.ir.int8_rules``). The DLA's LUT / clipped-ramp and
multiply passes round three times, so the stated bound is one int8 step per element (proved per
layer by ``nonlinear_error_bound``), with SQNR above 40 dB per layer."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from backends.dla import DlaBackend, supports
from backends.dla import int8 as dla_int8
from backends.reference.ops.conv import conv_nd
from dla_sim.config import ORIN, XAVIER
from dla_sim.loadable import Loadable
from dla_sim.ops import Precision as HwPrecision
from dla_sim.ops import SdpOp
from engine.ir import int8_annotation as annotation
from engine.ir.int8_math import quantize, sqnr_db
from engine.ir.layers import ActivationSpec, ActivationType, ConvolutionParams
from engine.ir.network import Network

from .int8_nets import INT8, calibrated, dla_vs_reference, net_conv_silu

CASES = [("silu", True, False), ("silu", False, False), ("silu", False, True), ("hard_swish", False, False),
         ("hard_swish", False, True)]
IDS = ["silu-exported", "silu-fused", "silu-residual", "hswish", "hswish-residual"]


def _nonlinear_layers(net: Network) -> list:
    return [la for la in net.layers if la.precision is INT8
            and getattr(la.params, "activation", None) is not None
            and la.params.activation.type in (ActivationType.SILU, ActivationType.HARD_SWISH)]


@pytest.mark.parametrize("cfg", [ORIN, XAVIER], ids=["orin", "xavier"])
@pytest.mark.parametrize("act,exported,residual", CASES, ids=IDS)
@pytest.mark.parametrize("seed", [21, 22])
def test_each_layer_within_one_int8_step_of_the_reference(act, exported, residual, seed, cfg):
    net = calibrated(net_conv_silu(np.random.default_rng(seed), exported, act, residual), seed + 1, dla=True)
    layers = _nonlinear_layers(net)
    assert len(layers) == 2 and all(la.params.activation.type.value == act for la in layers)
    for la in layers:
        assert supports(la, net, INT8, cfg).ok, supports(la, net, INT8, cfg).reason
        part, out, ref = dla_vs_reference(net, cfg, seed + 2, layers=[la.name])  # inputs from the reference
        t = la.outputs[0]
        s_out = annotation.read(la).output_scale
        steps = np.rint((out[t].astype(np.float64) - ref[t]) / s_out)
        assert len(np.unique(ref[t])) > 30, la.name
        assert np.abs(steps).max() <= 1, la.name
        assert np.mean(steps != 0) < 0.02, la.name
        assert sqnr_db(ref[t], out[t]) > 40, la.name


@pytest.mark.parametrize("act,exported,residual", CASES[:2] + CASES[3:4], ids=IDS[:2] + IDS[3:4])
def test_whole_partition_on_the_dla(act, exported, residual):
    net = calibrated(net_conv_silu(np.random.default_rng(31), exported, act, residual), 32, dla=True)
    part, out, ref = dla_vs_reference(net, ORIN, 33)
    assert len(part.layers) == len(net.layers)
    assert sqnr_db(ref["pool"], out["pool"]) > 35


@pytest.mark.parametrize("act", ["silu", "hard_swish"])
def test_lowered_as_conv_gate_and_multiply_sdp_passes(act):
    """Conv pass writes int16, the gate pass is the Y LUT (SiLU) or X1 add + clipped ReLU
    (hard-swish) in the INT pipeline, the multiply reads both cubes and writes int8."""
    net = calibrated(net_conv_silu(np.random.default_rng(41), False, act), 42, dla=True)
    la = _nonlinear_layers(net)[0]
    part = DlaBackend(ORIN).compile(net, [la.name], INT8)
    sdps = [op for op in Loadable.from_bytes(part.loadable).ops if isinstance(op, SdpOp)]
    conv_pass, gate, mul = sdps
    assert conv_pass.source == "flying" and conv_pass.output.precision is HwPrecision.INT16
    assert gate.source == "memory" and gate.input.precision is HwPrecision.INT16
    if act == "silu":
        assert gate.activation == "sigmoid" and gate.lut_in_scale > 0
    else:
        assert gate.activation == "clip" and gate.bias == "per_layer"
    assert mul.eltwise == "mul" and mul.output.precision is HwPrecision.INT8
    assert mul.eltwise_input.precision is HwPrecision.INT16
    # timed as every SDP pass: elements / the slowest sub-unit in use, against the bytes moved
    from dla_sim import sdp as dla_sdp

    elems = gate.output.n * gate.output.c_padded * gate.output.h * gate.output.w
    rate = ORIN.post.sdp_ew if act == "silu" else min(ORIN.post.sdp_bs, ORIN.post.sdp_bn)  # Y (LUT) or X1+X2
    tg, tm = dla_sdp.timing(gate, ORIN), dla_sdp.timing(mul, ORIN)
    assert tg.compute_cycles == pytest.approx(elems / rate)
    assert tg.dram_read_bytes >= gate.input.payload_bytes and tg.dram_write_bytes == gate.output.payload_bytes
    assert tm.dram_read_bytes >= 2 * gate.output.payload_bytes and tm.dram_write_bytes == mul.output.payload_bytes
    assert gate.output.payload_bytes == 2 * mul.output.payload_bytes  # int16 intermediates


def _one_layer(kind: str, s_out: float) -> tuple:
    net = Network("bound")
    x = net.add_input("x", (1, 8, 4, 4))
    p = ConvolutionParams(num_output_maps=8, kernel=(1, 1), stride=(1, 1), pre_padding=(0, 0),
                          post_padding=(0, 0), dilation=(1, 1), activation=ActivationSpec(ActivationType(kind)))
    w = np.random.default_rng(5).standard_normal((8, 8, 1, 1)).astype(np.float32)
    la = net.add_layer(p, [x], {"kernel": w}, name="c")
    annotation.write(la, annotation.Int8Spec((0.05,), s_out, np.full(8, 0.02, np.float32)))
    return la, p.activation


@pytest.mark.parametrize("kind", ["silu", "hard_swish"])
@pytest.mark.parametrize("amax", [0.3, 1.0, 6.0, 40.0, 1000.0])
def test_error_bound_proves_one_step(kind, amax):
    """Every int16 pre-activation through the gate and multiply passes, plus the int16 rounding of
    the accumulator: under 1.5 steps before rounding, so the int8 results differ by at most one."""
    s_out = amax / 127
    la, act = _one_layer(kind, s_out)
    ne = dla_int8.nonlinear_params(la, la.weights["kernel"], None, act, False, True)
    assert 0 < dla_int8.nonlinear_error_bound(ne, s_out) < 1.5


@pytest.mark.parametrize("kind", ["silu", "hard_swish"])
def test_reference_int8_epilogue_is_the_rounded_exact_function(kind):
    """The reference backend's INT8 SiLU / hard-swish against an independent float64 computation."""
    from backends.reference.int8 import convolution

    rng = np.random.default_rng(51)
    la, _ = _one_layer(kind, 4.0 / 127)
    la.weights["bias"] = rng.standard_normal(8).astype(np.float32)
    x = (rng.standard_normal((1, 8, 4, 4)) * 2).astype(np.float32)
    (y,) = convolution(la, [x])
    xq = quantize(x, np.float32(0.05)).astype(np.float64)
    wq = quantize(la.weights["kernel"], np.full(8, 0.02, np.float32), axis=0).astype(np.float64)
    s_acc = 0.05 * np.float64(np.float32(0.02))
    v = conv_nd(xq, wq, (1, 1), (0, 0), (0, 0), (1, 1), 1) + np.rint(la.weights["bias"] / s_acc)[None, :, None, None]
    real = v * s_acc
    f = real / (1 + np.exp(-real)) if kind == "silu" else real * np.clip(real + 3, 0, 6) / 6
    want = np.clip(np.rint(f / np.float64(np.float32(4.0 / 127))), -128, 127)
    np.testing.assert_array_equal(np.rint(y / np.float32(4.0 / 127)), want)
    assert len(np.unique(want)) > 10


def test_gpu_build_runs_silu_convolutions_in_int8_on_the_gpu():
    """A GPU build takes the SiLU epilogue in INT8 too: the GPU's INT8 convolution kernels have it."""
    from backends.gpu.lower_int8 import supports_int8

    net = calibrated(net_conv_silu(np.random.default_rng(61), True), 62)
    silu = [la for la in net.layers if getattr(la.params, "activation", None) is not None
            and la.params.activation.type is ActivationType.SILU]
    assert len(silu) == 2 and all(la.precision is INT8 for la in silu)
    assert all(supports_int8(la, net) == (True, "") for la in silu)


def test_silu_network_output_stays_in_float():
    """A calibrated build's network output leaves in float; the DLA's multiply pass writes int8 only."""
    from .nets import conv

    rng = np.random.default_rng(71)
    net = Network("silu_out")
    x = net.add_input("x", (1, 16, 8, 8))
    y = conv(net, x, 32, 3, rng, pad=1, act="silu", name="c1")
    net.mark_output(conv(net, y, 32, 3, rng, pad=1, act="silu", name="c2"))
    opt = calibrated(net, 72, dla=True)
    assert opt.layer("c1").precision is INT8 and opt.layer("c2").precision is not INT8
    assert supports(opt.layer("c2"), opt, INT8, ORIN).ok  # in FP16, decomposed on the SDP


def _mbconv_model(path) -> None:
    """An EfficientNet-style block as PyTorch exports it: stem, expand 1x1, depthwise 3x3 (SiLU as
    Sigmoid * x), squeeze-excitation, project 1x1, and a head conv with SiLU."""
    import sys
    from pathlib import Path

    import onnx

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from cnn_archs import _G

    g = _G(np.random.default_rng(0))
    y = g.cba("input", 3, 32, 3, 2, act="silu")
    z = g.cba(y, 32, 96, 1, act="silu")
    z = g.cba(z, 96, 96, 3, 1, groups=96, act="silu")
    z = g.se(z, 96, 8, "silu", "sigmoid")
    z = g.cba(z, 96, 32, 1, act=None)
    (z,) = g.node("Add", [z, y], "add")
    y = g.cba(z, 32, 64, 1, act="silu")
    onnx.save(g.finish("mbconv", y, 64, 16, classes=10), path)


def test_hetrt_place_int8_keeps_silu_convolutions_on_the_dla_in_int8(tmp_path):
    import json

    from engine.cli import main

    model = tmp_path / "mbconv.onnx"
    _mbconv_model(model)
    out, rows_csv = tmp_path / "p.json", tmp_path / "layers.csv"
    assert main(["place", str(model), "--int8", "--json", str(out), "--dla-layers", str(rows_csv)]) == 0
    d = json.loads(out.read_text())
    silu = [x for x in d["layers"] if "sigmoid" in x["name"] and "conv" in x["name"]]
    assert len(silu) >= 4
    assert d["devices"]["dla0"]["refused_layers"] == 0  # every layer can run on the DLA
    assert d["totals"]["dla-first"]["dla_layers"] == len(d["layers"])
    rows = list(csv.DictReader(rows_csv.read_text().splitlines()))
    silu_rows = [r for r in rows if "sigmoid" in r["layers"] and float(r["conv_busy_us"]) > 0]
    assert silu_rows and all(r["int8_conv"] == "1" for r in silu_rows)


@pytest.mark.parametrize("policy,pins", [("dla-first", {}), ("dla-first", {"conv_11": "gpu"}), ("optimal", {})],
                         ids=["dla-first", "pinned-to-gpu", "optimal"])
def test_builder_gives_int8_silu_epilogues_under_every_policy(tmp_path, policy, pins):
    """Every device that may run such a layer has the INT8 epilogue (the GPU's INT8 kernels compute it
    in float64), so no policy and no pin keeps a SiLU convolution in FP16; a layer pinned to the GPU
    lands there in INT8."""
    import onnx

    from engine.builder import Builder, BuilderConfig
    from engine.ir.logger import Logger, Severity
    from engine.onnx_parser import parse
    from engine.quantization import make_calibrator

    path = tmp_path / "mbconv.onnx"
    _mbconv_model(path)
    model = onnx.load(path)
    rng = np.random.default_rng(0)
    shape = parse(model).tensors["input"].shape
    data = [{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(2)]
    cfg = BuilderConfig(fp16=True, int8=True, calibrator=make_calibrator("minmax", data), platform="orin-agx-64gb",
                        placement_policy=policy, layer_devices=pins)
    built = Builder(Logger(Severity.ERROR)).build(parse(model), cfg).network
    silu = [la for la in built.layers if getattr(la.params, "activation", None) is not None
            and la.params.activation.type is ActivationType.SILU]
    assert len(silu) == 5 and [la.precision.value for la in silu] == ["int8"] * 5
    conv11 = [la for la in silu if "conv_11" in (la.name, *la.origin)]
    assert len(conv11) == 1
    if policy == "dla-first":
        assert conv11[0].device == ("gpu" if pins else "dla")


def test_silu_convolution_the_dla_refuses_runs_int8_on_the_gpu_in_a_dla_build():
    """Stride 9 exceeds the DLA's 1-8: dla-first hands that layer to the GPU, whose INT8 kernels
    take the SiLU epilogue, so it is INT8 too."""
    from backends.gpu.lower_int8 import supports_int8

    from .nets import conv

    rng = np.random.default_rng(81)
    net = Network("stride9")
    x = net.add_input("x", (1, 16, 18, 18))
    y = conv(net, x, 32, 3, rng, pad=1, act="silu", name="ok")
    y = conv(net, y, 32, 9, rng, stride=9, act="silu", name="wide")
    net.mark_output(net.add_pooling(y, "max", (2, 2), name="pool"))
    opt = calibrated(net, 82, dla=True)
    assert opt.layer("ok").precision is INT8
    assert opt.layer("wide").precision is INT8
    assert not supports(opt.layer("wide"), opt, INT8, ORIN).ok
    assert supports_int8(opt.layer("wide"), opt) == (True, "")
