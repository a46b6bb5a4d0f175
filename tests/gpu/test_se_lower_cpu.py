"""An EfficientNet MBConv block (SiLU, squeeze-excitation) through the optimizer and the GPU
lowering, without CUDA: SiLU ``x * sigmoid(x)`` becomes a conv epilogue, the squeeze is one
block-parallel reduction, and the SE multiply is folded into the project convolution's loads.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from backends.gpu.backend import split_segments
from backends.gpu.lower import lower
from engine.builder import Builder, BuilderConfig
from engine.ir.layers import ActivationType, LayerKind
from engine.ir.logger import Logger, Severity
from engine.onnx_parser import parse


def _mbconv(batch: int = 2) -> object:
    rng = np.random.default_rng(0)
    nodes, inits = [], []

    def w(name: str, shape: tuple[int, ...]) -> str:
        inits.append(numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.2, name))
        return name

    def node(op: str, ins: list[str], out: str, **kw) -> str:
        nodes.append(helper.make_node(op, ins, [out], **kw))
        return out

    def silu(x: str, tag: str) -> str:
        return node("Mul", [x, node("Sigmoid", [x], f"sig_{tag}")], f"silu_{tag}")

    e = silu(node("Conv", ["input", w("we", (48, 16, 1, 1)), w("be", (48,))], "expand"), "e")
    d = silu(node("Conv", [e, w("wd", (48, 1, 3, 3)), w("bd", (48,))], "dw", group=48, pads=[1, 1, 1, 1]), "d")
    s = node("GlobalAveragePool", [d], "squeeze")
    s = silu(node("Conv", [s, w("w1", (4, 48, 1, 1)), w("b1", (4,))], "se1"), "s")
    s = node("Sigmoid", [node("Conv", [s, w("w2", (48, 4, 1, 1)), w("b2", (48,))], "se2")], "gate")
    y = node("Mul", [s, d], "excite")  # the exporter writes scale * input
    p = node("Conv", [y, w("wp", (16, 48, 1, 1)), w("bp", (16,))], "project")
    node("Add", [p, "input"], "output")
    graph = helper.make_graph(nodes, "mbconv", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                              [batch, 16, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 16, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_mbconv_lowers_to_fused_launches():
    net = Builder(Logger(Severity.ERROR)).build(parse(_mbconv()), BuilderConfig(fp16=True)).network
    convs = [la for la in net.layers if la.kind is LayerKind.CONVOLUTION]
    silus = [la for la in convs if la.params.activation is not None
             and la.params.activation.type is ActivationType.SILU]
    assert len(silus) == 3, "expand, depthwise and the SE reduce conv take SiLU as their epilogue"
    assert not [la for la in net.layers if la.kind in (LayerKind.ACTIVATION, LayerKind.POINTWISE)]
    segs = split_segments(net, [la.name for la in net.layers])
    assert len(segs) == 1 and segs[0][0]
    low = lower(net, segs[0][1], list(net.outputs))
    kinds = [op.kind for op in low.ops]
    assert kinds.count("gpool") == 1
    # only the input conversion and the output conversion remain generated kernels
    assert kinds.count("gen") == 2, [op.label for op in low.ops]
    scaled = [op for op in low.ops if op.kind == "conv" and op.info.get("scale")]
    assert len(scaled) == 1 and scaled[0].info["geom"].r == 1
    assert scaled[0].info["scale"] in scaled[0].reads


def test_se_multiply_kept_when_its_output_is_read_twice():
    model = _mbconv()
    model.graph.output.append(helper.make_tensor_value_info("excite", TensorProto.FLOAT, [2, 48, 8, 8]))
    net = Builder(Logger(Severity.ERROR)).build(parse(model), BuilderConfig(fp16=True)).network
    segs = split_segments(net, [la.name for la in net.layers])
    low = lower(net, segs[0][1], list(net.outputs))
    assert not [op for op in low.ops if op.kind == "conv" and op.info.get("scale")]
