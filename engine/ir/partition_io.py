"""The boundary of a group of layers: which tensors it reads from outside and which it must hand out.

One rule, used wherever a placement partition, a GPU segment or a device program is cut out of a
network: the inputs are the tensors its layers read that none of its layers produce (network
inputs or other layers' outputs), in the order the layers first read them; the outputs are the
tensors its layers produce that a layer outside the group reads or that are network outputs, in
the order they are produced. Layers are taken in the network's execution order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from engine.ir.network import Layer, Network


@dataclass(frozen=True)
class PartitionIO:
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def _names(members: Iterable[str | Layer]) -> set[str]:
    return {m.name if isinstance(m, Layer) else str(m) for m in members}


def partition_io(network: Network, members: Iterable[str | Layer]) -> PartitionIO:
    """Boundary inputs and outputs of the layers named by ``members`` (names or layers) of ``network``."""
    inside = _names(members)
    layers = [la for la in network.layers if la.name in inside]
    produced = {t for la in layers for t in la.outputs}
    read_outside = {t for la in network.layers if la.name not in inside for t in la.inputs}
    inputs = dict.fromkeys(t for la in layers for t in la.inputs if t not in produced)
    wanted = read_outside | set(network.outputs)
    outputs = dict.fromkeys(t for la in layers for t in la.outputs if t in wanted)
    return PartitionIO(tuple(inputs), tuple(outputs))


__all__ = ["PartitionIO", "partition_io"]
