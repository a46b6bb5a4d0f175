"""A ResNeXt/RegNet-style ONNX network with grouped convolutions (no CUDA needed to build it).

Fresh random, variance-preserving weights and batch-norm statistics, so every tensor is O(1) in
fp16. The grouped convolutions cover the lowering's cases: 4-channel groups (merged in pairs),
8- and 16-channel groups with K/G != C/G, 1x1 and 3x3, stride 2, and a residual Add + ReLU that
the optimizer fuses into a grouped convolution's epilogue.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# (input channels, output channels, kernel, stride, groups) of each grouped convolution, in order
GROUPED = [(64, 64, 3, 1, 16), (64, 32, 1, 1, 2), (32, 64, 3, 2, 4), (64, 64, 3, 1, 8)]


def resnext_model(rng: np.random.Generator, batch: int = 2, size: int = 16) -> onnx.ModelProto:
    """input (N, 32, size, size) -> logits (N, 10) and the last block's features (N, 64, size/2, size/2)."""
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    count = [0]

    def name(base: str) -> str:
        count[0] += 1
        return f"{base}{count[0]}"

    def const(v: np.ndarray) -> str:
        n = name("w")
        inits.append(numpy_helper.from_array(np.asarray(v, np.float32), n))
        return n

    def op(kind: str, ins: list[str], **attrs) -> str:
        out = name(kind.lower())
        nodes.append(helper.make_node(kind, ins, [out], **attrs))
        return out

    def conv_bn(x: str, c: int, k: int, ks: int, stride: int = 1, groups: int = 1) -> str:
        fan_in = c // groups * ks * ks
        w = rng.standard_normal((k, c // groups, ks, ks)) * np.sqrt(2.0 / fan_in)
        y = op("Conv", [x, const(w)], kernel_shape=[ks, ks], strides=[stride, stride], pads=[ks // 2] * 4,
               group=groups)
        u = rng.uniform
        stats = [u(0.5, 1.5, k), u(-0.2, 0.2, k), u(-0.2, 0.2, k), u(0.5, 1.5, k)]  # gamma, beta, mean, var
        return op("BatchNormalization", [y, *map(const, stats)], epsilon=1e-5)

    x = "input"
    a = op("Relu", [conv_bn(x, 32, 64, 1)])
    b = op("Relu", [conv_bn(a, 64, 64, 3, groups=16)])  # 4-channel groups: merged in pairs
    r = op("Relu", [op("Add", [conv_bn(b, 64, 32, 1, groups=2), x])])  # residual into a grouped 1x1
    d = op("Relu", [conv_bn(r, 32, 64, 3, stride=2, groups=4)])  # C/G = 8, K/G = 16, stride 2
    e = op("Relu", [op("Add", [conv_bn(d, 64, 64, 3, groups=8), d])])  # residual into a grouped 3x3
    pooled = op("Flatten", [op("GlobalAveragePool", [e])], axis=1)
    fc = rng.standard_normal((10, 64)) / np.sqrt(64)
    logits = op("Gemm", [pooled, const(fc), const(rng.uniform(-0.1, 0.1, 10))], transB=1)
    nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    nodes.append(helper.make_node("Identity", [e], ["features"]))
    half = size // 2
    graph = helper.make_graph(
        nodes, "resnext_block", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 32, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, [batch, 64, half, half])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
