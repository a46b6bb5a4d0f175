"""Explicit quantization: turn ONNX Q/DQ annotations into INT8 layers with their scales.

QAT tools export ``x → QuantizeLinear → DequantizeLinear → Conv(W = DequantizeLinear(W_q))``.
TensorRT fuses such patterns into an INT8 convolution whose input scale is the Q/DQ pair's, whose
weights are the int8 W_q with their per-channel scales, and whose output is INT8 when a Q/DQ pair
follows (DG8 "Q/DQ Fusion"). Here that happens in two steps:

1. ``weight_scales_from_onnx`` / ``annotate_weight_scales``: the parser evaluates a
   DequantizeLinear of a constant, so the Conv/Gemm/MatMul layer holds float weights q·s (exact);
   the weight scales are read from the ONNX graph and attached to the layer (by ONNX node name),
   so the builder recovers the exact int8 weights.
2. ``fold``: every activation Q → DQ pair (per-tensor scale) is removed; the float tensor entering
   the Q gets the pair's scale, which the builder uses as the INT8 consumers' input scale and the
   INT8 producer's output scale. A DQ whose output is a network output becomes an Identity, so
   the output keeps its name.

Precision: after folding, a float (non-INT8) consumer of a folded tensor sees the unrounded value
instead of DQ(Q(x)) — at most half a quantization step apart, the same trade TensorRT makes when
it moves Q/DQ nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from engine.ir import int8_annotation as annotation
from engine.ir.layers import IdentityParams, LayerKind
from engine.ir.network import Layer, Network

_WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")


def _node_names(graph: onnx.GraphProto) -> list[str]:
    from engine.onnx_parser import _node_names as parser_names

    return parser_names(graph)


def weight_scales_from_onnx(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """ONNX node name → per-output-channel weight scales, for Conv/Gemm/MatMul whose weights are a
    DequantizeLinear of a constant."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consts = {n.output[0] for n in graph.node if n.op_type == "Constant"}
    producer = {o: n for n in graph.node for o in n.output}
    const_values = {}
    for n in graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    const_values[n.output[0]] = numpy_helper.to_array(a.t)

    def value(name: str) -> np.ndarray | None:
        if name in inits:
            return numpy_helper.to_array(inits[name])
        return const_values.get(name)

    out: dict[str, np.ndarray] = {}
    for node, name in zip(graph.node, _node_names(graph)):
        if node.op_type not in _WEIGHTED_OPS or len(node.input) < 2:
            continue
        dq = producer.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or not (dq.input[0] in inits or dq.input[0] in consts):
            continue
        q = value(dq.input[0])
        scale = value(dq.input[1])
        if q is None or scale is None:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            k, k_axis = q.shape[0], 0
        elif node.op_type == "Gemm":
            if float(attrs.get("alpha", 1.0)) != 1.0:
                continue
            k_axis = 0 if attrs.get("transB", 0) else 1
            k = q.shape[k_axis]
        else:
            if q.ndim != 2:
                continue
            k, k_axis = q.shape[1], 1
        scale = np.asarray(scale, dtype=np.float32).reshape(-1)
        dq_axis = {a.name: onnx.helper.get_attribute_value(a) for a in dq.attribute}.get("axis", 1)
        if scale.size == 1:
            out[name] = np.full(k, scale[0], dtype=np.float32)
        elif scale.size == k and dq_axis % q.ndim == k_axis:
            out[name] = scale.copy()
    return out


def annotate_weight_scales(network: Network, model: onnx.ModelProto) -> int:
    """Attach the Q/DQ weight scales to the layers made from those nodes; returns how many."""
    scales = weight_scales_from_onnx(model)
    done = 0
    for layer in network.layers:
        if layer.kind not in (LayerKind.CONVOLUTION, LayerKind.FULLY_CONNECTED):
            continue
        for origin in layer.origin:
            s = scales.get(origin)
            if s is not None and s.size == layer.weights["kernel"].shape[0]:
                layer.weights[annotation.KERNEL_SCALES] = s
                done += 1
                break
    return done


def has_qdq(network: Network) -> bool:
    return any(la.kind in (LayerKind.QUANTIZE, LayerKind.DEQUANTIZE) for la in network.layers)


@dataclass
class FoldResult:
    network: Network
    scales: dict[str, np.float32]  # float tensor → per-tensor scale of its Q/DQ pair
    folded: int  # Q/DQ pairs removed
    kept: list[str]  # Q or DQ layers left in the network (run as float ↔ int8 conversions), with why


def fold(network: Network) -> FoldResult:
    """Remove activation Q → DQ pairs, recording the scale on the quantized float tensor."""
    net = network.copy()
    scales: dict[str, np.float32] = {}
    kept: list[str] = []
    folded = 0
    for q in [la for la in net.layers if la.kind is LayerKind.QUANTIZE]:
        s = np.asarray(q.weights["scale"], dtype=np.float32).reshape(-1)
        consumers = [la for la in net.layers if q.outputs[0] in la.inputs]
        dqs = [c for c in consumers if c.kind is LayerKind.DEQUANTIZE]
        if s.size != 1:
            kept.append(f"{q.name}: per-channel activation scale (kept as a float → int8 conversion)")
            continue
        x = q.inputs[0]
        if x in scales and scales[x] != s[0]:
            kept.append(f"{q.name}: tensor '{x}' is quantized twice with different scales")
            continue
        pairs = [d for d in dqs if np.asarray(d.weights["scale"], dtype=np.float32).reshape(-1).tolist() == [s[0]]]
        if not pairs:
            kept.append(f"{q.name}: not followed by a DequantizeLinear with the same scale")
            continue
        scales[x] = np.float32(s[0])
        for d in pairs:
            out = d.outputs[0]
            if out in net.outputs:
                scales[out] = np.float32(s[0])  # the output stays quantized if the optimizer merges the identity
                ident = Layer(d.name, IdentityParams(), [x], [out], {}, origin=list(d.origin))
                net.layers[net.layers.index(d)] = ident
                net.refresh_tensor(ident)
            else:
                net.replace_uses(out, x)
                net.remove_layer(d)
            folded += 1
        if q.outputs[0] not in net.outputs and not any(q.outputs[0] in la.inputs for la in net.layers):
            net.remove_layer(q)
    for d in [la for la in net.layers if la.kind is LayerKind.DEQUANTIZE]:
        kept.append(f"{d.name}: DequantizeLinear without a matching QuantizeLinear before it")
    net.prune_tensors()
    net.validate()
    return FoldResult(net, scales, folded, kept)
