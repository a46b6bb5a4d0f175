"""Channel shuffle on the DLA: ShuffleNet's Reshape(4-D -> 5-D) + Transpose + Reshape(5-D -> 4-D).

The DLA's tensors are 4-D, so the rank-5 tensor between the two Shuffle layers has no cube of its
own; the pair as a whole only permutes channels, which the lowering runs as one 1x1 convolution with
0/1 weights (exact in FP16 and INT8). Both layers must then run in the same DLA partition.
"""

from __future__ import annotations

import math

import numpy as np

from engine.ir.layers import LayerKind
from engine.ir.network import Layer, Network

MAX_ELEMENTS = 1 << 24  # index arithmetic on the whole tensor: bounded


def _apply(params, x: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray:
    if params.first_perm is not None:
        x = x.transpose(params.first_perm)
    if params.second_perm is not None:
        mid = [0] * len(out_shape)
        for i, d in enumerate(params.second_perm):
            mid[d] = out_shape[i]
        return x.reshape(mid).transpose(params.second_perm)
    return x.reshape(out_shape)


def channel_shuffle_pair(net: Network, layer: Layer) -> tuple[Layer, Layer, np.ndarray] | None:
    """(first, second, perm) when ``layer`` is either Shuffle of a 4-D -> rank-5 -> 4-D pair whose
    composition moves whole channels: output channel ``j`` is input channel ``perm[j]``."""
    if layer.kind is not LayerKind.SHUFFLE:
        return None
    rank_in = len(net.tensors[layer.inputs[0]].shape)
    rank_out = len(net.tensors[layer.outputs[0]].shape)
    if (rank_in, rank_out) == (4, 5):
        first = layer
        readers = net.consumers().get(layer.outputs[0], [])
        second = readers[0] if len(readers) == 1 else None
    elif (rank_in, rank_out) == (5, 4):
        second = layer
        first = net.producer(layer.inputs[0])
        if first is not None and len(net.consumers().get(first.outputs[0], [])) != 1:
            first = None
    else:
        return None
    if first is None or second is None or LayerKind.SHUFFLE not in (first.kind, second.kind) \
            or first.kind is not LayerKind.SHUFFLE or second.kind is not LayerKind.SHUFFLE:
        return None
    s_in = net.tensors[first.inputs[0]].shape
    s_mid = net.tensors[first.outputs[0]].shape
    s_out = net.tensors[second.outputs[0]].shape
    if len(s_mid) != 5 or len(s_in) != 4 or s_in != s_out or math.prod(s_in) > MAX_ELEMENTS:
        return None
    idx = np.arange(math.prod(s_in)).reshape(s_in)
    y = _apply(second.params, _apply(first.params, idx, s_mid), s_out)
    n, c, h, w = s_in
    perm = y[0, :, 0, 0] // (h * w)
    if not np.array_equal(y, idx[:, perm]):
        return None
    return first, second, perm


def lowering_units(net: Network, names: list[str]) -> list[list[str]]:
    """``names`` as the smallest groups that lower on their own: one layer each, except the two halves
    of a channel shuffle, which lower together (when both are in ``names``)."""
    units: list[list[str]] = []
    done: set[str] = set()
    wanted = set(names)
    for name in names:
        if name in done:
            continue
        pair = channel_shuffle_pair(net, net.layer(name))
        unit = [pair[0].name, pair[1].name] if pair is not None and {pair[0].name, pair[1].name} <= wanted \
            else [name]
        done.update(unit)
        units.append(unit)
    return units


__all__ = ["channel_shuffle_pair", "lowering_units"]
