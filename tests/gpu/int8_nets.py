"""Small INT8 networks with fresh random data and plausible scales (no CUDA needed to build them).

Scales follow the calibration rules (``engine.ir.int8_math``): activations amax / 127 with
amax about 4 standard deviations, so that both the int8 range and its saturation get exercised.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.ir import int8_annotation as annotation
from engine.ir.dtypes import Precision
from engine.ir.int8_math import weight_scales
from engine.ir.layers import (
    ActivationSpec,
    ActivationType,
    ConcatenationParams,
    ConvolutionParams,
    ElementWiseOp,
    ElementWiseParams,
    FullyConnectedParams,
    PoolingParams,
    ShuffleParams,
)
from engine.ir.network import Layer, Network

RELU = ActivationSpec(ActivationType.RELU)
CLIP6 = ActivationSpec(ActivationType.CLIP, 0.0, 6.0)
SILU = ActivationSpec(ActivationType.SILU)
HSWISH = ActivationSpec(ActivationType.HARD_SWISH)


def _s(amax: float) -> float:
    return float(np.float32(amax / 127))


def out_std(s_in: float, s_w: np.ndarray, fan_in: int) -> float:
    """Rough standard deviation of an INT8 layer's float result (for choosing its output scale)."""
    return float(32 * 42 * np.sqrt(fan_in) * s_in * np.mean(s_w))


def add_conv8(net: Network, rng: np.random.Generator, x: str, k: int, r: int, stride: int = 1, pad: int = 0,
              act: ActivationSpec | None = RELU, residual: str | None = None, residual_scale: float | None = None,
              s_in: float | None = None, s_out: float | None | str = "auto", bias: bool = True,
              name: str = "conv") -> tuple[Layer, float | None]:
    """An INT8 convolution on tensor ``x``; returns the layer and its output scale."""
    c = net.tensors[x].shape[1]
    return _add_int8_conv(net, rng, x, k, c, r, stride, pad, 1, 1, act, residual, residual_scale, s_in, s_out,
                          bias, name)


def _add_int8_conv(net: Network, rng: np.random.Generator, x: str, k: int, cg: int, r: int, stride: int, pad: int,
                   dilation: int, groups: int, act: ActivationSpec | None, residual: str | None,
                   residual_scale: float | None, s_in: float | None, s_out: float | None | str, bias: bool,
                   name: str) -> tuple[Layer, float | None]:
    """An INT8 convolution of ``k`` outputs with ``cg`` input channels per group: random weights,
    a bias of the output's spread, scales by the calibration rules; returns the layer and its output scale."""
    wts = rng.normal(size=(k, cg, r, r)).astype(np.float32)
    s_w = weight_scales(wts)
    s_in = _s(4.0) if s_in is None else s_in
    std = out_std(s_in, s_w, cg * r * r)
    weights = {"kernel": wts}
    if bias:
        weights["bias"] = (rng.normal(size=k) * std).astype(np.float32)
    params = ConvolutionParams(num_output_maps=k, kernel=(r, r), stride=(stride, stride), pre_padding=(pad, pad),
                               post_padding=(pad, pad), dilation=(dilation, dilation), groups=groups,
                               activation=act, residual=residual is not None)
    layer = net.add_layer(params, [x] if residual is None else [x, residual], weights, name=name)
    layer.precision = Precision.INT8
    out = _s(4 * std) if s_out == "auto" else s_out
    ins = (s_in,) if residual is None else (s_in, residual_scale if residual_scale is not None else _s(4 * std))
    annotation.write(layer, annotation.Int8Spec(ins, out, s_w))
    return layer, out


def conv_net(rng: np.random.Generator, n: int, c: int, h: int, w: int, k: int, r: int, stride: int = 1,
             pad: int = 0, act: ActivationSpec | None = RELU, residual: bool = False,
             s_out: float | None | str = "auto", groups: int = 1) -> tuple[Network, dict[str, np.ndarray]]:
    """One INT8 convolution (``groups`` > 1: grouped, ResNeXt / RegNet style) and its residual input."""
    net = Network("conv8")
    net.add_input("x", (n, c, h, w))
    feeds = {"x": rng.normal(size=(n, c, h, w)).astype(np.float32)}
    res = None
    if residual:
        p = (h + 2 * pad - r) // stride + 1
        q = (w + 2 * pad - r) // stride + 1
        net.add_input("res", (n, k, p, q))
        res = "res"
    layer, _ = _add_int8_conv(net, rng, "x", k, c // groups, r, stride, pad, 1, groups, act, res, None, None, s_out,
                              True, "conv")
    if residual:
        std = annotation.read(layer).input_scales[1] * 127 / 4
        feeds["res"] = (rng.normal(size=(n, k, p, q)) * std).astype(np.float32)
    net.mark_output(layer.outputs[0])
    return net, feeds


