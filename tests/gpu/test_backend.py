"""The GPU partition backend, one layer kind at a time, against the reference backend (FP16 and FP32).

Each case builds a small network around one layer, runs it through ``GpuPartition`` (lowering,
arena, CUDA graph) on fresh random data, and compares with ``backends.reference.execute`` under
the same precision convention: |out - ref| <= 1e-2*|ref| + 2e-3*max|ref| and relative L2 < 5e-3
(gpu_reference.assert_close). Skipped without CUDA.
"""

from __future__ import annotations

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

from gpu_reference import assert_close  # noqa: E402

from backends import reference  # noqa: E402
from backends.gpu.backend import GpuPartition  # noqa: E402
from engine.ir.dtypes import DataType, Precision  # noqa: E402
from engine.ir.layers import (  # noqa: E402
    ActivationParams,
    ActivationSpec,
    ActivationType,
    CastParams,
    ConcatenationParams,
    ConvolutionParams,
    DeconvolutionParams,
    ElementWiseOp,
    ElementWiseParams,
    FullyConnectedParams,
    GatherParams,
    LRNParams,
    MatrixMultiplyParams,
    NormalizationParams,
    PaddingMode,
    PaddingParams,
    ParametricReLUParams,
    PointwiseParams,
    PointwiseStep,
    PoolingParams,
    PoolingType,
    ReduceOp,
    ReduceParams,
    ResizeMode,
    ResizeParams,
    ScaleMode,
    ScaleParams,
    ShuffleParams,
    SliceParams,
    SoftMaxParams,
    SplitParams,
    UnaryOp,
    UnaryParams,
)
from engine.ir.network import Network  # noqa: E402

pytestmark = pytest.mark.gpu



def _run(net: Network, feeds: dict[str, np.ndarray], precision: Precision = Precision.FP16,
         expect_fallback: int = 0) -> None:
    for layer in net.layers:
        layer.precision = precision
    ref = reference.execute(net, feeds)
    part = GpuPartition(net, [la.name for la in net.layers])
    assert len(part.fallback_layers) == expect_fallback, part.fallback_layers
    ctx = part.create_context()
    for _ in range(2):  # replaying the graph twice must give the same values
        got = ctx.execute(feeds)
    for name in net.outputs:
        g, r = got[name], ref[name]
        assert g.shape == r.shape and g.dtype == r.dtype, (name, g.shape, g.dtype, r.shape, r.dtype)
        if r.dtype.kind in "iub":
            np.testing.assert_array_equal(g, r)
        else:
            assert_close(g.astype(np.float64), r.astype(np.float64))


def _net(shapes: dict[str, tuple[int, ...]]) -> Network:
    net = Network("t")
    for n, s in shapes.items():
        net.add_input(n, s)
    return net


def _one(params, shape=(2, 12, 9, 7), weights=None, extra_inputs=(), rng=None, precision=Precision.FP16,
         expect_fallback=0) -> None:
    shapes = {"x": shape, **{f"in{i}": s for i, s in enumerate(extra_inputs)}}
    net = _net(shapes)
    layer = net.add_layer(params, list(shapes), weights or {})
    for t in layer.outputs:
        net.mark_output(t)
    feeds = {n: rng.uniform(-2, 2, s).astype(np.float32) for n, s in shapes.items()}
    _run(net, feeds, precision, expect_fallback)


ACTS = [ActivationSpec(ActivationType.RELU), ActivationSpec(ActivationType.SILU),
        ActivationSpec(ActivationType.CLIP, 0.0, 6.0), ActivationSpec(ActivationType.LEAKY_RELU, 0.1),
        ActivationSpec(ActivationType.GELU_ERF), ActivationSpec(ActivationType.HARD_SWISH)]


@pytest.mark.parametrize("spec", ACTS, ids=lambda s: s.type.value)
def test_activation(rng, spec):
    _one(ActivationParams(spec), rng=rng)


