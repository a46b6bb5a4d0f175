"""Graph queries and small rewrite helpers shared by the passes.

Passes change the network only through ``Network``'s mutators (``replace_layer``,
``replace_uses``, ``remove_layer``, ``sort``, ``prune_tensors``); the helpers here bundle the
checks every fusion needs: a tensor has exactly one reader and is not network I/O, the layers
agree on pinned precision and device, and the fused layer gets a TensorRT-style joined name and
the union of the parts' origins.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.ir.layers import ElementWiseOp, LayerKind, LayerParams
from engine.ir.network import Layer, Network


def is_elementwise(layer: Layer | None, op: ElementWiseOp) -> bool:
    """True when ``layer`` is an element-wise layer computing ``op``."""
    return layer is not None and layer.kind is LayerKind.ELEMENTWISE and layer.params.op is op


def other_input(layer: Layer, tensor: str) -> str | None:
    """The input of a binary layer that is not ``tensor`` (None if both are, or neither)."""
    a, b = layer.inputs
    return b if a == tensor and b != tensor else a if b == tensor and a != tensor else None


def float_constant(producers: dict[str, Layer], tensor: str) -> np.ndarray | None:
    """The value of ``tensor`` when a Constant layer produces it and it is a float array, else None."""
    layer = producers.get(tensor)
    if layer is None or layer.kind is not LayerKind.CONSTANT:
        return None
    value = np.asarray(layer.weights["value"])
    return value if value.dtype.kind == "f" else None


def scalar_constant(producers: dict[str, Layer], tensor: str) -> float | None:
    """The value of ``tensor`` when a Constant layer produces it as a one-element float array."""
    value = float_constant(producers, tensor)
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def sole_consumer(net: Network, tensor: str, uses: dict[str, list[Layer]]) -> Layer | None:
    """The single layer reading ``tensor``, or None when it has other readers or is a network output.

    A network output must stay materialised under its name, so a layer producing one cannot be
    folded into its reader.
    """
    if tensor in net.outputs:
        return None
    readers = uses.get(tensor, [])
    return readers[0] if len(readers) == 1 else None


def pure_permutation(layer: Layer) -> tuple[int, ...] | None:
    """The permutation of a shuffle that only transposes (no reshape, no second permutation but
    the identity), or None."""
    p = layer.params
    if layer.kind is not LayerKind.SHUFFLE or p.reshape is not None or p.first_perm is None:
        return None
    if p.second_perm is not None and tuple(p.second_perm) != tuple(range(len(p.second_perm))):
        return None
    return tuple(p.first_perm)


def same_pins(*layers: Layer) -> bool:
    """True when the layers agree on pinned precision and device, so one layer can stand for all."""
    first = layers[0]
    return all(la.precision == first.precision and la.device == first.device for la in layers[1:])


def merged_origin(*layers: Layer) -> list[str]:
    """The parts' origins in order, each source name once."""
    return list(dict.fromkeys(name for la in layers for name in la.origin))


def free_name(net: Network, name: str, replacing: Sequence[Layer] = ()) -> str:
    """``name`` if no other layer uses it (layers being replaced do not count), else a unique variant."""
    taken = {la.name for la in net.layers if not any(la is r for r in replacing)}
    return name if name not in taken else net.unique_name(name)


def fused_layer(net: Network, parts: Sequence[Layer], params: LayerParams, inputs: Sequence[str],
                outputs: Sequence[str], weights: dict, name: str | None = None) -> Layer:
    """A layer standing for ``parts``: joined name (``conv1 + relu1``), merged origin, shared pins."""
    name = free_name(net, name or " + ".join(p.name for p in parts), parts)
    return Layer(name, params, list(inputs), list(outputs), dict(weights), parts[0].precision,
                 parts[0].device, merged_origin(*parts))


def bypass(net: Network, layer: Layer) -> bool:
    """Remove a single-input layer whose output equals its input; False when I/O names forbid it.

    Readers of the output are redirected to the input. When the output is a network output, the
    producer of the input is made to write the output name instead, which is only possible when
    the input is neither a network input nor a network output itself.
    """
    src, dst = layer.inputs[0], layer.outputs[0]
    if dst not in net.outputs:
        net.replace_uses(dst, src)
        net.remove_layer(layer)
        net.prune_tensors()
        return True
    if src in net.inputs or src in net.outputs:
        return False
    producer = net.producer(src)
    if producer is None:
        return False
    renamed = Layer(producer.name, producer.params, list(producer.inputs),
                    [dst if t == src else t for t in producer.outputs], producer.weights,
                    producer.precision, producer.device, list(producer.origin))
    net.replace_uses(src, dst)
    net.replace_layer([producer, layer], renamed)
    net.sort()
    return True


def is_constant(producers: dict[str, Layer], tensor: str) -> bool:
    layer = producers.get(tensor)
    return layer is not None and layer.kind is LayerKind.CONSTANT


def drop_unused_constants(net: Network, candidates: Sequence[str]) -> None:
    """Remove Constant layers among the producers of ``candidates`` that nothing reads any more."""
    uses = net.consumers()
    for t in dict.fromkeys(candidates):
        layer = net.producer(t)
        if layer is not None and layer.kind is LayerKind.CONSTANT and not uses.get(t) and t not in net.outputs:
            net.remove_layer(layer)
