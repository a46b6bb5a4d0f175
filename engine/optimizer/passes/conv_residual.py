"""Convolution + residual add (+ activation) fusion (TensorRT's ConvEltwiseSumFusion).

Pattern: a Convolution without epilogue whose only reader is an ElementWise SUM with another
tensor of exactly the output's shape and dtype (no broadcasting), optionally followed by the
SUM's only reader, an Activation. Result: one Convolution with ``residual=True``, the other
tensor as second input and the activation in the epilogue:
``act(conv(x) + b + r)``, which is what the unfused layers compute.

When both SUM operands are eligible convolutions (a projection shortcut), the one later in the
execution order is fused, so the other operand is already computed when the fused layer runs.
The fused layer takes the position of the last replaced layer; every input it reads was an input
of one of the replaced layers, so the order stays valid.
"""

from __future__ import annotations

from engine.ir.layers import ConvolutionParams, ElementWiseOp, ElementWiseParams, LayerKind
from engine.ir.network import Layer, Network
from engine.optimizer.graph import fused_layer, same_pins, sole_consumer
from engine.optimizer.rewrite import Rewrite

NAME = "ConvEltwiseSumFusion"


def _plain_conv(layer: Layer | None) -> bool:
    if layer is None or layer.kind is not LayerKind.CONVOLUTION:
        return False
    p = layer.params
    assert isinstance(p, ConvolutionParams)
    return p.activation is None and not p.residual


def _match(net: Network, add: Layer, uses: dict[str, list[Layer]],
           producers: dict[str, Layer], order: dict[str, int]) -> tuple[Layer, str] | None:
    """The convolution to fuse into ``add`` and the residual tensor, or None."""
    a, b = add.inputs
    if a == b:
        return None
    out = net.tensors[add.outputs[0]]
    candidates = []
    for mine, other in ((a, b), (b, a)):
        conv = producers.get(mine)
        if not _plain_conv(conv) or sole_consumer(net, mine, uses) is not add or not same_pins(conv, add):
            continue
        if net.tensors[mine].info != out.info or net.tensors[other].info != out.info:
            continue
        candidates.append((order[conv.name], conv, other))
    if not candidates:
        return None
    _, conv, other = max(candidates, key=lambda c: c[0])
    return conv, other


def run(net: Network) -> list[Rewrite]:
    rewrites: list[Rewrite] = []
    for add in list(net.layers):
        if not any(la is add for la in net.layers):
            continue
        p = add.params
        if not isinstance(p, ElementWiseParams) or p.op is not ElementWiseOp.SUM:
            continue
        uses, producers = net.consumers(), net.producers()
        order = {la.name: i for i, la in enumerate(net.layers)}
        match = _match(net, add, uses, producers, order)
        if match is None:
            continue
        conv, residual = match
        parts = [conv, add]
        act = sole_consumer(net, add.outputs[0], uses)
        spec = None
        if act is not None and act.kind is LayerKind.ACTIVATION and same_pins(act, add):
            parts.append(act)
            spec = act.params.activation  # type: ignore[attr-defined]
        params = conv.params.replace(residual=True, activation=spec)
        new = fused_layer(net, parts, params, [conv.inputs[0], residual], parts[-1].outputs, conv.weights)
        net.replace_layer(parts, new)
        net.sort()
        rewrites.append(Rewrite(NAME, "fuse", tuple(la.name for la in parts), new.name))
    return rewrites