@pytest.mark.parametrize("precision", [Precision.FP16, Precision.FP32])
def test_elementwise_broadcast(rng, precision):
    for op in (ElementWiseOp.SUM, ElementWiseOp.PROD, ElementWiseOp.MAX, ElementWiseOp.SUB):
        _one(ElementWiseParams(op), extra_inputs=[(1, 12, 1, 7)], rng=rng, precision=precision)


def test_elementwise_compare_and_div(rng):
    _one(ElementWiseParams(ElementWiseOp.GREATER), shape=(3, 5), extra_inputs=[(5,)], rng=rng)
    net = _net({"a": (4, 6), "b": (4, 6)})
    t = net.add_layer(ElementWiseParams(ElementWiseOp.DIV), ["a", "b"]).outputs[0]
    net.mark_output(t)
    _run(net, {"a": rng.uniform(-2, 2, (4, 6)).astype(np.float32),
               "b": rng.uniform(0.5, 2, (4, 6)).astype(np.float32)})


def test_unary(rng):
    for op in (UnaryOp.EXP, UnaryOp.ABS, UnaryOp.NEG, UnaryOp.SIN, UnaryOp.FLOOR):
        _one(UnaryParams(op), rng=rng)


def test_scale_prelu(rng):
    c = 12
    _one(ScaleParams(ScaleMode.CHANNEL), weights={"scale": rng.standard_normal(c).astype(np.float32),
                                                  "shift": rng.standard_normal(c).astype(np.float32)}, rng=rng)
    _one(ParametricReLUParams(), weights={"slope": rng.uniform(0, 1, (c, 1, 1)).astype(np.float32)}, rng=rng)


def test_pointwise_chain(rng):
    steps = (PointwiseStep("elementwise", "prod", operand_input=1),
             PointwiseStep("activation", "sigmoid"),
             PointwiseStep("elementwise", "sum", operand_weight="b", reverse=True),
             PointwiseStep("unary", "abs"))
    _one(PointwiseParams(steps), weights={"b": rng.standard_normal((12, 1, 1)).astype(np.float32)},
         extra_inputs=[(2, 12, 1, 1)], rng=rng)


def test_softmax_lrn_norm(rng):
    _one(SoftMaxParams(axis=1), rng=rng)
    _one(SoftMaxParams(axis=-1, log=True), shape=(4, 33), rng=rng)
    _one(LRNParams(size=5, alpha=1e-2, beta=0.75, bias=1.0), rng=rng)
    _one(NormalizationParams(axes=(-1,), epsilon=1e-5), shape=(3, 5, 64),
         weights={"scale": rng.standard_normal(64).astype(np.float32),
                  "bias": rng.standard_normal(64).astype(np.float32)}, rng=rng)
    _one(NormalizationParams(axes=(2, 3)), rng=rng)


def test_norm_with_its_residual_in_one_store(rng):
    """Swin V2's post-norm step x + LayerNorm(f(x)) (lowering/norm_residual): one kernel."""
    for precision, shape in ((Precision.FP16, (3, 7, 96)), (Precision.FP32, (2, 5, 100))):
        net = _net({"x": shape, "r": shape})
        n = net.add_layer(NormalizationParams(axes=(-1,), epsilon=1e-5), ["x"],
                          {"scale": rng.uniform(0.5, 2, shape[-1]).astype(np.float32),
                           "bias": rng.standard_normal(shape[-1]).astype(np.float32)}).outputs[0]
        net.mark_output(net.add_elementwise("r", n, "sum", name="add"))
        _run(net, {k: rng.uniform(-2, 2, shape).astype(np.float32) for k in ("x", "r")}, precision)


def test_reduce(rng):
    _one(ReduceParams(ReduceOp.MEAN, (2, 3)), rng=rng)
    _one(ReduceParams(ReduceOp.MAX, (1,), keep_dims=False), rng=rng)
    _one(ReduceParams(ReduceOp.L2, (0, 2)), rng=rng)


