"""INT8 depthwise lowering without CUDA: depthwise layers get the ``dwconv8`` op (no more host
fallback), int8 tensors flow between it and the neighbouring INT8 convolutions; other grouped INT8
convolutions run merged to 16-channel groups, or fall back with their reason where they cannot merge."""

from __future__ import annotations

import int8_nets as nets
import numpy as np

from backends.gpu.kernels.int8 import quantized_kernel
from backends.gpu.kernels.int8_dw import pack_dw_weights8
from backends.gpu.layout import round_up
from backends.gpu.lower import lower, supports
from engine.ir import int8_annotation as annotation
from engine.ir.int8_math import round_half_away, weight_scales
from engine.ir.layers import ActivationSpec, ActivationType, ConvolutionParams


def test_depthwise_lowers_to_the_int8_kernel():
    net, _ = nets.dw_net(np.random.default_rng(0), 2, 40, 9, 9, 5, 2, 2, 1, nets.CLIP6, True)
    layer = net.layers[0]
    assert supports(layer, net) == (True, "")
    low = lower(net, net.layers, list(net.outputs))
    op = next(op for op in low.ops if op.label == layer.name)
    assert op.kind == "dwconv8" and not any(o.kind == "conv8" for o in low.ops)
    g = op.info["geom"]
    assert (g.c, g.k, g.r, g.s, g.stride, g.pad, g.p, g.q) == (40, 40, 5, 5, (2, 2), (2, 2), 5, 5)
    assert op.reads == [op.info["x"], op.info["w"], op.info["res"]] and op.info["ldy"] == 48
    assert low.slots[op.info["x"]].layout == "nhwc16" and low.slots[op.info["y"]].phys_shape == (2, 5, 5, 48)
    w = low.slots[op.info["w"]].const
    np.testing.assert_array_equal(w, pack_dw_weights8(quantized_kernel(layer)))
    # 25 taps in 7 quads, each channel's quad one word; padded channels and the 3 taps past 25 zero
    assert w.shape == (7, 48, 4) and not w[:, 40:].any()
    taps = w.transpose(0, 2, 1).reshape(28, 48)
    assert not taps[25:].any()
    np.testing.assert_array_equal(taps[:25, :40].T.reshape(40, 1, 5, 5), quantized_kernel(layer))
    e = op.info["epi"]
    assert e.osc is not None and e.rsc is not None and e.relu
    assert e.clipq == int(np.clip(round_half_away(6.0 / annotation.read(layer).output_scale), -128, 127))


def test_depthwise_float_output_stride():
    net, _ = nets.dw_net(np.random.default_rng(1), 1, 20, 6, 6, 3, 1, 1, 1, None, False, None)
    op = next(op for op in lower(net, net.layers, list(net.outputs)).ops if op.kind == "dwconv8")
    assert op.info["ldy"] == round_up(20, 8) and op.info["epi"].osc is None


def test_mobile_block_keeps_int8_between_layers():
    net, _ = nets.mobile_block_net(np.random.default_rng(2))
    assert all(supports(la, net)[0] for la in net.layers)
    low = lower(net, net.layers, list(net.outputs))
    kinds = {op.label: op.kind for op in low.ops}
    assert kinds["expand"] == "conv8" and kinds["dw"] == "dwconv8" and kinds["dw5"] == "dwconv8"
    assert kinds["project"] == "conv8"
    by = {op.label: op for op in low.ops}
    expand_out, dw_out = net.layers[0].outputs[0], net.layers[1].outputs[0]
    assert by["dw"].reads[0] == f"{expand_out}@q8"  # the expand's int8 tensor, no float round trip
    assert by["project"].reads[0] == f"{dw_out}@q8"
    assert by["dw5"].reads[0] == f"{net.layers[2].outputs[0]}@q8"
    assert not any(op.label.startswith("dequant_" + expand_out) for op in low.ops)


def _regroup(net, layer, groups: int, k: int, rng) -> None:
    c = net.tensors[layer.inputs[0]].shape[1]
    layer.params = ConvolutionParams(**{**layer.params.__dict__, "groups": groups, "num_output_maps": k})
    layer.weights["kernel"] = rng.normal(size=(k, c // groups, *layer.params.kernel)).astype(np.float32)
    layer.weights["bias"] = rng.normal(size=k).astype(np.float32)
    spec = annotation.read(layer)
    annotation.write(layer, annotation.Int8Spec(spec.input_scales, spec.output_scale,
                                                weight_scales(layer.weights["kernel"])))


def test_grouped_int8_convolutions_merge_or_fall_back():
    rng = np.random.default_rng(3)
    net, _ = nets.dw_net(rng, 1, 16, 6, 6, 3, 1, 1)
    layer = net.layers[0]
    _regroup(net, layer, 16, 32, rng)  # channel multiplier 2: 16 groups would have to merge
    ok, why = supports(layer, net)
    assert not ok and "depthwise" in why and "1 input and 2 output channels per group" in why
    _regroup(net, layer, 4, 16, rng)  # 4 groups of 4 channels: merged into one group of 16
    ok, why = supports(layer, net)
    assert ok, why
    op = next(op for op in lower(net, net.layers, list(net.outputs)).ops if op.kind == "conv8")
    assert op.info["geom"].groups == 1 and op.info["geom"].ktot == 9 * 16


def test_depthwise_with_an_unsupported_activation_falls_back():
    net, _ = nets.dw_net(np.random.default_rng(4), 1, 16, 6, 6, 3, 1, 1)
    layer = net.layers[0]
    layer.params = ConvolutionParams(**{**layer.params.__dict__,
                                        "activation": ActivationSpec(ActivationType.SIGMOID)})
    ok, why = supports(layer, net)
    assert not ok and "sigmoid" in why


def test_calibrated_onnx_block_lowers_without_fallback():
    """The ONNX MobileNetV2 block built in INT8 (min-max calibration): every layer INT8, none
    falling back, the depthwise one on dwconv8 (the GPU test runs this plan on the device)."""
    from engine import plan as plan_format
    from engine.builder import BuilderConfig, build_from_onnx
    from engine.ir.dtypes import Precision
    from engine.ir.logger import Logger, Severity
    from engine.quantization import make_calibrator

    model, calib = nets.mobile_block_onnx(np.random.default_rng(5))
    plan = build_from_onnx(model, BuilderConfig(batch=2, int8=True, calibrator=make_calibrator("minmax", calib)),
                           Logger(Severity.ERROR))
    net = plan_format.deserialize(plan).network
    assert [la.precision for la in net.layers] == [Precision.INT8] * 3
    assert [supports(la, net) for la in net.layers] == [(True, "")] * 3
    low = lower(net, net.layers, list(net.outputs))
    assert [op.kind for op in low.ops if op.kind.endswith("conv8")] == ["conv8", "dwconv8", "conv8"]