def fc_net(rng: np.random.Generator, m: int, c: int, k: int, act: ActivationSpec | None = RELU,
           float_out: bool = False) -> tuple[Network, dict[str, np.ndarray]]:
    net = Network("fc8")
    net.add_input("x", (m, c))
    wts = rng.normal(size=(k, c)).astype(np.float32)
    s_w = weight_scales(wts)
    s_in = _s(4.0)
    std = out_std(s_in, s_w, c)
    layer = net.add_layer(FullyConnectedParams(num_outputs=k, activation=act),
                          ["x"], {"kernel": wts, "bias": (rng.normal(size=k) * std).astype(np.float32)}, name="fc")
    layer.precision = Precision.INT8
    annotation.write(layer, annotation.Int8Spec((s_in,), None if float_out else _s(4 * std), s_w))
    net.mark_output(layer.outputs[0])
    return net, {"x": rng.normal(size=(m, c)).astype(np.float32)}


def add_pool8(net: Network, x: str, kind: str, window: int, stride: int, pad: int, scale: float,
              name: str = "pool") -> Layer:
    from engine.ir.layers import PoolingType

    params = PoolingParams(PoolingType(kind), window=(window, window), stride=(stride, stride), pre_padding=(pad, pad),
                           post_padding=(pad, pad), count_include_pad=True)
    layer = net.add_layer(params, [x], {}, name=name)
    layer.precision = Precision.INT8
    annotation.write(layer, annotation.Int8Spec((scale,), scale))
    return layer


def pool_net(rng: np.random.Generator, shape: tuple[int, int, int, int], kind: str, window: int, stride: int,
             pad: int) -> tuple[Network, dict[str, np.ndarray]]:
    net = Network("pool8")
    net.add_input("x", shape)
    layer = add_pool8(net, "x", kind, window, stride, pad, _s(4.0))
    net.mark_output(layer.outputs[0])
    return net, {"x": rng.normal(size=shape).astype(np.float32)}


def classifier_net(rng: np.random.Generator, n: int = 3, c: int = 40, h: int = 7, fc_scale: float = 1.0,
                   flat_out: bool = False) -> tuple[Network, dict[str, np.ndarray]]:
    """A CNN's tail: conv -> global average pooling -> flatten to (N, C) -> fully connected (float
    logits), all INT8. The fully connected layer reads the pooled tensor at ``fc_scale`` times the
    pooling's scale (1: the same int8 tensor); ``flat_out`` makes the flattened tensor a network
    output too (read in float)."""
    net = Network("classifier8")
    net.add_input("x", (n, 24, h, h))
    conv, s1 = add_conv8(net, rng, "x", c, 3, 1, 1, name="conv")
    gap = add_pool8(net, conv.outputs[0], "average", h, 1, 0, s1, name="gap")
    flat = net.add_layer(ShuffleParams(reshape=(n, c)), [gap.outputs[0]], {}, name="flatten")
    wts = rng.normal(size=(10, c)).astype(np.float32)
    s_w, s_in = weight_scales(wts), float(np.float32(s1 * fc_scale))
    fc = net.add_layer(FullyConnectedParams(num_outputs=10), [flat.outputs[0]],
                       {"kernel": wts, "bias": (rng.normal(size=10) * out_std(s_in, s_w, c)).astype(np.float32)},
                       name="fc")
    fc.precision = Precision.INT8
    annotation.write(fc, annotation.Int8Spec((s_in,), None, s_w))
    net.mark_output(fc.outputs[0])
    if flat_out:
        net.mark_output(flat.outputs[0])
    return net, {"x": rng.normal(size=(n, 24, h, h)).astype(np.float32)}