@pytest.mark.parametrize("shape", [(4, 3, 64, 32), (6, 49), (3, 200), (2, 1100)])
def test_reduction_with_its_row_map_in_one_kernel(rng, shape):
    """Swin V2's cosine normalization x / max(||x||_2, eps) (a ReduceL2 and its pointwise reader, one
    group kernel: ``lowering/row_maps.py``) and a mean subtraction, against the reference backend."""
    net = _net({"x": shape})
    last = len(shape) - 1
    r = net.add_layer(ReduceParams(ReduceOp.L2, (last,), True), ["x"]).outputs[0]
    steps = (PointwiseStep("elementwise", "max", operand_weight="w0"),
             PointwiseStep("elementwise", "div", operand_input=1, reverse=True))
    net.mark_output(net.add_layer(PointwiseParams(steps), [r, "x"], {"w0": np.full((1,) * len(shape), 1e-3,
                                                                                  np.float32)}).outputs[0])
    m = net.add_layer(ReduceParams(ReduceOp.MEAN, (last,), True), ["x"]).outputs[0]
    net.mark_output(net.add_layer(ElementWiseParams(ElementWiseOp.SUB), ["x", m]).outputs[0])
    x = rng.uniform(-2, 2, shape).astype(np.float32)
    x[0] = 0  # all-zero rows: the clamp keeps them finite
    _run(net, {"x": x})


def test_group_layers_on_long_rows(rng):
    """ViT-sized LayerNorm and softmax rows, and a long reduction: the warp- and block-per-row kernels."""
    _one(NormalizationParams(axes=(-1,), epsilon=1e-6), shape=(2, 197, 768),
         weights={"scale": rng.uniform(0.5, 1.5, 768).astype(np.float32),
                  "bias": rng.standard_normal(768).astype(np.float32)}, rng=rng)
    _one(SoftMaxParams(axis=-1), shape=(2, 3, 197, 197), rng=rng)
    _one(SoftMaxParams(axis=1, log=True), shape=(2, 1000), rng=rng, precision=Precision.FP32)
    _one(ReduceParams(ReduceOp.SUM, (1,), keep_dims=False), shape=(3, 6000), rng=rng, precision=Precision.FP32)
    _one(NormalizationParams(axes=(2, 3, 4)), shape=(2, 4, 8, 6, 6), rng=rng,  # GroupNorm, 4 groups
         weights={"scale": rng.uniform(0.5, 1.5, (4, 8, 1, 1)).astype(np.float32)})


@pytest.mark.parametrize("c", [7, 32, 33, 96])
def test_group_layers_read_an_nhwc_convolution_output(rng, c):
    """LayerNorm / softmax / reduce over C and instance norm over H, W of the NHWC slot a conv wrote
    (channels padded to 8: the padding must not enter the rows)."""
    shape = (2, 8, 9, 10)
    net = _net({"x": shape})
    w = {"kernel": (rng.standard_normal((c, 8, 1, 1)) / np.sqrt(8)).astype(np.float32),
         "bias": rng.standard_normal(c).astype(np.float32)}
    y = net.add_layer(ConvolutionParams(c, (1, 1), (1, 1), (0, 0), (0, 0), (1, 1)), ["x"], w).outputs[0]
    chan = {"scale": rng.uniform(0.5, 1.5, (c, 1, 1)).astype(np.float32),
            "bias": rng.standard_normal((c, 1, 1)).astype(np.float32)}
    for params, weights in ((NormalizationParams(axes=(1,)), chan), (NormalizationParams(axes=(2, 3)), chan),
                            (SoftMaxParams(axis=1), {}), (ReduceParams(ReduceOp.MEAN, (1,), keep_dims=False), {}),
                            (ReduceParams(ReduceOp.MAX, (1, 2)), {})):
        net.mark_output(net.add_layer(params, [y], weights).outputs[0])
    _run(net, {"x": rng.uniform(-1, 1, shape).astype(np.float32)})


@pytest.mark.parametrize("c", [96, 20])
def test_convnext_permutes_around_layer_norm(rng, c):
    """NHWC conv output -> permute (an alias when C % 8 = 0, else a copy) -> LayerNorm over C ->
    permute back -> + conv output; the first permute's output also leaves the partition."""
    from block_nets import convnext_block

    net = convnext_block(c, rng)
    net.mark_output(net.layer("to_nhwc").outputs[0])
    _run(net, {"x": rng.uniform(-1, 1, net.tensors["x"].shape).astype(np.float32)})


