"""Small ONNX models for the hostile-input tests (seeded random weights)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_model(batch: int = 1, seed: int = 0) -> onnx.ModelProto:
    """conv3x3(3->8)+ReLU, maxpool 2x2: x (N,3,8,8) -> y (N,8,4,4)."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=(8,)).astype(np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2])]
    g = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 8, 4, 4])], [w, b])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def mlp_model(seed: int = 1) -> onnx.ModelProto:
    """Gemm(transB=1) + Relu + Gemm + Softmax: x (2, 16) -> p (2, 5)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(size=(12, 16)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(12,)).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.normal(size=(12, 5)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.normal(size=(5,)).astype(np.float32), "b2")]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1, alpha=1.0, beta=1.0),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["z"], name="fc2"),
             helper.make_node("Softmax", ["z"], ["p"], name="softmax", axis=1)]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
                          [helper.make_tensor_value_info("p", TensorProto.FLOAT, [2, 5])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def mixed_model(seed: int = 2) -> onnx.ModelProto:
    """Conv, Resize (nearest x2), Concat, Transpose, ReduceMean, Add, Reshape, Sigmoid."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 2, 1, 1)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
             numpy_helper.from_array(rng.normal(size=(1, 8, 1, 1)).astype(np.float32), "bias"),
             numpy_helper.from_array(np.array([1, -1], np.int64), "flat")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", group=1, strides=[1, 1]),
             helper.make_node("Resize", ["c", "", "scales"], ["up"], name="resize", mode="nearest"),
             helper.make_node("Resize", ["x", "", "scales"], ["upx"], name="resize_x", mode="linear"),
             helper.make_node("Concat", ["up", "upx", "upx"], ["cat"], name="concat", axis=1),
             helper.make_node("Add", ["cat", "bias"], ["a"], name="add"),
             helper.make_node("Transpose", ["a"], ["t"], name="transpose", perm=[0, 1, 3, 2]),
             helper.make_node("ReduceMean", ["t"], ["m"], name="mean", axes=[2], keepdims=1),
             helper.make_node("Sigmoid", ["m"], ["s"], name="sigmoid"),
             helper.make_node("Reshape", ["s", "flat"], ["y"], name="reshape")]
    g = helper.make_graph(nodes, "mixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 48])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def ops_model(seed: int = 3) -> onnx.ModelProto:
    """Many converters in one graph: Pad, AveragePool, BatchNormalization, ConvTranspose, Slice, Gather,
    Split, Clip, LeakyRelu, GlobalAveragePool, Flatten, MatMul, Unsqueeze, Squeeze, Cast, Mul."""
    rng = np.random.default_rng(seed)

    def arr(name, a):
        return numpy_helper.from_array(np.asarray(a), name)

    inits = [arr("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)),
             arr("bn_s", rng.uniform(0.5, 1.5, 4).astype(np.float32)),
             arr("bn_b", rng.normal(size=4).astype(np.float32)),
             arr("bn_m", rng.normal(size=4).astype(np.float32)), arr("bn_v", rng.uniform(0.5, 2, 4).astype(np.float32)),
             arr("wt", rng.normal(size=(4, 3, 2, 2)).astype(np.float32)),
             arr("st", np.array([0, 0], np.int64)), arr("en", np.array([6, 6], np.int64)),
             arr("ax", np.array([2, 3], np.int64)), arr("idx", np.array([2, 0, 1], np.int64)),
             arr("split", np.array([1, 2], np.int64)), arr("lo", np.array(-0.5, np.float32)),
             arr("hi", np.array(0.5, np.float32)), arr("mm", rng.normal(size=(2, 5)).astype(np.float32)),
             arr("uax", np.array([1], np.int64)), arr("k", np.array([2.0], np.float32))]
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"], name="pad", mode="reflect"),
        helper.make_node("AveragePool", ["p"], ["ap"], name="avgpool", kernel_shape=[3, 3], strides=[1, 1],
                         count_include_pad=0),
        helper.make_node("BatchNormalization", ["ap", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"], name="bn", epsilon=1e-5),
        helper.make_node("ConvTranspose", ["bn", "wt"], ["ct"], name="deconv", strides=[2, 2]),
        helper.make_node("Slice", ["ct", "st", "en", "ax"], ["sl"], name="slice"),
        helper.make_node("Gather", ["sl", "idx"], ["g"], name="gather", axis=1),
        helper.make_node("Split", ["g", "split"], ["s0", "s1"], name="split", axis=1),
        helper.make_node("Clip", ["s1", "lo", "hi"], ["cl"], name="clip"),
        helper.make_node("LeakyRelu", ["cl"], ["lr"], name="leaky", alpha=0.2),
        helper.make_node("GlobalAveragePool", ["lr"], ["gp"], name="gap"),
        helper.make_node("Flatten", ["gp"], ["fl"], name="flatten", axis=1),
        helper.make_node("MatMul", ["fl", "mm"], ["mmo"], name="matmul"),
        helper.make_node("Unsqueeze", ["mmo", "uax"], ["un"], name="unsqueeze"),
        helper.make_node("Squeeze", ["un", "uax"], ["sq"], name="squeeze"),
        helper.make_node("Cast", ["sq"], ["cf"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["cf", "k"], ["y"], name="mul"),
        helper.make_node("ReduceMax", ["s0"], ["y2"], name="rmax", axes=[2, 3], keepdims=0),
    ]
    g = helper.make_graph(nodes, "ops", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5]),
                           helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 1])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
