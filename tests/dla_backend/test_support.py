"""Support rules: each TensorRT DLA rule and hardware limit fires with its reason; supported layers pass."""

from __future__ import annotations

import numpy as np
import pytest

from backends.dla import supports
from dla_sim.config import NV_SMALL, ORIN, XAVIER
from engine.ir.dtypes import Precision
from engine.ir.layers import (
    ActivationSpec,
    ActivationType,
    ConcatenationParams,
    ConvolutionParams,
    DeconvolutionParams,
    ElementWiseOp,
    ElementWiseParams,
    GatherParams,
    LRNParams,
    NormalizationParams,
    PoolingParams,
    PoolingType,
    ShuffleParams,
    SliceParams,
    SoftMaxParams,
)
from engine.ir.network import Network

FP16, FP32, INT8 = Precision.FP16, Precision.FP32, Precision.INT8


def one_layer(params, in_shape=(1, 16, 16, 16), weights=None, n_inputs=1):
    net = Network("one")
    ins = [net.add_input(f"x{i}", in_shape) for i in range(n_inputs)]
    layer = net.add_layer(params, ins, weights or {}, name="L")
    net.mark_output(layer.outputs[0])
    return net, layer


def conv_layer(k=3, stride=1, pad=0, dilation=1, c=16, maps=16, size=16, act=None, groups=1):
    p = ConvolutionParams(num_output_maps=maps, kernel=(k, k), stride=(stride, stride), pre_padding=(pad, pad),
                          post_padding=(pad, pad), dilation=(dilation, dilation), groups=groups, activation=act)
    return one_layer(p, (1, c, size, size), {"kernel": np.ones((maps, c // groups, k, k), np.float32)})


def marked_int8(net_layer):
    """The layer pinned to INT8 (as ``layer_precisions`` does), without calibrated scales."""
    net, layer = net_layer
    layer.precision = INT8
    return net, layer


def concat_layer(axis, c=(16, 16)):
    net = Network("cat")
    a = net.add_input("a", (1, c[0], 4, 4))
    b = net.add_input("b", (1, c[1], 4, 4))
    layer = net.add_layer(ConcatenationParams(axis=axis), [a, b], name="L")
    net.mark_output(layer.outputs[0])
    return net, layer


def pool_layer(window, stride=None, pad=0):
    p = PoolingParams(PoolingType.MAX, window=(window, window), stride=(stride or window,) * 2,
                      pre_padding=(pad, pad), post_padding=(pad, pad))
    return one_layer(p, (1, 16, 20, 20))


CASES = [
    # (id, builder, precision, cfg, expected fragments of the reason)
    ("kernel33", lambda: conv_layer(k=33, size=40), FP16, XAVIER,
     ["kernel 33×33 exceeds the DLA maximum 32", "conv kernel 33×33 exceeds 32"]),
    ("pad_ge_kernel", lambda: conv_layer(k=3, pad=3), FP16, XAVIER,
     ["must be smaller than the kernel", "must be < kernel height 3"]),
    ("stride9", lambda: conv_layer(k=3, stride=9, size=20), FP16, XAVIER,
     ["stride 9×9 exceeds the DLA maximum 8", "conv stride 9×9 exceeds 8"]),
    ("dilation33", lambda: conv_layer(k=2, dilation=33, size=40), FP16, XAVIER,
     ["dilation 33×33 exceeds the DLA maximum 32", "conv dilation 33×33 exceeds 32"]),
    ("pad32", lambda: conv_layer(k=33, pad=32, size=8), FP16, XAVIER, ["padding 32×32 exceeds the DLA maximum 31"]),
    ("concat_axis2", lambda: concat_layer(2), FP16, XAVIER,
     ["concatenation on axis 2: the DLA concatenates channels only"]),
    ("fp32", lambda: conv_layer(), FP32, XAVIER, ["FP32 requested: the DLA runs FP16 and INT8 only"]),
    ("gather", lambda: one_layer(GatherParams(axis=1), weights={"indices": np.array([0, 2])}), FP16, XAVIER,
     ["Gather: no DLA support"]),
    ("layernorm", lambda: one_layer(NormalizationParams(axes=(-1,))), FP16, XAVIER,
     ["LayerNormalization: no DLA support (decompose it or run it on the GPU)"]),
    ("instancenorm", lambda: one_layer(NormalizationParams(axes=(2, 3))), FP16, XAVIER,
     ["InstanceNormalization: no DLA support"]),
    ("softmax_xavier", lambda: one_layer(SoftMaxParams(axis=1)), FP16, XAVIER, ["Softmax: DLA support on Orin only"]),
    ("softmax_orin", lambda: one_layer(SoftMaxParams(axis=1)), FP16, ORIN, ["dla_sim models no softmax unit"]),
    ("pool_window9", lambda: pool_layer(9), FP16, XAVIER,
     ["pooling window 9×9 exceeds the DLA maximum 8", "pooling window 9×9 exceeds 8"]),
    ("pool_stride17", lambda: pool_layer(2, 17), FP16, XAVIER, ["pooling stride 17×17 exceeds the DLA maximum 16"]),
    ("lrn_window4", lambda: one_layer(LRNParams(size=4, alpha=1e-4, beta=0.75)), FP16, XAVIER,
     ["LRN window 4: the DLA supports windows 3, 5, 7, 9", "LRN window 4 not in {3, 5, 7, 9}"]),
    ("lrn_int8", lambda: marked_int8(one_layer(LRNParams(size=5, alpha=1e-4, beta=0.75))), INT8, XAVIER,
     ["INT8 requested: LRN runs in FP16 on the DLA"]),
    ("deconv_square24", lambda: one_layer(
        DeconvolutionParams(num_output_maps=16, kernel=(24, 24), stride=(2, 2), pre_padding=(0, 0),
                            post_padding=(0, 0), dilation=(1, 1)), (1, 16, 4, 4),
        {"kernel": np.ones((16, 16, 24, 24), np.float32)}), FP16, XAVIER, ["square kernels 23–32 are disabled"]),
    ("gelu", lambda: conv_layer(act=ActivationSpec(ActivationType.GELU_ERF)), FP16, XAVIER,
     ["activation gelu_erf: no DLA support"]),
    ("clip200", lambda: conv_layer(act=ActivationSpec(ActivationType.CLIP, 0.0, 200.0)), FP16, XAVIER,
     ["max in [1, 127]"]),
    ("div", lambda: one_layer(ElementWiseParams(ElementWiseOp.DIV), n_inputs=2), FP16, XAVIER,
     ["ElementWise div by a tensor: the DLA divides only by a constant"]),
    ("slice_step2", lambda: one_layer(SliceParams((0, 0, 0, 0), (1, 16, 8, 8), (1, 1, 2, 2))), FP16, XAVIER,
     ["the DLA slices with stride 1 only"]),
    ("flatten", lambda: one_layer(ShuffleParams(reshape=(1, 16 * 16 * 16))), FP16, XAVIER,
     ["changes the element order"]),
    ("dim8200", lambda: conv_layer(k=1, size=1, c=8200), FP16, XAVIER,
     ["dimension 8200 exceeds the DLA maximum 8192", "input C=8200 exceeds 8192"]),
    ("sigmoid_no_lut", lambda: one_layer(__import__("engine.ir.layers", fromlist=["x"]).ActivationParams(
        ActivationSpec(ActivationType.SIGMOID))), FP16, NV_SMALL, ["SDP LUT (sigmoid) not available on nv_small"]),
    ("int8_without_scales", lambda: marked_int8(conv_layer()), INT8, XAVIER, ["per-tensor scales"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_rule_fires_with_reason(case):
    _, build, prec, cfg, fragments = case
    net, layer = build()
    s = supports(layer, net, prec, cfg)
    assert not s.ok
    for f in fragments:
        assert f in s.reason, (f, s.reason)


def test_gpu_pin_is_a_reason():
    net, layer = conv_layer()
    layer.device = "gpu"
    assert "pinned to the GPU" in supports(layer, net, FP16, XAVIER).reason


SUPPORTED = [
    ("conv3x3", lambda: conv_layer(k=3, pad=1)),
    ("conv_k32_pad31", lambda: conv_layer(k=32, pad=31, size=4, c=4, maps=4)),
    ("stride8_dil32", lambda: conv_layer(k=2, stride=8, dilation=32, size=40)),
    ("depthwise", lambda: conv_layer(k=3, pad=1, groups=16)),
    ("relu6", lambda: conv_layer(act=ActivationSpec(ActivationType.CLIP, 0.0, 6.0))),
    ("concat_c", lambda: concat_layer(1, (16, 32))),
    ("pool8", lambda: pool_layer(8)),
    ("lrn9", lambda: one_layer(LRNParams(size=9, alpha=1e-4, beta=0.75))),
    ("flatten_1x1", lambda: one_layer(ShuffleParams(reshape=(1, 16)), (1, 16, 1, 1))),
]


@pytest.mark.parametrize("cfg", [XAVIER, ORIN], ids=["xavier", "orin"])
@pytest.mark.parametrize("case", SUPPORTED, ids=[c[0] for c in SUPPORTED])
def test_supported_layers(case, cfg):
    net, layer = case[1]()
    s = supports(layer, net, FP16, cfg)
    assert s.ok and s.reason == "", s.reason
