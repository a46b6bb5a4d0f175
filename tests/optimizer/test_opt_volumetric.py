"""3-D convolutions and rank-5 global pools as 2-D layers (``engine.optimizer.passes.volumetric``).

Each rewritten network is compared with an independent float64 numpy 3-D convolution and with the
unrewritten network on the reference backend, on fresh random data over kernel sizes, strides,
asymmetric pads, dilations, groups and with and without bias; an ONNX video block (Conv 3-D, BN,
ReLU, residual, global pools) goes through the whole builder against ONNX Runtime.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from backends.reference import execute
from engine.builder import BuilderConfig, build_from_onnx
from engine.ir.layers import ConvolutionParams, LayerKind, PoolingParams, PoolingType
from engine.ir.logger import Logger, Severity
from engine.ir.network import Network
from engine.optimizer import optimize
from engine.runtime import Runtime


def conv3d_f64(x, w, b, stride, pre, post, dil, groups):
    """Direct 3-D convolution in float64: the independent reference."""
    x = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + list(zip(pre, post)))
    n, c, *sp = x.shape
    k, cg, *ks = w.shape
    out = [(s - d * (kk - 1) - 1) // st + 1 for s, kk, st, d in zip(sp, ks, stride, dil)]
    y = np.zeros((n, k, *out))
    kg = k // groups
    for g in range(groups):
        xs = x[:, g * cg:(g + 1) * cg]
        for i in range(ks[0]):
            for j in range(ks[1]):
                for m in range(ks[2]):
                    patch = xs[:, :, i * dil[0]:i * dil[0] + stride[0] * out[0]:stride[0],
                               j * dil[1]:j * dil[1] + stride[1] * out[1]:stride[1],
                               m * dil[2]:m * dil[2] + stride[2] * out[2]:stride[2]]
                    y[:, g * kg:(g + 1) * kg] += np.einsum("nctxy,kc->nktxy", patch, w[g * kg:(g + 1) * kg, :, i, j, m])
    return y + (0 if b is None else b.reshape(1, -1, 1, 1, 1))


CASES = [  # kernel, stride, pre, post, dilation, groups, bias
    ((3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), (1, 1, 1), 1, True),  # R3D's 3x3x3
    ((3, 1, 1), (1, 1, 1), (1, 0, 0), (1, 0, 0), (1, 1, 1), 1, False),  # R(2+1)D's temporal part
    ((1, 3, 3), (1, 2, 2), (0, 1, 1), (0, 1, 1), (1, 1, 1), 1, True),  # its spatial part, strided
    ((3, 7, 7), (1, 2, 2), (1, 3, 3), (1, 3, 3), (1, 1, 1), 1, False),  # a stem
    ((3, 3, 3), (2, 2, 2), (1, 1, 1), (0, 1, 0), (1, 1, 1), 1, True),  # strided in time, asymmetric pads
    ((2, 3, 3), (2, 1, 1), (0, 1, 1), (1, 1, 1), (2, 1, 1), 2, True),  # dilated in time, grouped
    ((1, 1, 1), (1, 1, 1), (0, 0, 0), (0, 0, 0), (1, 1, 1), 1, True),  # pointwise
]


@pytest.mark.parametrize("kernel,stride,pre,post,dil,groups,bias", CASES)
def test_conv3d_becomes_2d_convolutions_and_matches(kernel, stride, pre, post, dil, groups, bias):
    rng = np.random.default_rng()
    c, k = 4, 6
    net = Network("video")
    x = net.add_input("x", (2, c, 7, 9, 8))
    weights = {"kernel": rng.standard_normal((k, c // groups, *kernel)).astype(np.float32)}
    if bias:
        weights["bias"] = rng.standard_normal(k).astype(np.float32)
    conv = net.add_layer(ConvolutionParams(k, kernel, stride, pre, post, dil, groups), [x], weights, name="conv3d")
    net.mark_output(conv.outputs[0])
    after = optimize(net, passes=["volumetric"]).network
    convs = [la for la in after.layers if la.kind is LayerKind.CONVOLUTION]
    assert len(convs) == kernel[0] and all(len(la.params.kernel) == 2 for la in convs)
    feeds = {"x": rng.standard_normal((2, c, 7, 9, 8)).astype(np.float32)}
    got = execute(after, feeds)[conv.outputs[0]]
    want = conv3d_f64(feeds["x"], weights["kernel"], weights.get("bias"), stride, pre, post, dil, groups)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    np.testing.assert_allclose(got, execute(net, feeds)[conv.outputs[0]], rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("kind", [PoolingType.AVERAGE, PoolingType.MAX])
def test_rank5_global_pool_becomes_a_reduction(kind):
    net = Network("pool")
    x = net.add_input("x", (2, 3, 4, 5, 6))
    pool = net.add_layer(PoolingParams(kind, (), (), (), (), (), global_pool=True), [x], name="gp")
    net.mark_output(pool.outputs[0])
    after = optimize(net, passes=["volumetric"]).network
    assert [la.kind for la in after.layers] == [LayerKind.REDUCE]
    feeds = {"x": np.random.default_rng().standard_normal((2, 3, 4, 5, 6)).astype(np.float32)}
    want = (feeds["x"].mean if kind is PoolingType.AVERAGE else feeds["x"].max)(axis=(2, 3, 4), keepdims=True)
    np.testing.assert_allclose(execute(after, feeds)["gp"], want, rtol=1e-6, atol=1e-6)


def _video_block():
    """Conv3d -> BN -> ReLU -> Conv3d -> BN -> + input -> ReLU -> GlobalAveragePool, as exported."""
    rng = np.random.default_rng()
    c = 8
    inits, nodes = [], []

    def init(name, a):
        inits.append(numpy_helper.from_array(a.astype(np.float32), name))
        return name

    h = "x"
    for i in range(2):
        w = init(f"w{i}", rng.standard_normal((c, c, 3, 3, 3)) / np.sqrt(27 * c))
        nodes.append(helper.make_node("Conv", [h, w], [f"c{i}"], pads=[1] * 6, kernel_shape=[3, 3, 3]))
        bn = [init(f"bn{i}_{p}", v) for p, v in (("s", rng.uniform(0.5, 1.5, c)), ("b", rng.standard_normal(c)),
                                                   ("m", rng.standard_normal(c) * 0.1), ("v", rng.uniform(0.5, 2, c)))]
        nodes.append(helper.make_node("BatchNormalization", [f"c{i}", *bn], [f"n{i}"]))
        if i == 0:
            nodes.append(helper.make_node("Relu", ["n0"], ["r0"]))
            h = "r0"
    nodes.append(helper.make_node("Add", ["n1", "x"], ["s"]))
    nodes.append(helper.make_node("Relu", ["s"], ["r1"]))
    nodes.append(helper.make_node("GlobalAveragePool", ["r1"], ["y"]))
    shape = (2, c, 4, 6, 6)
    graph = helper.make_graph(nodes, "video", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (2, c, 1, 1, 1))],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, rng.standard_normal(shape).astype(np.float32)


def test_video_block_builds_without_3d_layers_and_matches_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    model, x = _video_block()
    logger = Logger(Severity.ERROR)
    engine = Runtime(logger).deserialize(build_from_onnx(model, BuilderConfig(), logger))
    assert not [la for la in engine.network.layers if la.kind in (LayerKind.CONVOLUTION, LayerKind.POOLING)
                and len(engine.network.tensors[la.inputs[0]].shape) == 5]
    got = engine.create_execution_context().execute({"x": x})["y"]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


POOL_CASES = [  # op, kernel, strides, pads (begin..., end...), dilations, ceil_mode, count_include_pad
    ("MaxPool", (1, 3, 3), (1, 2, 2), (0, 1, 1, 0, 1, 1), (1, 1, 1), 0, 0),  # S3D's spatial max pools
    ("MaxPool", (3, 3, 3), (1, 1, 1), (1, 1, 1, 1, 1, 1), (1, 1, 1), 0, 0),  # its branch pools
    ("MaxPool", (2, 3, 3), (2, 2, 2), (0, 0, 0, 0, 0, 0), (1, 1, 1), 1, 0),  # ceil mode, overhanging windows
    ("MaxPool", (2, 2, 2), (1, 1, 2), (1, 0, 1, 0, 1, 0), (2, 1, 1), 0, 0),  # dilated in time, asymmetric pads
    ("AveragePool", (2, 7, 7), (1, 1, 1), (0, 0, 0, 0, 0, 0), (1, 1, 1), 0, 0),  # S3D's head pool
    ("AveragePool", (3, 3, 3), (2, 2, 2), (1, 1, 1, 1, 0, 1), (1, 1, 1), 0, 0),  # pads not counted
    ("AveragePool", (3, 2, 3), (2, 1, 2), (1, 1, 1, 1, 1, 1), (1, 1, 1), 0, 1),  # pads counted
    ("AveragePool", (2, 3, 3), (2, 2, 2), (1, 1, 0, 0, 1, 1), (1, 1, 1), 1, 1),  # ceil mode, pads counted
]


@pytest.mark.parametrize("op,kernel,strides,pads,dil,ceil,count_pad", POOL_CASES)
def test_pool3d_becomes_2d_pools_and_matches_onnxruntime(op, kernel, strides, pads, dil, ceil, count_pad):
    """Every 3-D max / average pool becomes 2-D pools over (H, W) and over T; the engine must give
    ONNX Runtime's 3-D pool on fresh random data (negative values too, so a padded max shows)."""
    ort = pytest.importorskip("onnxruntime")
    attrs = {"kernel_shape": list(kernel), "strides": list(strides), "pads": list(pads), "ceil_mode": ceil}
    if op == "MaxPool":
        attrs["dilations"] = list(dil)
    else:
        attrs["count_include_pad"] = count_pad
    shape = (2, 3, 7, 12, 11)
    x = np.random.default_rng().standard_normal(shape).astype(np.float32)

    def model_with_output(out_shape):
        graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attrs)], "pool3d",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
        model.ir_version = 9
        return model

    session = ort.InferenceSession(model_with_output(None).SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": x})[0]
    model = model_with_output(want.shape)
    logger = Logger(Severity.ERROR)
    engine = Runtime(logger).deserialize(build_from_onnx(model, BuilderConfig(), logger))
    assert not [la for la in engine.network.layers if la.kind is LayerKind.POOLING
                and len(engine.network.tensors[la.inputs[0]].shape) == 5]
    got = engine.create_execution_context().execute({"x": x})["y"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