def test_reshape_alias_between_launches(rng):
    net = _net({"x": (2, 3, 4, 5)})
    e = net.add_layer(ActivationParams(ActivationSpec(ActivationType.SILU)), ["x"]).outputs[0]
    r = net.add_layer(ShuffleParams(reshape=(6, 20)), [e]).outputs[0]
    net.mark_output(net.add_layer(SoftMaxParams(axis=1), [r]).outputs[0])
    net.mark_output(r)
    _run(net, {"x": rng.uniform(-2, 2, (2, 3, 4, 5)).astype(np.float32)})


def test_resize(rng):
    _one(ResizeParams((2, 12, 18, 14), ResizeMode.NEAREST, "asymmetric", "floor"), rng=rng)
    _one(ResizeParams((2, 12, 13, 21), ResizeMode.LINEAR, "half_pixel"), rng=rng)
    _one(ResizeParams((2, 12, 4, 3), ResizeMode.LINEAR, "align_corners"), rng=rng)


def test_data_movement(rng):
    _one(SliceParams((0, 1, 8, 0), (2, 5, 4, 3), (1, 2, -2, 3)), rng=rng)
    _one(SplitParams(axis=1, sizes=(5, 7)), rng=rng)
    _one(ConcatenationParams(axis=1), extra_inputs=[(2, 5, 9, 7), (2, 3, 9, 7)], rng=rng)
    _one(ConcatenationParams(axis=2), extra_inputs=[(2, 12, 4, 7)], rng=rng)
    _one(PaddingParams((0, 1, 2, -1), (0, 0, 1, 2)), rng=rng)
    _one(PaddingParams((0, 0, 2, 3), (0, 0, 1, 2), PaddingMode.REFLECT), rng=rng)
    _one(PaddingParams((0, 0, 2, 3), (0, 0, 4, 2), PaddingMode.EDGE), rng=rng)
    _one(ShuffleParams(first_perm=(0, 2, 3, 1), reshape=(2, 63, 12), second_perm=(0, 2, 1)), rng=rng)
    _one(ShuffleParams(reshape=(2, 3, 4, 63), second_perm=(0, 2, 1, 3)), rng=rng)
    _one(GatherParams(axis=1), weights={"indices": np.array([[3, -1], [0, 5]], np.int64)}, rng=rng)
    _one(CastParams(DataType.INT32), rng=rng, precision=Precision.FP32)


def test_matmul_fc(rng):
    _one(MatrixMultiplyParams(transpose_b=True), shape=(3, 1, 5, 16), extra_inputs=[(4, 9, 16)], rng=rng)
    _one(MatrixMultiplyParams(), shape=(7,), extra_inputs=[(2, 7, 3)], rng=rng)
    for c, k in ((64, 32), (20, 13)):
        _one(FullyConnectedParams(k, ActivationSpec(ActivationType.RELU)), shape=(6, c),
             weights={"kernel": (rng.standard_normal((k, c)) / np.sqrt(c)).astype(np.float32),
                      "bias": rng.standard_normal(k).astype(np.float32)}, rng=rng)


