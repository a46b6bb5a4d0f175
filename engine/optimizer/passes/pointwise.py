"""Pointwise-chain fusion (TensorRT's PointWiseFusion): maximal chains of Activation, Unary,
arithmetic ElementWise, Scale and Pointwise layers become one Pointwise layer.

A chain follows one running value: each next layer is the only reader of the previous output
(which is not a network output) and reads it exactly once. ElementWise steps take their other
operand from any tensor (it becomes an extra input of the fused layer; it was already an input
of the replaced layer, so the order stays valid) or from a Constant layer (its value becomes a
weight of the fused layer, ``operand_weight``). A Scale ``(x*s + t) ** p`` becomes the steps
prod, sum, pow, its coefficients reshaped to broadcast along its channel axis. Only float
tensors are fused; comparisons, logical ops and NOT are not pointwise arithmetic. A chain needs
at least two layers to be worth a fused kernel.
"""

from __future__ import annotations

import numpy as np

from engine.ir.layers import (
    ActivationParams,
    ElementWiseParams,
    LayerKind,
    PointwiseParams,
    PointwiseStep,
    ScaleMode,
    ScaleParams,
    UnaryOp,
    UnaryParams,
)
from engine.ir.network import Layer, Network
from engine.optimizer.graph import drop_unused_constants, fused_layer, same_pins, sole_consumer
from engine.optimizer.rewrite import Rewrite

NAME = "PointWiseFusion"


def eligible(net: Network, layer: Layer) -> bool:
    if len(layer.outputs) != 1 or not net.tensors[layer.outputs[0]].dtype.is_float:
        return False
    p = layer.params
    if isinstance(p, ActivationParams | PointwiseParams | ScaleParams):
        return True
    if isinstance(p, UnaryParams):
        return p.op is not UnaryOp.NOT
    if isinstance(p, ElementWiseParams):
        return not (p.op.is_comparison or p.op.is_logical)
    return False


class _Builder:
    """Accumulates steps, extra inputs and weights of the fused layer."""

    def __init__(self, net: Network, primary: str) -> None:
        self.net = net
        self.producers = net.producers()
        self.inputs = [primary]
        self.weights: dict[str, np.ndarray] = {}
        self.steps: list[PointwiseStep] = []
        self.absorbed: list[str] = []

    def _weight(self, value: np.ndarray) -> str:
        key = f"w{len(self.weights)}"
        self.weights[key] = value
        return key

    def operand(self, tensor: str) -> dict:
        src = self.producers.get(tensor)
        if src is not None and src.kind is LayerKind.CONSTANT and tensor not in self.net.outputs:
            self.absorbed.append(tensor)
            return {"operand_weight": self._weight(src.weights["value"])}
        if tensor not in self.inputs[1:]:
            self.inputs.append(tensor)
        return {"operand_input": self.inputs.index(tensor, 1)}

    def add(self, layer: Layer, value: str) -> None:
        """Append ``layer``'s steps; ``value`` is the tensor carrying the chain's running value."""
        p = layer.params
        if isinstance(p, ActivationParams):
            a = p.activation
            self.steps.append(PointwiseStep("activation", a.type.value, a.alpha, a.beta))
        elif isinstance(p, UnaryParams):
            self.steps.append(PointwiseStep("unary", p.op.value))
        elif isinstance(p, ElementWiseParams):
            reverse = layer.inputs[1] == value
            other = layer.inputs[0] if reverse else layer.inputs[1]
            self.steps.append(PointwiseStep("elementwise", p.op.value, reverse=reverse, **self.operand(other)))
        elif isinstance(p, ScaleParams):
            self._add_scale(layer, p)
        elif isinstance(p, PointwiseParams):
            for s in p.steps:
                extra: dict = {}
                if s.operand_input is not None:
                    extra = self.operand(layer.inputs[s.operand_input])
                elif s.operand_weight is not None:
                    extra = {"operand_weight": self._weight(layer.weights[s.operand_weight])}
                self.steps.append(PointwiseStep(s.kind, s.op, s.alpha, s.beta, reverse=s.reverse, **extra))

    def _add_scale(self, layer: Layer, p: ScaleParams) -> None:
        x = self.net.tensors[layer.inputs[0]]
        if p.mode is ScaleMode.CHANNEL:
            axis = p.channel_axis % len(x.shape)
            shape: tuple[int, ...] = (x.shape[axis],) + (1,) * (len(x.shape) - 1 - axis)
        elif p.mode is ScaleMode.UNIFORM:
            shape = ()
        else:
            shape = p.coefficient_shape(x.info)
        for name, op in (("scale", "prod"), ("shift", "sum"), ("power", "pow")):
            w = layer.weights.get(name)
            if w is not None:
                key = self._weight(np.ascontiguousarray(w.reshape(shape)))
                self.steps.append(PointwiseStep("elementwise", op, operand_weight=key))


