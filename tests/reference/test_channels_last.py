"""The channels-last convolution paths, fast epilogues and global pooling against float64 oracles.

The oracle is a direct tap-by-tap convolution in float64 on the (N, C, H, W) layout, written
independently of the kernels under test; data are fresh seeded random arrays with odd shapes.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from refhelp import rng, seed_of

from backends.reference import execute, run_layer
from backends.reference.ops import channels_last
from backends.reference.ops.activation import apply_activation, apply_activation_inplace
from backends.reference.ops.conv import conv_nd
from engine.ir.dtypes import DataType
from engine.ir.layers import (
    ActivationSpec,
    ActivationType,
    ConvolutionParams,
    ElementWiseOp,
    ElementWiseParams,
    PoolingParams,
    PoolingType,
)
from engine.ir.network import Network
from engine.models.zoo import efficientnet_b0
from engine.onnx_parser import parse
from engine.optimizer import optimize


def conv64(x, w, stride, pre, post, dilation, groups):
    """y[n, k, o] = sum_{c, t} x_pad[n, g*Cg + c, o*s + t*d] * w[k, c, t], in float64."""
    x = np.pad(x.astype(np.float64), [(0, 0), (0, 0), (pre[0], post[0]), (pre[1], post[1])])
    w = w.astype(np.float64)
    n, c, hp, wp = x.shape
    k, cg, kh, kw = w.shape
    ho = (hp - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wp - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    kg = k // groups
    y = np.zeros((n, k, ho, wo))
    for g in range(groups):
        xs = x[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                r0, c0 = i * dilation[0], j * dilation[1]
                tap = xs[:, :, r0:r0 + (ho - 1) * stride[0] + 1:stride[0], c0:c0 + (wo - 1) * stride[1] + 1:stride[1]]
                y[:, g * kg:(g + 1) * kg] += np.einsum("nchw,kc->nkhw", tap, w[g * kg:(g + 1) * kg, :, i, j])
    return y


def _close(got, want, rtol=1e-5):
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=rtol * scale)


# (N, C, H, W, kernel, stride, pre, post, dilation)
DEPTHWISE = [
    (1, 7, 11, 9, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)),
    (2, 5, 13, 12, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1)),
    (1, 9, 15, 17, (5, 5), (2, 2), (2, 2), (2, 2), (1, 1)),
    (1, 6, 10, 13, (3, 5), (2, 3), (0, 2), (1, 1), (1, 1)),
    (2, 3, 14, 11, (3, 3), (1, 2), (2, 1), (0, 3), (2, 2)),
    (1, 4, 12, 16, (3, 3), (3, 2), (1, 0), (2, 2), (1, 3)),
    (1, 8, 7, 7, (5, 5), (1, 1), (2, 2), (2, 2), (1, 1)),
    (1, 3, 9, 8, (1, 3), (1, 1), (0, 0), (0, 0), (1, 1)),
    # inputs over 256 KiB: padding and phases cleared border by border rather than whole
    (1, 32, 47, 45, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1)),
    (1, 40, 46, 44, (5, 5), (1, 1), (2, 2), (2, 2), (1, 1)),
    (2, 24, 41, 43, (5, 5), (2, 2), (2, 1), (1, 2), (1, 1)),
]


@pytest.mark.parametrize("case", DEPTHWISE, ids=lambda c: f"{c}")
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_depthwise_matches_float64(case, layout):
    n, c, h, wd, kernel, stride, pre, post, dil = case
    g = rng(seed_of("dw", case, layout))
    x = g.standard_normal((n, c, h, wd)).astype(np.float32)
    if layout == "nhwc":  # an input stored channels-last, as convolutions leave it
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    w = g.standard_normal((c, 1, *kernel)).astype(np.float32)
    assert channels_last.supports(x, w, c) == "depthwise"
    got = conv_nd(x, w, stride, pre, post, dil, c)
    _close(got, conv64(x, w, stride, pre, post, dil, c))


DENSE = [  # (N, C, K, H, W, kernel, stride, pre, post, dilation)
    (1, 17, 9, 9, 11, (1, 1), (1, 1), (0, 0), (0, 0), (1, 1)),
    (2, 20, 7, 10, 9, (1, 1), (2, 3), (0, 0), (0, 0), (1, 1)),
    (1, 16, 12, 9, 10, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)),
    (2, 18, 5, 12, 11, (3, 3), (2, 2), (1, 0), (0, 2), (1, 1)),
    (1, 24, 6, 13, 12, (3, 2), (1, 2), (2, 1), (1, 0), (2, 3)),
    (1, 3, 8, 15, 14, (7, 7), (2, 2), (3, 3), (3, 3), (1, 1)),  # RGB stem: generic im2col
]


@pytest.mark.parametrize("case", DENSE, ids=lambda c: f"{c}")
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_dense_conv_matches_float64(case, layout):
    n, c, k, h, wd, kernel, stride, pre, post, dil = case
    g = rng(seed_of("dense", case, layout))
    x = g.standard_normal((n, c, h, wd)).astype(np.float32)
    if layout == "nhwc":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    w = (g.standard_normal((k, c, *kernel)) / np.sqrt(c)).astype(np.float32)
    got = conv_nd(x, w, stride, pre, post, dil, 1)
    _close(got, conv64(x, w, stride, pre, post, dil, 1))


def test_integer_sums_stay_exact():
    """INT8 convolutions run these paths in float64 on integers: the sums must be exact."""
    g = rng(5)
    for c, k, groups, kernel, stride in [(16, 16, 16, (3, 3), (2, 2)), (24, 10, 1, (1, 1), (1, 1)),
                                         (20, 8, 1, (3, 3), (1, 2))]:
        x = g.integers(-128, 128, (1, c, 9, 10)).astype(np.float64)
        w = g.integers(-128, 128, (k, c // groups, *kernel)).astype(np.float64)
        got = conv_nd(x, w, stride, (1, 1), (1, 1), (1, 1), groups)
        want = conv64(x, w, stride, (1, 1), (1, 1), (1, 1), groups)
        np.testing.assert_array_equal(got, want)


def _act64(x: np.ndarray, t: ActivationType) -> np.ndarray:
    x = x.astype(np.float64)
    sig = 1.0 / (1.0 + np.exp(-x))
    return {ActivationType.RELU: np.maximum(x, 0.0), ActivationType.CLIP: np.clip(x, 0.0, 6.0),
            ActivationType.SIGMOID: sig, ActivationType.SILU: x * sig}[t]


@pytest.mark.parametrize("t", [ActivationType.RELU, ActivationType.CLIP, ActivationType.SIGMOID,
                               ActivationType.SILU])
def test_inplace_activations_match_float64(t):
    g = rng(seed_of("act", t.value))
    x = (g.standard_normal((3, 7, 5, 9)) * 8).astype(np.float32)
    x.flat[:4] = [100.0, -100.0, 0.0, -0.5]  # saturated sigmoid tails and exp overflow
    spec = ActivationSpec(t, 0.0, 6.0)
    want = _act64(x, t)
    copy = apply_activation(x, spec)
    inplace = apply_activation_inplace(x.copy(), spec)
    for got in (copy, inplace):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-30)
    np.testing.assert_array_equal(copy, inplace)
    nan = apply_activation_inplace(np.array([np.nan], np.float32), spec)
    assert np.isnan(nan).all()


@pytest.mark.parametrize("ptype", [PoolingType.AVERAGE, PoolingType.MAX])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_global_pooling_matches_float64(ptype, layout):
    g = rng(seed_of("gp", ptype.value, layout))
    x = (g.standard_normal((2, 5, 13, 11)) + 3).astype(np.float32)
    if layout == "nhwc":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    net = Network("gp")
    net.add_input("x", x.shape, DataType.FLOAT)
    layer = net.add_layer(PoolingParams(ptype, global_pool=True), ["x"], {}, name="gp")
    net.mark_output(layer.outputs[0])
    (got,) = run_layer(layer, [x])
    x64 = x.astype(np.float64)
    want = x64.mean(axis=(2, 3), keepdims=True) if ptype is PoolingType.AVERAGE else x64.max(axis=(2, 3),
                                                                                                  keepdims=True)
    assert got.shape == (2, 5, 1, 1) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6)


def _two_convs() -> tuple[Network, np.ndarray]:
    g = rng(11)
    net = Network("chain")
    net.add_input("x", (1, 6, 9, 7), DataType.FLOAT)
    w1 = g.standard_normal((12, 6, 1, 1)).astype(np.float32)
    w2 = g.standard_normal((12, 1, 3, 3)).astype(np.float32)
    a = net.add_layer(ConvolutionParams(12, (1, 1), (1, 1), (0, 0), (0, 0), (1, 1), 1,
                                        activation=ActivationSpec(ActivationType.SILU)), ["x"], {"kernel": w1},
                      name="expand")
    b = net.add_layer(ConvolutionParams(12, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 12), [a.outputs[0]],
                      {"kernel": w2}, name="dw")
    net.mark_output(a.outputs[0])
    net.mark_output(b.outputs[0])
    return net, g.standard_normal((1, 6, 9, 7)).astype(np.float32)


def test_layouts_stay_internal():
    """run_layer and execute hand back C-contiguous arrays, whatever layout the kernels used."""
    net, x = _two_convs()
    out = execute(net, {"x": x})
    assert all(v.flags.c_contiguous for v in out.values())
    (y,) = run_layer(net.layers[0], [x])
    assert y.flags.c_contiguous
    (inner,) = run_layer(net.layers[0], [x], any_layout=True)
    assert channels_last.is_channels_last(inner)
    np.testing.assert_array_equal(inner, y)
    w1 = net.layers[0].weights["kernel"]
    h = conv64(x, w1, (1, 1), (0, 0), (0, 0), (1, 1), 1)
    h = h / (1.0 + np.exp(-h))
    _close(out[net.layers[0].outputs[0]], h)
    _close(out[net.layers[1].outputs[0]], conv64(h, net.layers[1].weights["kernel"], (2, 2), (1, 1), (1, 1),
                                                  (1, 1), 12))


def test_efficientnet_b0_matches_onnxruntime():
    """The bundled EfficientNet-B0 (small input) through the optimizer and the reference backend."""
    model = efficientnet_b0(image=64, classes=10, seed=2)
    net = optimize(parse(model, batch=1)).network
    x = rng(4).standard_normal((1, 3, 64, 64)).astype(np.float32)
    got = execute(net, {net.inputs[0]: x})[net.outputs[0]]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.parametrize("shape, k, residual", [((2, 6, 5, 7), 20, False), ((1, 9, 1, 1), 4, True),
                                                ((3, 5, 1, 1), 11, False)])
def test_bias_and_pixel_paths_match_float64(shape, k, residual):
    """Expansion 1x1 convolutions fold the bias into the GEMM; 1x1 images take a small-GEMM path."""
    g = rng(seed_of("bias", shape, k))
    x = g.standard_normal(shape).astype(np.float32)
    w = g.standard_normal((k, shape[1], 1, 1)).astype(np.float32)
    b = g.standard_normal(k).astype(np.float32)
    net = Network("one")
    net.add_input("x", x.shape, DataType.FLOAT)
    ins = ["x"]
    feeds = {"x": x}
    r = g.standard_normal((shape[0], k, *shape[2:])).astype(np.float32)
    if residual:
        net.add_input("r", r.shape, DataType.FLOAT)
        ins.append("r")
        feeds["r"] = r
    spec = ActivationSpec(ActivationType.SILU)
    layer = net.add_layer(ConvolutionParams(k, (1, 1), (1, 1), (0, 0), (0, 0), (1, 1), 1, activation=spec,
                                            residual=residual), ins, {"kernel": w, "bias": b}, name="c")
    net.mark_output(layer.outputs[0])
    got = execute(net, feeds)[layer.outputs[0]]
    y = conv64(x, w, (1, 1), (0, 0), (0, 0), (1, 1), 1) + b.astype(np.float64).reshape(1, -1, 1, 1)
    if residual:
        y = y + r
    _close(got, _act64(y, ActivationType.SILU))


@pytest.mark.parametrize("op", [ElementWiseOp.PROD, ElementWiseOp.SUM, ElementWiseOp.SUB, ElementWiseOp.DIV,
                                ElementWiseOp.MAX, ElementWiseOp.MIN])
@pytest.mark.parametrize("per_channel_first", [False, True])
@pytest.mark.parametrize("n, vn", [(1, 1), (2, 2), (3, 1)])
def test_per_channel_binary_rows_match_float64(op, per_channel_first, n, vn):
    """A channels-last tensor against a per-channel (N|1, C, 1, 1) one (squeeze-and-excitation)."""
    g = rng(seed_of("pcb", op.value, per_channel_first, n, vn))
    x = g.standard_normal((n, 7, 13, 11)).astype(np.float32)
    x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    v = (g.standard_normal((vn, 7, 1, 1)) + 3).astype(np.float32)
    a, b = (v, x) if per_channel_first else (x, v)
    net = Network("pcb")
    net.add_input("a", a.shape, DataType.FLOAT)
    net.add_input("b", b.shape, DataType.FLOAT)
    layer = net.add_layer(ElementWiseParams(op), ["a", "b"], name="e")
    (got,) = run_layer(layer, [a, b], any_layout=True)
    assert channels_last.is_channels_last(got) and got.dtype == np.float32
    fn = {ElementWiseOp.PROD: np.multiply, ElementWiseOp.SUM: np.add, ElementWiseOp.SUB: np.subtract,
          ElementWiseOp.DIV: np.divide, ElementWiseOp.MAX: np.maximum, ElementWiseOp.MIN: np.minimum}[op]
    want = fn(a.astype(np.float64), b.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    # Not channels-last, or not per-channel: the broadcasting path, same values.
    assert channels_last.per_channel_binary(np.multiply, np.ascontiguousarray(x), v) is None
    assert channels_last.per_channel_binary(np.multiply, x, x[:, :, :1]) is None


def _bordered(x: np.ndarray) -> np.ndarray:
    """x (N, C, H, W) copied into the interior of a ``row_bordered`` buffer (zero rows around each image)."""
    n, c, h, wd = x.shape
    interior, rows = channels_last.row_bordered(n, h, wd, c, x.dtype)
    assert np.shares_memory(interior, rows)
    rows[...] = x.transpose(0, 2, 3, 1).reshape(n, h * wd, c)
    return channels_last.from_nhwc(interior)


# (N, C, H, W, kernel, stride, pre, post, dilation): undilated cases with a horizontal stride of
# 1 or 2 read the bordered buffer in place.
IN_BUFFER = [
    (1, 7, 11, 9, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)),
    (2, 5, 10, 12, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)),
    (3, 6, 9, 8, (5, 5), (1, 1), (2, 2), (2, 2), (1, 1)),
    (1, 4, 8, 13, (3, 5), (1, 1), (0, 2), (2, 1), (1, 1)),
    (2, 3, 7, 6, (3, 3), (1, 1), (0, 0), (0, 0), (1, 1)),
    (1, 9, 5, 4, (5, 5), (1, 1), (2, 2), (2, 2), (1, 1)),  # kernel wider than the image
    (2, 4, 12, 10, (7, 7), (1, 1), (3, 3), (3, 3), (1, 1)),  # 7x7: more padding than the border (copied)
    (1, 5, 11, 11, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1)),  # stride 2: both column parities
    (2, 6, 13, 9, (5, 5), (2, 2), (2, 2), (2, 2), (1, 1)),
    (1, 7, 12, 10, (3, 3), (2, 2), (0, 0), (1, 1), (1, 1)),  # even sizes, TF-style "same" padding
    (2, 4, 9, 14, (5, 3), (1, 2), (2, 0), (2, 2), (1, 1)),
    (1, 3, 10, 9, (3, 5), (2, 1), (1, 2), (0, 2), (1, 1)),
    (1, 6, 8, 7, (1, 1), (2, 2), (0, 0), (0, 0), (1, 1)),
    (1, 4, 12, 12, (3, 3), (1, 1), (2, 2), (2, 2), (2, 2)),  # dilated: copied
    (1, 4, 13, 12, (3, 3), (3, 3), (1, 1), (1, 1), (1, 1)),  # horizontal stride 3: phases copied
]


@pytest.mark.parametrize("case", IN_BUFFER, ids=lambda c: f"{c}")
def test_depthwise_on_bordered_input_matches_float64(case):
    n, c, h, wd, kernel, stride, pre, post, dil = case
    g = rng(seed_of("inbuf", case))
    x = g.standard_normal((n, c, h, wd)).astype(np.float32)
    w = g.standard_normal((c, 1, *kernel)).astype(np.float32)
    xb = _bordered(x)
    want = conv64(x, w, stride, pre, post, dil, c)
    if stride[1] in (1, 2) and dil == (1, 1):  # the cases depthwise() tries in place
        direct = channels_last._depthwise_in_buffer(xb, w, stride, pre, post, want.shape[2:])
        assert (direct is not None) == (max(*pre, *post) < channels_last.ROW_BORDER)
        if direct is not None:
            _close(direct, want)
        # A plain channels-last array never qualifies (no zero rows around it).
        assert channels_last._depthwise_in_buffer(_nhwc(x), w, stride, pre, post, want.shape[2:]) is None
    _close(conv_nd(xb, w, stride, pre, post, dil, c), want)


def _nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("stride", [(1, 1), (2, 2)])
@pytest.mark.parametrize("where", ["border-top", "border-bottom", "edge-inf", "edge-nan", "inner-inf"])
def test_depthwise_in_buffer_checks_border_and_edges(where, stride):
    """Nonzero border rows, or non-finite edge pixels (read with zero weights), send the
    convolution through the padding copy; the results are the float64 ones either way."""
    g = rng(seed_of("edges", where))
    n, c, h, wd = 2, 5, 8, 7
    x = g.standard_normal((n, c, h, wd)).astype(np.float32)
    w = g.standard_normal((c, 1, 3, 3)).astype(np.float32)
    if where in ("edge-inf", "edge-nan", "inner-inf"):
        x[1, 2, 3, wd - 1 if where != "inner-inf" else 3] = np.inf if where != "edge-nan" else np.nan
    xb = _bordered(x)
    buf = xb.base
    if where == "border-top":
        buf[1, channels_last.ROW_BORDER - 1, 2, 0] = 1.0
    elif where == "border-bottom":
        buf[0, channels_last.ROW_BORDER + h, 0, 3] = -2.0
    with np.errstate(invalid="ignore"):
        want = conv64(x, w, stride, (1, 1), (1, 1), (1, 1), c)
    direct = channels_last._depthwise_in_buffer(xb, w, stride, (1, 1), (1, 1), want.shape[2:])
    assert (direct is not None) == (where == "inner-inf")
    got = conv_nd(xb, w, stride, (1, 1), (1, 1), (1, 1), c)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    scale = float(np.abs(want[finite]).max())
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("t", [ActivationType.RELU, ActivationType.CLIP, ActivationType.SILU, None])
@pytest.mark.parametrize("n", [1, 2])
def test_expansion_outputs_are_row_bordered(t, n):
    """Few-channel stems and 1x1 expansions (bias folded or not) leave their output between zero
    rows; the depthwise convolution after them reads it in place; values match float64."""
    g = rng(seed_of("expand", str(t), n))
    net = Network("mb")
    net.add_input("x", (n, 3, 12, 10), DataType.FLOAT)
    spec = ActivationSpec(t, 0.0, 6.0) if t is not None else None
    w0 = g.standard_normal((8, 3, 3, 3)).astype(np.float32)
    w1 = g.standard_normal((24, 8, 1, 1)).astype(np.float32)
    w2 = g.standard_normal((24, 1, 3, 3)).astype(np.float32)
    b0, b1, b2 = (g.standard_normal(k).astype(np.float32) for k in (8, 24, 24))
    stem = net.add_layer(ConvolutionParams(8, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 1, activation=spec),
                         ["x"], {"kernel": w0, "bias": b0}, name="stem")
    exp = net.add_layer(ConvolutionParams(24, (1, 1), (1, 1), (0, 0), (0, 0), (1, 1), 1, activation=spec),
                        [stem.outputs[0]], {"kernel": w1, "bias": b1} if n == 1 else {"kernel": w1}, name="expand")
    dw = net.add_layer(ConvolutionParams(24, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 24, activation=spec),
                       [exp.outputs[0]], {"kernel": w2, "bias": b2}, name="dw")
    for layer in (stem, exp, dw):
        net.mark_output(layer.outputs[0])
    x = g.standard_normal((n, 3, 12, 10)).astype(np.float32)
    seen = {}
    out = execute(net, {"x": x}, observer=lambda layer, outs: seen.update({layer.name: outs[0]}))
    for name in ("stem", "expand"):
        assert channels_last._depthwise_in_buffer(seen[name], w2[:seen[name].shape[1]], (1, 1), (1, 1), (1, 1),
                                                  (12, 10)) is not None

    def act(v):
        return v if t is None else _act64(v, t)

    h0 = act(conv64(x, w0, (1, 1), (1, 1), (1, 1), (1, 1), 1) + b0.reshape(1, -1, 1, 1))
    h1 = act(conv64(h0, w1, (1, 1), (0, 0), (0, 0), (1, 1), 1) + (b1.reshape(1, -1, 1, 1) if n == 1 else 0))
    h2 = act(conv64(h1, w2, (1, 1), (1, 1), (1, 1), (1, 1), 24) + b2.reshape(1, -1, 1, 1))
    for layer, want in ((stem, h0), (exp, h1), (dw, h2)):
        got = out[layer.outputs[0]]
        assert got.flags.c_contiguous
        _close(got, want, rtol=2e-5)


@pytest.mark.parametrize("stride", [(1, 1), (2, 2), (1, 2)])
@pytest.mark.parametrize("n", [1, 2])
def test_depthwise_7x7_in_a_deeper_border(stride, n):
    """7x7 kernels (padding 3) read in place from any buffer with enough zero rows around each image."""
    g = rng(seed_of("7x7", stride, n))
    c, h, wd, border = 5, 13, 11, 5
    x = g.standard_normal((n, c, h, wd)).astype(np.float32)
    buf = np.zeros((n, h + 2 * border, wd, c), np.float32)
    buf[:, border:border + h] = x.transpose(0, 2, 3, 1)
    xb = channels_last.from_nhwc(buf[:, border:border + h])
    w = g.standard_normal((c, 1, 7, 7)).astype(np.float32)
    want = conv64(x, w, stride, (3, 3), (3, 3), (1, 1), c)
    direct = channels_last._depthwise_in_buffer(xb, w, stride, (3, 3), (3, 3), want.shape[2:])
    assert direct is not None
    _close(direct, want)
    _close(conv_nd(xb, w, stride, (3, 3), (3, 3), (1, 1), c), want)
