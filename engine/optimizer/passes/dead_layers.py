"""Dead-layer removal: layers none of whose outputs reach a network output.

Such layers (unused branches of the model, constants left behind by folding and fusions) cost
time and memory and change no result. Network inputs stay even when unused: the engine's I/O
signature is the model's.
"""

from __future__ import annotations

from engine.ir.network import Network
from engine.optimizer.rewrite import Rewrite

NAME = "DeadLayerRemoval"


def run(net: Network) -> list[Rewrite]:
    live = set(net.outputs)
    dead = []
    for layer in reversed(net.layers):
        if any(t in live for t in layer.outputs):
            live.update(layer.inputs)
        else:
            dead.append(layer)
    for layer in dead:
        net.remove_layer(layer)
    net.prune_tensors()
    return [Rewrite(NAME, "remove", (layer.name,), None) for layer in reversed(dead)]