def _conv(rng, c, k, ks, stride, pad, dil=(1, 1), groups=1, residual=False, act=None, shape=(2, None, 11, 10),
          precision=Precision.FP16):
    shape = (shape[0], c, *shape[2:])
    params = ConvolutionParams(k, ks, stride, pad, pad, dil, groups, act, residual)
    net = _net({"x": shape})
    probe = Network("p")
    probe.add_input("x", shape)
    fan_in = c // groups * ks[0] * ks[1]
    w = {"kernel": (rng.standard_normal((k, c // groups, *ks)) / np.sqrt(fan_in)).astype(np.float32),
         "bias": rng.standard_normal(k).astype(np.float32)}
    out_shape = probe.add_layer(ConvolutionParams(k, ks, stride, pad, pad, dil, groups), ["x"], w).outputs[0]
    inputs = ["x"]
    if residual:
        net.add_input("r", probe.tensors[out_shape].shape)
        inputs.append("r")
    t = net.add_layer(params, inputs, w).outputs[0]
    net.mark_output(t)
    feeds = {n: rng.uniform(-1, 1, net.tensors[n].shape).astype(np.float32) for n in net.inputs}
    _run(net, feeds, precision)


def test_convolutions(rng):
    relu = ActivationSpec(ActivationType.RELU)
    _conv(rng, 13, 24, (3, 3), (1, 1), (1, 1), act=relu, residual=True)
    _conv(rng, 16, 16, (3, 3), (2, 2), (1, 1), groups=16, act=relu)  # depthwise
    _conv(rng, 12, 18, (3, 3), (1, 1), (2, 2), dil=(2, 2), groups=3)  # grouped, dilated
    _conv(rng, 8, 20, (1, 1), (2, 2), (0, 0))
    _conv(rng, 6, 10, (3, 3), (1, 1), (1, 1), precision=Precision.FP32)  # direct fp32 kernel


@pytest.mark.parametrize("c,ks,pad,shape", [(3, (7, 7), (3, 3), (2, None, 40, 38)),
                                          (4, (3, 3), (1, 1), (1, None, 15, 17)),
                                          (1, (5, 5), (2, 2), (2, None, 12, 13))], ids=["stem7x7", "3x3-c4", "5x5-c1"])
def test_stride2_few_channel_conv_through_space_to_depth(rng, c, ks, pad, shape):
    """A stride-2 convolution on <= 4 channels of a float input runs over the 2x2 space-to-depth."""
    _conv(rng, c, 24, ks, (2, 2), pad, act=ActivationSpec(ActivationType.RELU), shape=shape)


def test_deconvolution(rng):
    for groups, stride in ((1, (2, 2)), (2, (1, 1))):
        c, k = 8, 6
        params = DeconvolutionParams(k, (3, 3), stride, (1, 1), (0, 1), (1, 1), (1, 1) if stride[0] > 1 else (),
                                     groups, ActivationSpec(ActivationType.RELU))
        _one(params, shape=(2, c, 5, 6), weights={
            "kernel": (rng.standard_normal((c, k // groups, 3, 3)) / 3).astype(np.float32),
            "bias": rng.standard_normal(k).astype(np.float32)}, rng=rng)


@pytest.mark.parametrize("c,k,ks", [(16, 8, 2), (24, 12, 2), (8, 5, 3)])
def test_deconvolution_kernel_equal_to_stride_on_tensor_cores(rng, c, k, ks):
    """A U-Net up-convolution (kernel = stride, unpadded) as a tensor-core GEMM and a depth-to-space copy."""
    params = DeconvolutionParams(k, (ks, ks), (ks, ks), (0, 0), (0, 0), (1, 1), (), 1,
                                 ActivationSpec(ActivationType.RELU))
    _one(params, shape=(2, c, 5, 6), weights={
        "kernel": (rng.standard_normal((c, k, ks, ks)) / np.sqrt(c)).astype(np.float32),
        "bias": rng.standard_normal(k).astype(np.float32)}, rng=rng)


def test_dense_block_concatenations_read_in_place(rng):
    """DenseNet's concatenations read by their BN + ReLU chain, Swin's roll and patch merge as
    slice views, ShuffleNet's channel split read by a convolution, a merged 1x1 convolution's split
    read by a 3x3 convolution and a ReLU (lowering/concat_reads, View.slice, lower_split)."""
    from engine.ir.layers import ConcatenationParams, ScaleMode, ScaleParams, SliceParams, SplitParams

    net = _net({"x": (2, 16, 6, 4)})
    a = net.add_convolution("x", (rng.standard_normal((24, 16, 1, 1)) / 4).astype(np.float32), name="a")
    b = net.add_convolution("x", (rng.standard_normal((12, 16, 3, 3)) / 12).astype(np.float32), padding=(1, 1),
                            name="b")
    cat = net.add_layer(ConcatenationParams(axis=1), [a, b], name="cat").outputs[0]
    bn = net.add_layer(ScaleParams(ScaleMode.CHANNEL), [cat], {"scale": rng.uniform(0.5, 2, 36).astype(np.float32),
                                                                "shift": rng.standard_normal(36).astype(np.float32)})
    y = net.add_activation(bn.outputs[0], "relu", name="y")
    top = net.add_layer(SliceParams((0, 0, 2, 0), (2, 36, 4, 4), (1, 1, 1, 1)), [y]).outputs[0]
    bottom = net.add_layer(SliceParams((0, 0, 0, 0), (2, 36, 2, 4), (1, 1, 1, 1)), [y]).outputs[0]
    rolled = net.add_layer(ConcatenationParams(axis=2), [top, bottom]).outputs[0]
    quads = [net.add_layer(SliceParams((0, 0, i, j), (2, 36, 3, 2), (1, 1, 2, 2)), [rolled]).outputs[0]
             for i in (0, 1) for j in (0, 1)]
    merged = net.add_layer(ConcatenationParams(axis=1), quads).outputs[0]
    half = net.add_layer(SliceParams((0, 72, 0, 0), (2, 72, 3, 2), (1, 1, 1, 1)), [merged]).outputs[0]
    z = net.add_convolution(half, (rng.standard_normal((16, 72, 1, 1)) / 8).astype(np.float32), name="z")
    wide = net.add_convolution(z, (rng.standard_normal((24, 16, 1, 1)) / 4).astype(np.float32), name="wide")
    parts = net.add_layer(SplitParams(axis=1, sizes=(16, 8)), [wide], name="split").outputs
    u = net.add_convolution(parts[0], (rng.standard_normal((8, 16, 3, 3)) / 12).astype(np.float32), padding=(1, 1),
                            name="u")
    net.mark_output(u)
    net.mark_output(net.add_activation(parts[1], "relu", name="v"))
    net.mark_output(merged)
    _run(net, {"x": rng.uniform(-2, 2, (2, 16, 6, 4)).astype(np.float32)})


def test_pooling(rng):
    _one(PoolingParams(PoolingType.MAX, (3, 3), (2, 2), (1, 1), (1, 1)), rng=rng)
    _one(PoolingParams(PoolingType.AVERAGE, (3, 3), (2, 2), (1, 1), (1, 1), ceil_mode=True,
                       count_include_pad=True), rng=rng)
    _one(PoolingParams(PoolingType.AVERAGE, global_pool=True), rng=rng)


def test_fallback_layer_in_the_middle(rng):
    """An Lp pooling (no GPU kernel) splits the partition; values still match."""
    net = _net({"x": (2, 8, 9, 9)})
    a = net.add_layer(ActivationParams(ActivationSpec(ActivationType.RELU)), ["x"]).outputs[0]
    b = net.add_layer(PoolingParams(PoolingType.LP, (2, 2), (2, 2)), [a]).outputs[0]
    c = net.add_layer(ActivationParams(ActivationSpec(ActivationType.SIGMOID)), [b]).outputs[0]
    net.mark_output(c)
    _run(net, {"x": rng.uniform(-1, 1, (2, 8, 9, 9)).astype(np.float32)}, expect_fallback=1)


def test_contexts_are_independent(rng):
    net = _net({"x": (2, 16, 8, 8)})
    w = {"kernel": rng.standard_normal((16, 16, 3, 3)).astype(np.float32) / 12}
    t = net.add_layer(ConvolutionParams(16, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)), ["x"], w).outputs[0]
    net.mark_output(t)
    for la in net.layers:
        la.precision = Precision.FP16
    part = GpuPartition(net, [la.name for la in net.layers])
    c1, c2 = part.create_context(), part.create_context()
    x1, x2 = (rng.uniform(-1, 1, (2, 16, 8, 8)).astype(np.float32) for _ in range(2))
    y1 = c1.execute({"x": x1})[t]
    y2 = c2.execute({"x": x2})[t]
    np.testing.assert_array_equal(c1.execute({"x": x1})[t], y1)
    assert not np.array_equal(y1, y2)


def test_tactics_timed_and_cached(rng, tmp_path):
    from backends.gpu.kernels import cudnn
    from backends.gpu.tactics import select_tactics

    net = _net({"x": (1, 32, 14, 14)})
    w = {"kernel": rng.standard_normal((64, 32, 3, 3)).astype(np.float32) / 17}
    t = net.add_layer(ConvolutionParams(64, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)), ["x"], w).outputs[0]
    net.mark_output(t)
    for la in net.layers:
        la.precision = Precision.FP16
    cache = tmp_path / "timing.json"
    first = select_tactics(net, [la.name for la in net.layers], str(cache), level=3)
    assert set(first) == {net.layers[0].name} and cache.exists()
    assert select_tactics(net, [la.name for la in net.layers], str(cache), level=3) == first
    part = GpuPartition(net, [la.name for la in net.layers], first)
    op = next(o for o in part.units[0].lowered.ops if o.label == net.layers[0].name)
    if op.kind == "conv":  # a tile won; else a whole-layer tactic (cuBLAS, cuDNN, ...) takes the layer
        assert op.info["tactic"].name == first[net.layers[0].name]
    else:
        assert op.kind == "conv_cudnn" and cudnn.tactic_name(op.info["algo"]) == first[net.layers[0].name]


def test_host_platform_times_layers_on_the_gpu():
    """The host platform's measured clock uses the GPU backend when it can run here."""
    from engine.models import build_model
    from engine.onnx_parser import parse
    from engine.optimizer import optimize
    from scheduler.host_measure import measure_layers, measured_backend

    net = optimize(parse(build_model("resnet18_small"))).network
    times = measure_layers(net)
    assert set(times) == {la.name for la in net.layers}
    convs = [times[la.name] for la in net.layers if la.kind.value == "convolution"]
    assert all(0 < t < 5e-3 for t in convs)  # microseconds on a GPU, not the CPU's milliseconds
    assert measured_backend().startswith("GPU backend")


def test_gpu_and_dla_partitions_run_together():
    """A DLA-first plan with a layer the DLA refuses: its GPU partition runs on the GPU backend."""
    from engine.builder import Builder, BuilderConfig
    from engine.ir.layers import NormalizationParams
    from engine.ir.logger import Logger, Severity
    from engine.ir.network import Network
    from engine.runtime import Runtime

    rng = np.random.default_rng(11)
    net = Network("mixed")
    x = net.add_input("x", (1, 16, 16, 16))
    y = net.add_convolution(x, rng.standard_normal((16, 16, 3, 3)).astype(np.float32) * 0.2, padding=(1, 1))
    y = net.add_activation(y, "relu")
    z = net.tensor(net.add_layer(NormalizationParams(axes=(1, 2, 3)), [y], name="norm").outputs[0])  # GPU only
    w = net.add_convolution(z, rng.standard_normal((8, 16, 1, 1)).astype(np.float32) * 0.2)
    net.mark_output(w)
    quiet = Logger(Severity.ERROR)
    plan = Builder(quiet).build_serialized_network(net, BuilderConfig(fp16=True, default_device="dla",
                                                                      gpu_fallback=True))
    engine = Runtime(quiet).deserialize(plan)
    records = engine.placement["partitions"]
    assert {r["device"] for r in records} == {"gpu", "dla"}
    assert all(r["backend"] == "gpu" for r in records if r["device"] == "gpu")
    feeds = {"x": rng.standard_normal((1, 16, 16, 16)).astype(np.float32)}
    ctx = engine.create_execution_context()
    got = ctx.execute(feeds)[w.name]
    programs = [c.program for c in engine.compiled_partitions if c.desc.backend == "gpu"]
    assert programs and all(not p.fallback_layers for p in programs)
    from backends.reference import execute as reference_execute
    from engine.ir.dtypes import Precision

    ref = reference_execute(engine.network, feeds, precision_of=lambda la: la.precision or Precision.FP32)[w.name]
    err = np.linalg.norm(got - ref.astype(np.float32)) / np.linalg.norm(ref.astype(np.float32))
    assert err < 1e-2
