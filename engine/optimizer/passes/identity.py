"""Identity removal: Identity layers (Dropout and other no-ops the parser maps to Identity), Cast
to the dtype the tensor already has, and Shuffles that leave the data unchanged.

Readers are redirected to the layer's input. A no-op that produces a network output from a
network input (or from another output) stays: both names are part of the engine's I/O.
"""

from __future__ import annotations

from engine.ir.layers import CastParams, LayerKind, ShuffleParams
from engine.ir.network import Layer, Network
from engine.optimizer import shuffle_algebra
from engine.optimizer.graph import bypass
from engine.optimizer.rewrite import Rewrite

NAME = "IdentityRemoval"


def is_noop(net: Network, layer: Layer) -> bool:
    if len(layer.inputs) != 1 or len(layer.outputs) != 1:
        return False
    src = net.tensors[layer.inputs[0]]
    if layer.kind is LayerKind.IDENTITY:
        return True
    if layer.kind is LayerKind.CAST:
        assert isinstance(layer.params, CastParams)
        return layer.params.to == src.dtype
    if layer.kind is LayerKind.SHUFFLE:
        assert isinstance(layer.params, ShuffleParams)
        return shuffle_algebra.is_identity(layer.params, src.shape)
    return False


def run(net: Network) -> list[Rewrite]:
    rewrites: list[Rewrite] = []
    for layer in list(net.layers):
        still_there = any(la is layer for la in net.layers)
        if still_there and is_noop(net, layer) and bypass(net, layer):
            rewrites.append(Rewrite(NAME, "remove", (layer.name,), None))
    return rewrites
