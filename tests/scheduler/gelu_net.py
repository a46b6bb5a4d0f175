"""A small ONNX CNN whose middle layer (an Erf-based GELU) no DLA core runs: conv, relu, conv, GELU,
conv, relu, conv -- for the policies' GPU-fallback and hand-off tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def gelu_net(path, channels: int = 32, hw: int = 56, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    inits = []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def weight(name: str, shape) -> str:
        return const(name, rng.standard_normal(shape) * 0.1)

    c = channels
    nodes = [helper.make_node("Conv", ["x", weight("w1", (c, 3, 3, 3))], ["a0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a0"], ["a1"]),
             helper.make_node("Conv", ["a1", weight("w2", (c, c, 3, 3))], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Div", ["a", const("sq2", 1.4142135)], ["b"]),
             helper.make_node("Erf", ["b"], ["e"]),
             helper.make_node("Add", ["e", const("one", 1.0)], ["f"]),
             helper.make_node("Mul", ["a", "f"], ["g"]),
             helper.make_node("Mul", ["g", const("half", 0.5)], ["h"]),
             helper.make_node("Conv", ["h", weight("w3", (c, c, 3, 3))], ["i"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["i"], ["j"]),
             helper.make_node("Conv", ["j", weight("w4", (c, c, 3, 3))], ["y"], pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "gelu_net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, hw, hw])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return str(path)