def dense_net(rng: np.random.Generator, concat_precision: Precision = Precision.FP32, n: int = 2, h: int = 6
              ) -> tuple[Network, dict[str, np.ndarray]]:
    """DenseNet's growing concatenation in INT8: c0 (24 -> 16) and c1 (16 -> 8) concatenated, c2
    (-> 8) reading that, the concatenation of both (nested) read by c3 (float logits). Channel
    offsets 16 and 24 are not all multiples of 16; every tensor has its own scale and each
    concatenation's reader a finer one than its sources, so each concatenation requantizes and
    saturates."""
    net = Network("dense8")
    net.add_input("x", (n, 24, h, h))
    c0, s0 = add_conv8(net, rng, "x", 16, 3, 1, 1, name="c0")
    c1, s1 = add_conv8(net, rng, c0.outputs[0], 8, 3, 1, 1, s_in=s0, act=None, name="c1")  # negatives too
    cat1 = net.add_layer(ConcatenationParams(axis=1), [c0.outputs[0], c1.outputs[0]], {}, name="cat1")
    s_cat1 = float(np.float32(min(s0, s1) * 0.7))
    c2, s2 = add_conv8(net, rng, cat1.outputs[0], 8, 1, s_in=s_cat1, name="c2")
    cat2 = net.add_layer(ConcatenationParams(axis=1), [cat1.outputs[0], c2.outputs[0]], {}, name="cat2")
    for cat in (cat1, cat2):
        cat.precision = concat_precision
    c3, _ = add_conv8(net, rng, cat2.outputs[0], 10, 1, s_in=float(np.float32(min(s_cat1, s2) * 0.8)), act=None,
                      s_out=None, name="c3")
    net.mark_output(c3.outputs[0])
    return net, {"x": rng.normal(size=(n, 24, h, h)).astype(np.float32)}


def chain_net(rng: np.random.Generator, n: int = 2) -> tuple[Network, dict[str, np.ndarray]]:
    """conv -> conv (+ residual, the int8 tensor reused) -> max pool -> conv at another scale
    (float output): int8 tensors stay on the device, one input is requantized through float."""
    net = Network("chain8")
    net.add_input("x", (n, 24, 12, 12))
    c1, s1 = add_conv8(net, rng, "x", 32, 3, 1, 1, name="c1")
    c2, s2 = add_conv8(net, rng, c1.outputs[0], 32, 3, 1, 1, s_in=s1, residual=c1.outputs[0], residual_scale=s1,
                       name="c2")
    p = add_pool8(net, c2.outputs[0], "max", 3, 2, 1, s2, name="p")
    c3, _ = add_conv8(net, rng, p.outputs[0], 20, 1, s_in=float(np.float32(s2 * 1.5)), act=None, s_out=None,
                      name="c3")
    net.mark_output(c3.outputs[0])
    net.mark_output(c1.outputs[0])
    return net, {"x": rng.normal(size=(n, 24, 12, 12)).astype(np.float32)}


def add_dw8(net: Network, rng: np.random.Generator, x: str, r: int, stride: int = 1, pad: int = 0,
            dilation: int = 1, act: ActivationSpec | None = RELU, residual: str | None = None,
            residual_scale: float | None = None, s_in: float | None = None, s_out: float | None | str = "auto",
            bias: bool = True, name: str = "dw") -> tuple[Layer, float | None]:
    """An INT8 depthwise convolution (groups == C, one output channel per group) on tensor ``x``."""
    c = net.tensors[x].shape[1]
    return _add_int8_conv(net, rng, x, c, 1, r, stride, pad, dilation, c, act, residual, residual_scale, s_in, s_out,
                          bias, name)


def dw_net(rng: np.random.Generator, n: int, c: int, h: int, w: int, r: int, stride: int = 1, pad: int = 0,
           dilation: int = 1, act: ActivationSpec | None = RELU, residual: bool = False,
           s_out: float | None | str = "auto") -> tuple[Network, dict[str, np.ndarray]]:
    """One INT8 depthwise convolution (and its residual input) with random float feeds."""
    net = Network("dw8")
    net.add_input("x", (n, c, h, w))
    feeds = {"x": rng.normal(size=(n, c, h, w)).astype(np.float32)}
    p = (h + 2 * pad - dilation * (r - 1) - 1) // stride + 1
    q = (w + 2 * pad - dilation * (r - 1) - 1) // stride + 1
    if residual:
        net.add_input("res", (n, c, p, q))
    layer, _ = add_dw8(net, rng, "x", r, stride, pad, dilation, act, "res" if residual else None, s_out=s_out)
    if residual:
        std = annotation.read(layer).input_scales[1] * 127 / 4
        feeds["res"] = (rng.normal(size=(n, c, p, q)) * std).astype(np.float32)
    net.mark_output(layer.outputs[0])
    return net, feeds


