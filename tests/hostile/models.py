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
