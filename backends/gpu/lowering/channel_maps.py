"""Where each channel of a tensor comes from, through layers that only move channels.

A channel shuffle (reshape to (N, g, C/g, H, W), transpose the group axes, reshape back), a channel
split or slice and a channel concatenation leave every (n, h, w) where it was and permute, select
or join channels. ``channel_sources`` follows such layers back from a tensor to tensors a caller
accepts as sources (the INT8 lowering: int8 results) and says, per channel, which source and which
of its channels holds the value, with the storage types the value passed through on the way.

A chain of reshapes and transposes is proved channel-only on its shapes alone: both ends' axes are
written as mixed-radix digits (an axis of a reshape splits or merges digits; a transpose reorders
axes), and the chain maps N, H and W to themselves exactly when their digits come out in place.
Nothing is evaluated on data, so the proof costs the same at any batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.ir.layers import LayerKind
from engine.ir.network import Layer, Network


@dataclass(frozen=True)
class ChannelSource:
    """Channel ``channel`` of ``tensor`` (a source), stored on the way in ``dtypes`` (source first)."""

    tensor: str
    channel: int
    dtypes: tuple[str, ...]


class _Digits:
    """The digits of a chain of reshapes and transposes; digit ids are shared by both ends."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.size: dict[int, int] = {}
        self.source = [self._new(s) for s in shape]  # the input's axes, refined as digits split
        self.axes = [list(ax) for ax in self.source]

    def _new(self, size: int) -> list[int]:
        if size == 1:
            return []
        d = len(self.size)
        self.size[d] = size
        return [d]

    def _split(self, d: int, hi: int) -> tuple[int, int]:
        """Digit ``d`` as (high, low) digits of sizes hi and size / hi, wherever it stands."""
        a, b = len(self.size), len(self.size) + 1
        self.size[a], self.size[b] = hi, self.size[d] // hi
        for lst in self.source + self.axes:
            if d in lst:
                i = lst.index(d)
                lst[i:i + 1] = [a, b]
        return a, b

    def transpose(self, perm: tuple[int, ...]) -> None:
        self.axes = [self.axes[i] for i in perm]

    def reshape(self, dims: tuple[int, ...]) -> bool:
        flat = [d for ax in self.axes for d in ax]
        new: list[list[int]] = []
        i = 0
        for dim in dims:
            group, prod = [], 1
            while prod < dim:
                if i >= len(flat):
                    return False
                d, s = flat[i], self.size[flat[i]]
                if dim % (prod * s) == 0:
                    group.append(d)
                    prod *= s
                    i += 1
                elif dim % prod == 0 and s % (dim // prod) == 0:  # the axis ends inside this digit
                    a, b = self._split(d, dim // prod)
                    flat[i:i + 1] = [a, b]
                    group.append(a)
                    prod *= self.size[a]
                    i += 1
                else:
                    return False
            if prod != dim:
                return False
            new.append(group)
        if i != len(flat):
            return False
        self.axes = new
        return True


def shuffle_channel_map(in_shape: tuple[int, ...], layers: list[Layer], out_shape: tuple[int, ...]) -> list[int] | None:
    """For 4-D (N, C, H, W) ends of a chain of shuffle layers: the input channel of each output
    channel, where the chain moves channels only; None otherwise."""
    if len(in_shape) != 4 or len(out_shape) != 4:
        return None
    dg = _Digits(in_shape)
    for layer in layers:
        p = layer.params
        if p.first_perm is not None:
            dg.transpose(p.first_perm)
        if p.reshape is not None and not dg.reshape(tuple(p.reshape)):
            return None
        if p.second_perm is not None:
            dg.transpose(p.second_perm)
    if len(dg.axes) != 4 or any(dg.axes[a] != dg.source[a] for a in (0, 2, 3)):
        return None
    src, out = dg.source[1], dg.axes[1]
    if sorted(src) != sorted(out):
        return None
    # channel c of the output: its digits (most significant first) are those of ``out``; the same
    # digit values in ``src``'s order give the input channel
    weights, w = {}, 1
    for d in reversed(src):
        weights[d] = w
        w *= dg.size[d]
    mapping = []
    for c in range(out_shape[1]):
        rest, ch = c, 0
        for d in reversed(out):
            rest, v = divmod(rest, dg.size[d])
            ch += v * weights[d]
        mapping.append(ch)
    return mapping


def channel_sources(net: Network, tensor: str, is_source: Callable[[str], bool], dtype_of: Callable[[str], str],
                    segment: set[str], memo: dict | None = None) -> list[ChannelSource] | None:
    """Per channel of the 4-D ``tensor``, where its value comes from, following concatenations,
    splits, slices and shuffle chains of ``segment`` that move channels only, back to tensors
    ``is_source`` accepts (with the same N, H and W); None where the value is computed on the way."""
    memo = {} if memo is None else memo
    if tensor in memo:
        return memo[tensor]
    memo[tensor] = None  # a cycle cannot occur in a network, but a half-built entry must not be reused
    shape = net.tensors[tensor].shape
    own = dtype_of(tensor)
    if is_source(tensor):
        out = [ChannelSource(tensor, c, (own,)) for c in range(shape[1])] if len(shape) == 4 else None
    else:
        out = _through_producer(net, tensor, is_source, dtype_of, segment, memo)
        if out is not None:
            out = [ChannelSource(s.tensor, s.channel, (*s.dtypes, own)) for s in out]
    memo[tensor] = out
    return out


def _through_producer(net: Network, tensor: str, is_source: Callable[[str], bool], dtype_of: Callable[[str], str],
                      segment: set[str], memo: dict) -> list[ChannelSource] | None:
    p = net.producer(tensor)
    shape = net.tensors[tensor].shape
    if p is None or p.name not in segment or len(shape) != 4:
        return None

    def rest(x: str) -> list[ChannelSource] | None:
        xs = net.tensors[x].shape
        if len(xs) != 4 or (xs[0], xs[2], xs[3]) != (shape[0], shape[2], shape[3]):
            return None
        return channel_sources(net, x, is_source, dtype_of, segment, memo)

    kind = p.kind
    if kind is LayerKind.CONCATENATION and p.params.axis % 4 == 1:
        parts = [rest(x) for x in p.inputs]
        return None if any(q is None for q in parts) else [s for q in parts for s in q]
    if kind is LayerKind.SPLIT and p.params.axis % 4 == 1:
        src = rest(p.inputs[0])
        at = sum(p.params.sizes[:p.outputs.index(tensor)])
        return None if src is None else src[at:at + shape[1]]
    if kind is LayerKind.SLICE:
        q = p.params
        xs = net.tensors[p.inputs[0]].shape
        if any((q.start[a], q.size[a], q.step[a]) != (0, xs[a], 1) for a in (0, 2, 3)):
            return None
        src = rest(p.inputs[0])
        return None if src is None else [src[q.start[1] + i * q.step[1]] for i in range(q.size[1])]
    if kind is LayerKind.SHUFFLE:
        chain = [p]
        while len(net.tensors[chain[0].inputs[0]].shape) != 4:  # back to the 4-D tensor the chain starts at
            before = net.producer(chain[0].inputs[0])
            if before is None or before.kind is not LayerKind.SHUFFLE or before.name not in segment:
                return None
            chain.insert(0, before)
        x = chain[0].inputs[0]
        mapping = shuffle_channel_map(net.tensors[x].shape, chain, shape)
        src = None if mapping is None else rest(x)
        if src is None:
            return None
        mid = tuple(dtype_of(la.outputs[0]) for la in chain[:-1])  # the 5-D tensors between, as stored
        return [ChannelSource(src[c].tensor, src[c].channel, (*src[c].dtypes, *mid)) for c in mapping]
    return None