def mobile_block_net(rng: np.random.Generator, n: int = 2, c: int = 24, h: int = 14, w: int = 14,
                     expand: int = 6) -> tuple[Network, dict[str, np.ndarray]]:
    """A MobileNetV2 inverted residual block in INT8: 1x1 expand (clip 6) -> 3x3 depthwise (clip 6)
    -> 1x1 project + the block's input (int8 tensors passed on between the layers), then a
    stride-2 5x5 depthwise with a float output (the EfficientNet kernel size)."""
    net = Network("mbv2_8")
    net.add_input("x", (n, c, h, w))
    e, se = add_conv8(net, rng, "x", c * expand, 1, act=CLIP6, name="expand")
    d, sd = add_dw8(net, rng, e.outputs[0], 3, 1, 1, act=CLIP6, s_in=se, name="dw")
    s_x = _s(4.0)
    pr, sp = add_conv8(net, rng, d.outputs[0], c, 1, act=None, s_in=sd, residual="x", residual_scale=s_x,
                       name="project")
    d2, _ = add_dw8(net, rng, pr.outputs[0], 5, 2, 2, act=RELU, s_in=sp, s_out=None, name="dw5")
    net.mark_output(d2.outputs[0])
    net.mark_output(pr.outputs[0])
    return net, {"x": rng.normal(size=(n, c, h, w)).astype(np.float32)}


def mobile_block_onnx(rng: np.random.Generator, batch: int = 2, c: int = 24, h: int = 14,
                      expand: int = 6) -> tuple[Any, list[dict[str, np.ndarray]]]:
    """A MobileNetV2 inverted residual block as an ONNX model (Conv 1x1 + Clip, depthwise Conv 3x3
    + Clip, Conv 1x1, Add of the block input) with random weights, and calibration batches."""
    from onnx import TensorProto, helper, numpy_helper

    ce = c * expand

    def init(name: str, a: np.ndarray) -> Any:
        return numpy_helper.from_array(np.asarray(a, np.float32), name)

    inits = [init("w1", rng.normal(size=(ce, c, 1, 1)) * 0.3), init("b1", rng.normal(size=ce) * 0.1),
             init("w2", rng.normal(size=(ce, 1, 3, 3)) * 0.4), init("b2", rng.normal(size=ce) * 0.1),
             init("w3", rng.normal(size=(c, ce, 1, 1)) * 0.1), init("b3", rng.normal(size=c) * 0.1),
             init("lo", np.array(0.0)), init("hi", np.array(6.0))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["e"], kernel_shape=[1, 1]),
             helper.make_node("Clip", ["e", "lo", "hi"], ["e6"]),
             helper.make_node("Conv", ["e6", "w2", "b2"], ["d"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=ce),
             helper.make_node("Clip", ["d", "lo", "hi"], ["d6"]),
             helper.make_node("Conv", ["d6", "w3", "b3"], ["p"], kernel_shape=[1, 1]),
             helper.make_node("Add", ["p", "x"], ["y"])]
    shape = [batch, c, h, h]
    graph = helper.make_graph(nodes, "mobile_block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    calib = [{"x": rng.normal(size=shape).astype(np.float32)} for _ in range(4)]
    return model, calib


def se_net(rng: np.random.Generator, op: ElementWiseOp, gate_first: bool, c: int = 40) -> Network:
    """conv8 (SiLU, int8 out) -> FP16 ``op`` with a (N, C, 1, 1) float input -> conv8 (the consumer)."""
    net = Network("se8")
    net.add_input("x", (2, 24, 9, 9))
    net.add_input("gate", (2, c, 1, 1))
    a, sa = add_conv8(net, rng, "x", c, 1, act=SILU, name="expand")
    ins = ["gate", a.outputs[0]] if gate_first else [a.outputs[0], "gate"]
    mul = net.add_layer(ElementWiseParams(op), ins, name="se_mul")
    mul.precision = Precision.FP16
    b, _ = add_conv8(net, rng, mul.outputs[0], 16, 3, 1, 1, act=None, s_in=float(np.float32(sa * 0.7)),
                     name="project")
    net.mark_output(b.outputs[0])
    return net


def nhwc16(q: np.ndarray) -> np.ndarray:
    """int8 NCHW -> NHWC with channels padded to 16 (zeros): the INT8 kernels' input layout."""
    n, c, h, w = q.shape
    out = np.zeros((n, h, w, -(-c // 16) * 16), np.int8)
    out[..., :c] = q.transpose(0, 2, 3, 1)
    return out
