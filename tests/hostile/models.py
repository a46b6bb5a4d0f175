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