def _drop_broadcast_ones(net: Network, builder: _Builder, out_shape: tuple[int, ...]) -> None:
    """Remove products by all-ones weights that only broadcast (ONNX Expand of a run-time tensor,
    ``x / expand(norm)``): the chain's other inputs and weights reach the output shape without
    them, and x * 1 is x exactly. Such a weight has the output's full size (Swin V2's cosine
    attention carried 600 K ones a block at batch 2)."""
    shapes = [net.tensors[t].shape for t in builder.inputs]
    for i in reversed(range(len(builder.steps))):
        st = builder.steps[i]
        w = builder.weights.get(st.operand_weight) if st.operand_weight is not None else None
        if st.kind != "elementwise" or st.op != "prod" or w is None or w.dtype.kind != "f" or not np.all(w == 1):
            continue
        rest = [v.shape for k, v in builder.weights.items() if k != st.operand_weight]
        if tuple(np.broadcast_shapes(*shapes, *rest)) == tuple(out_shape):
            del builder.steps[i]
            del builder.weights[st.operand_weight]


def _primary(net: Network, head: Layer) -> str:
    """The input carrying the chain's value into its first layer."""
    if head.kind is not LayerKind.ELEMENTWISE:
        return head.inputs[0]
    producers = net.producers()
    out_shape = net.tensors[head.outputs[0]].shape
    for t in head.inputs:  # prefer a computed full-size operand; constants become weights
        src = producers.get(t)
        if net.tensors[t].shape == out_shape and (src is None or src.kind is not LayerKind.CONSTANT):
            return t
    return head.inputs[0]


def _next(net: Network, layer: Layer, uses: dict[str, list[Layer]]) -> Layer | None:
    value = layer.outputs[0]
    reader = sole_consumer(net, value, uses)
    if reader is None or not eligible(net, reader) or not same_pins(layer, reader):
        return None
    if reader.inputs.count(value) != 1:
        return None
    if reader.kind is not LayerKind.ELEMENTWISE and reader.inputs[0] != value:
        return None
    return reader


def run(net: Network) -> list[Rewrite]:
    rewrites: list[Rewrite] = []
    claimed: set[str] = set()
    for head in list(net.layers):
        if head.name in claimed or not any(la is head for la in net.layers) or not eligible(net, head):
            continue
        uses = net.consumers()
        chain = [head]
        while (nxt := _next(net, chain[-1], uses)) is not None:
            chain.append(nxt)
        claimed.update(la.name for la in chain)
        if len(chain) < 2:
            continue
        value = _primary(net, head)
        builder = _Builder(net, value)
        if head.kind is LayerKind.ELEMENTWISE and head.inputs[0] == head.inputs[1]:
            builder.inputs.append(value)  # x op x: the operand is the primary input again
            p = head.params
            builder.steps.append(PointwiseStep("elementwise", p.op.value, operand_input=1))  # type: ignore[attr-defined]
        else:
            builder.add(head, value)
        for prev, layer in zip(chain, chain[1:]):
            builder.add(layer, prev.outputs[0])
        _drop_broadcast_ones(net, builder, net.tensors[chain[-1].outputs[0]].shape)
        params = PointwiseParams(tuple(builder.steps))
        name = "PWN(" + ", ".join(la.name for la in chain) + ")"
        new = fused_layer(net, chain, params, builder.inputs, chain[-1].outputs, builder.weights, name=name)
        net.replace_layer(chain, new)
        drop_unused_constants(net, builder.absorbed)
        rewrites.append(Rewrite(NAME, "fuse", tuple(la.name for la in chain), new.name))
    return rewrites
