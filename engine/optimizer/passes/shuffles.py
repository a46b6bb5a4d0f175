"""Reshape/transpose elimination (ShuffleShuffleFusion and identity-shuffle erasure).

A Shuffle whose only reader is another Shuffle composes with it when the combined
transpose/reshape sequence simplifies (``shuffle_algebra``) to one perm-reshape-perm Shuffle;
a composed or original Shuffle that moves no data is removed. Both are exact: only the index
mapping changes form, never a value.

Not done: absorbing a flattening reshape into a following FullyConnected. FullyConnected
contracts the last axis only, so FC on (N, C, 1, 1) contracts the trailing 1 and is not FC on
the flattened (N, C); the IR has no flatten-first form of FC, so the reshape must stay.
"""

from __future__ import annotations

from engine.ir.layers import LayerKind, ShuffleParams
from engine.ir.network import Network
from engine.optimizer import shuffle_algebra
from engine.optimizer.graph import bypass, fused_layer, same_pins, sole_consumer
from engine.optimizer.passes.identity import is_noop
from engine.optimizer.rewrite import Rewrite

NAME = "ShuffleShuffleFusion"


def _compose_once(net: Network) -> Rewrite | None:
    uses = net.consumers()
    for first in net.layers:
        if first.kind is not LayerKind.SHUFFLE:
            continue
        second = sole_consumer(net, first.outputs[0], uses)
        if second is None or second.kind is not LayerKind.SHUFFLE or not same_pins(first, second):
            continue
        p1, p2 = first.params, second.params
        assert isinstance(p1, ShuffleParams) and isinstance(p2, ShuffleParams)
        shape = net.tensors[first.inputs[0]].shape
        ops = shuffle_algebra.simplify(shuffle_algebra.ops_of(p1) + shuffle_algebra.ops_of(p2), shape)
        params = shuffle_algebra.to_params(ops)
        if params is None:
            continue
        new = fused_layer(net, [first, second], params, first.inputs, second.outputs, {})
        net.replace_layer([first, second], new)
        return Rewrite(NAME, "fuse", (first.name, second.name), new.name)
    return None


def run(net: Network) -> list[Rewrite]:
    rewrites: list[Rewrite] = []
    while (rewrite := _compose_once(net)) is not None:
        rewrites.append(rewrite)
    for layer in list(net.layers):
        if layer.kind is LayerKind.SHUFFLE and any(la is layer for la in net.layers) and is_noop(net, layer) \
                and bypass(net, layer):
            rewrites.append(Rewrite("ShuffleErasure", "remove", (layer.name,), None))
    return rewrites
