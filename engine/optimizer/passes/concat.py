"""Concatenation elimination: producers write straight into slices of the concat's output.

The pass also clears the mark of a concat that no longer qualifies (a later rewrite, or a second
optimizer run, changed its producers), so the mark is always true of the final network.

The Concatenation stays in the IR as the owner of the output buffer, marked ``in_place``; the
memory planner gives each input tensor a view of its slice and backends skip the copy. Allowed
only when that aliasing is invisible and simple:

* the output is not a network output (those live in the caller's buffers, not the arena);
* each input is a distinct tensor, produced by a single-output, non-Constant, non-Concatenation
  layer (network inputs and constants live in their own memory);
* the concat is the input's only reader and the input is not a network output;
* every slice is one contiguous block of the row-major output (all dims before the concat axis
  are 1), so a producer writes a plain, densely packed tensor at an offset.
"""

from __future__ import annotations

import math

from engine.ir.layers import ConcatenationParams, LayerKind
from engine.ir.network import Layer, Network
from engine.optimizer.graph import sole_consumer
from engine.optimizer.rewrite import Rewrite

NAME = "ConcatElimination"


def eligible(net: Network, concat: Layer, uses: dict[str, list[Layer]], producers: dict[str, Layer]) -> bool:
    """True when ``concat`` can be (or stay) in-place (see the module docstring)."""
    p = concat.params
    if not isinstance(p, ConcatenationParams):
        return False
    out = net.tensors[concat.outputs[0]]
    if out.name in net.outputs:
        return False
    if math.prod(out.shape[:p.axis % len(out.shape)]) != 1:
        return False
    if len(set(concat.inputs)) != len(concat.inputs):
        return False
    for t in concat.inputs:
        src = producers.get(t)
        if src is None or len(src.outputs) != 1 or src.kind in (LayerKind.CONSTANT, LayerKind.CONCATENATION):
            return False
        if sole_consumer(net, t, uses) is not concat:
            return False
    return True


def run(net: Network) -> list[Rewrite]:
    """Mark every eligible concat in-place; clear the mark where a rewrite since made it invalid."""
    rewrites: list[Rewrite] = []
    uses, producers = net.consumers(), net.producers()
    for concat in list(net.layers):
        p = concat.params
        if not isinstance(p, ConcatenationParams):
            continue
        ok = eligible(net, concat, uses, producers)
        if ok == p.in_place:
            continue
        new = Layer(concat.name, p.replace(in_place=ok), list(concat.inputs), list(concat.outputs),
                    dict(concat.weights), concat.precision, concat.device, list(concat.origin))
        net.replace_layer(concat, new)
        uses, producers = net.consumers(), net.producers()
        rewrites.append(Rewrite(NAME, "eliminate" if ok else "restore", (concat.name,), new.name))
    return rewrites
