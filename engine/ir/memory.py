"""Activation memory planning by tensor liveness.

Every activation that is not a network input, a network output or a constant gets a byte range in
one arena. A tensor is live from the step of the layer that produces it to the step of its last
consumer (inclusive, in the network's execution order); tensors live at the same time never share
bytes, tensors with disjoint lifetimes may. Placement is greedy by size with best fit: buffers are
placed largest first, each into the smallest gap between already placed buffers that are live at
the same time, else above them (Pisarchyk & Lee, "Efficient Memory Management for Deep Neural Net
Inference", 2020). Buffers start on 64-byte boundaries. ``step_lifetimes`` and ``place_buffers``
are the two halves of that rule on plain (reads, writes) steps and byte intervals; the GPU
backend's device arena (``backends.gpu.arena``) plans its launches' buffers with them too, on its
own 256-byte alignment.

Concat elimination: a Concatenation whose parameters say ``in_place`` has its inputs planned as
sub-regions of its output, so producers write straight into the concatenated buffer and the concat
itself does nothing. That is only valid when each input is one contiguous run of bytes inside the
output, i.e. every dimension before the concat axis is 1, and when each input is an arena tensor
that sits in no other concat. Otherwise the planner keeps separate buffers and the concat copies;
``MemoryPlan.concats`` records which case applied and why.

Network inputs, outputs and constants live outside the arena: inputs are the caller's arrays,
outputs are returned as fresh arrays, constants are the engine's (read-only) weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.ir.dtypes import DataType, Precision
from engine.ir.layers import ConcatenationParams, LayerKind
from engine.ir.network import Layer, Network

ALIGNMENT = 64


def _align(n: int, alignment: int = ALIGNMENT) -> int:
    return -(-n // alignment) * alignment


@dataclass(frozen=True)
class Buffer:
    """``nbytes`` that must stay untouched from step ``start`` to step ``end`` (inclusive)."""

    name: str
    nbytes: int
    start: int
    end: int


@dataclass(frozen=True)
class TensorSlot:
    """Where one activation lives: ``offset`` in the arena, for steps ``start``..``end`` inclusive.

    ``parent`` names the concat output this tensor is a sub-region of (None for a buffer of its own).
    """

    name: str
    offset: int
    nbytes: int
    start: int
    end: int
    parent: str | None = None


@dataclass(frozen=True)
class ConcatDecision:
    layer: str
    in_place: bool
    reason: str


@dataclass
class MemoryPlan:
    """The arena layout: ``peak_bytes`` is the arena size a context allocates.

    ``sum_of_tensor_bytes`` is what the same tensors would take with no reuse and no concat
    elimination (each in its own 64-byte aligned buffer), so ``peak_bytes <= sum_of_tensor_bytes``.
    """

    alignment: int = ALIGNMENT
    peak_bytes: int = 0
    sum_of_tensor_bytes: int = 0
    slots: dict[str, TensorSlot] = field(default_factory=dict)
    concats: dict[str, ConcatDecision] = field(default_factory=dict)

    @property
    def eliminated_concats(self) -> set[str]:
        return {name for name, d in self.concats.items() if d.in_place}

    def to_dict(self) -> dict[str, Any]:
        return {
            "alignment": self.alignment,
            "peak_bytes": self.peak_bytes,
            "sum_of_tensor_bytes": self.sum_of_tensor_bytes,
            "tensors": {n: {"offset": s.offset, "nbytes": s.nbytes, "start": s.start, "end": s.end,
                            "parent": s.parent} for n, s in self.slots.items()},
            "concats": {n: {"in_place": d.in_place, "reason": d.reason} for n, d in self.concats.items()},
        }

    def summary(self) -> str:
        saved = 1 - self.peak_bytes / self.sum_of_tensor_bytes if self.sum_of_tensor_bytes else 0.0
        lines = [f"activation arena {self.peak_bytes} bytes for {len(self.slots)} tensors "
                 f"({self.sum_of_tensor_bytes} bytes without reuse, {saved:.0%} saved)"]
        for d in self.concats.values():
            lines.append(f"  concat '{d.layer}': {'eliminated' if d.in_place else 'copies'} ({d.reason})")
        return "\n".join(lines)


def storage_dtype(layer: Layer, declared: DataType) -> DataType:
    """The element type a layer output is stored in between layers.

    This is the precision convention every backend shares (see backends.reference.executor): a
    float output is stored as float16 when its layer computes in FP16 and as float32 otherwise,
    whatever the network declares; a Cast's output and non-float outputs keep the declared type.
    """
    if not declared.is_float or layer.kind is LayerKind.CAST:
        return declared
    return DataType.HALF if (layer.precision or Precision.FP32) is Precision.FP16 else DataType.FLOAT


def storage_dtypes(network: Network) -> dict[str, DataType]:
    """Storage type of every tensor: network inputs as declared, layer outputs per ``storage_dtype``."""
    out = {t: network.tensors[t].dtype for t in network.inputs}
    for layer in network.layers:
        for t in layer.outputs:
            out[t] = storage_dtype(layer, network.tensors[t].dtype)
    return out


def tensor_bytes(network: Network) -> dict[str, int]:
    """Bytes each tensor takes in its storage type."""
    return {t: math.prod(network.tensors[t].shape) * d.itemsize for t, d in storage_dtypes(network).items()}


def arena_tensors(network: Network) -> list[str]:
    """Tensors the arena holds, in production order: layer outputs that are not I/O or constants."""
    io = set(network.inputs) | set(network.outputs)
    return [t for layer in network.layers if layer.kind is not LayerKind.CONSTANT
            for t in layer.outputs if t not in io]


def step_lifetimes(steps: Iterable[tuple[Iterable[str], Iterable[str]]], live_in: Iterable[str] = (),
                   live_out: Iterable[str] = ()) -> dict[str, tuple[int, int]]:
    """First and last step touching each buffer, over ``steps`` of (reads, writes) in execution order.

    A buffer is live from the first step that reads or writes it (step -1 for ``live_in``: staged
    before the first step) to the last step that does (the step after the last for ``live_out``:
    still read once every step has run).
    """
    live: dict[str, tuple[int, int]] = {t: (-1, -1) for t in live_in}
    count = 0
    for step, (reads, writes) in enumerate(steps):
        count = step + 1
        for t in (*reads, *writes):
            first = live[t][0] if t in live else step
            live[t] = (first, step)
    for t in live_out:
        live[t] = (live[t][0] if t in live else count, count)
    return live


def peak_live_bytes(network: Network, nbytes: dict[str, int]) -> int:
    """The most bytes of tensors live at one step (``nbytes`` per tensor; others count 0). Network
    inputs are live from before the first layer, outputs until after the last; every tensor from
    its producer (or the start) to its last reader (or the end).

    No arena can be smaller, and the runtimes release or reuse a tensor's bytes after its last
    reader, so this, not the sum over tensors, is what a plan's size check compares with a limit.
    Linear in layers and tensors: it runs on untrusted plans before anything is placed.
    """
    steps = ((layer.inputs, layer.outputs) for layer in network.layers)
    live = step_lifetimes(steps, live_in=network.inputs, live_out=network.outputs)
    delta = [0] * (len(network.layers) + 3)  # steps run from -1 (inputs staged) to len (outputs read)
    for name, (first, last) in live.items():
        n = nbytes.get(name, 0)
        delta[first + 1] += n
        delta[last + 2] -= n
    peak = running = 0
    for d in delta:
        running += d
        peak = max(peak, running)
    return peak


def lifetimes(network: Network) -> dict[str, tuple[int, int]]:
    """Step of the producer and of the last consumer of every layer output."""
    live = step_lifetimes((layer.inputs, layer.outputs) for layer in network.layers)
    return {t: live[t] for layer in network.layers for t in layer.outputs}


def place_buffers(buffers: Iterable[Buffer], alignment: int = ALIGNMENT, min_bytes: int = 0
                  ) -> tuple[dict[str, int], int]:
    """Offsets for ``buffers`` such that buffers live at the same step never share bytes; the arena size.

    Greedy by decreasing (aligned) size, each into the smallest gap between the placed buffers
    that are live at the same time, else above them. Sizes round up to ``alignment`` (at least
    ``min_bytes`` first); a buffer of size 0 sits at offset 0 and takes no space.
    """
    items = list(buffers)
    sizes = {b.name: _align(max(b.nbytes, min_bytes), alignment) for b in items}
    placed: list[tuple[int, int, int, int]] = []  # offset, size, start, end
    at_step: dict[int, list[int]] = {}  # step -> indices into placed of the buffers live at it
    offsets: dict[str, int] = {}
    peak = 0
    for b in sorted(items, key=lambda b: (-sizes[b.name], b.start, b.name)):
        size = sizes[b.name]
        if size == 0:
            offsets[b.name] = 0
            continue
        # buffers whose lifetime shares a step with this one: found through the steps, not by scanning
        # every placed buffer (that scan made plan loading quadratic in the number of layers)
        near = {i for step in range(b.start, b.end + 1) for i in at_step.get(step, ())}
        overlapping = sorted((placed[i][0], placed[i][1]) for i in near)
        best, best_gap, top = None, None, 0
        for o, sz in overlapping:
            gap = o - top
            if gap >= size and (best_gap is None or gap < best_gap):
                best, best_gap = top, gap
            top = max(top, o + sz)
        offsets[b.name] = top if best is None else best
        placed.append((offsets[b.name], size, b.start, b.end))
        for step in range(b.start, b.end + 1):
            at_step.setdefault(step, []).append(len(placed) - 1)
        peak = max(peak, offsets[b.name] + size)
    return offsets, peak


def _concat_regions(network: Network, arena: set[str], nbytes: dict[str, int], dtypes: dict[str, DataType]
                    ) -> tuple[dict[str, tuple[str, int]], dict[str, ConcatDecision]]:
    """Decide concat elimination; returns ``parent[t] = (concat output, byte offset)`` and decisions."""
    parent: dict[str, tuple[str, int]] = {}
    decisions: dict[str, ConcatDecision] = {}
    for layer in network.layers:
        if layer.kind is not LayerKind.CONCATENATION:
            continue
        params = layer.params
        assert isinstance(params, ConcatenationParams)
        if not params.in_place:
            decisions[layer.name] = ConcatDecision(layer.name, False, "in_place not requested")
            continue
        out = network.tensors[layer.outputs[0]]
        axis = params.axis % len(out.shape) if out.shape else 0
        reason = None
        if layer.outputs[0] not in arena:
            reason = f"output '{out.name}' is a network output, outside the arena"
        elif math.prod(out.shape[:axis]) != 1:
            reason = (f"dims {list(out.shape[:axis])} before axis {axis} are not all 1, "
                      "so the inputs are not contiguous in the output")
        elif len(set(layer.inputs)) != len(layer.inputs):
            reason = "an input appears more than once"
        else:
            for t in layer.inputs:
                if t not in arena:
                    reason = f"input '{t}' is a network input, output or constant, outside the arena"
                elif t in parent:
                    reason = f"input '{t}' already lives inside '{parent[t][0]}'"
                elif dtypes[t] != dtypes[out.name]:
                    reason = (f"input '{t}' is stored as {dtypes[t].value}, the output as "
                              f"{dtypes[out.name].value} (the concat converts)")
                if reason:
                    break
        if reason is None:
            offset = 0
            for t in layer.inputs:
                parent[t] = (out.name, offset)
                offset += nbytes[t]
            reason = "inputs are contiguous sub-regions of the output"
        decisions[layer.name] = ConcatDecision(layer.name, reason.startswith("inputs are"), reason)
    return parent, decisions


def plan_memory(network: Network) -> MemoryPlan:
    """Plan the activation arena of ``network`` (layers in execution order)."""
    names = arena_tensors(network)
    arena = set(names)
    live = lifetimes(network)
    nbytes = tensor_bytes(network)
    parent, decisions = _concat_regions(network, arena, nbytes, storage_dtypes(network))

    def root(t: str) -> tuple[str, int]:
        offset = 0
        while t in parent:
            t, off = parent[t]
            offset += off
        return t, offset

    # One buffer per root; its lifetime covers every tensor placed inside it.
    buffers: dict[str, list[int]] = {}
    for t in names:
        r, _ = root(t)
        s, e = live[t]
        b = buffers.setdefault(r, [s, e])
        b[0], b[1] = min(b[0], s), max(b[1], e)
    offsets, peak = place_buffers(Buffer(r, nbytes[r], s, e) for r, (s, e) in buffers.items())
    slots = {}
    for t in names:
        r, inner = root(t)
        s, e = buffers[r] if t == r else live[t]
        slots[t] = TensorSlot(t, offsets[r] + inner, nbytes[t], s, e, parent[t][0] if t in parent else None)
    return MemoryPlan(ALIGNMENT, peak, sum(_align(nbytes[t]) for t in names), slots, decisions)


def verify(plan: MemoryPlan, network: Network | None = None) -> None:
    """Raise AssertionError unless no two simultaneously live tensors overlap in the arena.

    A tensor may overlap only its enclosing concat outputs (``parent`` chain), and then must lie
    inside them. With ``network``, also checks that each slot's lifetime covers its producer and
    every consumer and that exactly the arena tensors have slots.
    """

    def fail(msg: str) -> None:
        raise AssertionError(f"memory plan: {msg}")

    slots = plan.slots
    if network is not None:
        names = arena_tensors(network)
        if set(names) != set(slots):
            fail(f"slots {sorted(slots)} != arena tensors {sorted(names)}")
        live = lifetimes(network)
        nbytes = tensor_bytes(network)
        for t in names:
            s = slots[t]
            if s.nbytes != nbytes[t]:
                fail(f"'{t}' has {s.nbytes} bytes, its storage type needs {nbytes[t]}")
            if not (s.start <= live[t][0] and live[t][1] <= s.end):
                fail(f"'{t}' slot lives {s.start}..{s.end}, the tensor {live[t][0]}..{live[t][1]}")

    def ancestors(t: str) -> set[str]:
        out = set()
        while slots[t].parent is not None:
            t = slots[t].parent
            if t in out or t not in slots:
                fail(f"bad parent chain at '{t}'")
            out.add(t)
        return out

    anc = {t: ancestors(t) for t in slots}
    for s in slots.values():
        if s.offset < 0 or s.offset + s.nbytes > plan.peak_bytes:
            fail(f"'{s.name}' [{s.offset}, {s.offset + s.nbytes}) is outside the {plan.peak_bytes}-byte arena")
        if s.parent is None and s.offset % plan.alignment:
            fail(f"'{s.name}' offset {s.offset} is not {plan.alignment}-byte aligned")
    items = sorted(slots.values(), key=lambda s: s.offset)
    for i, a in enumerate(items):
        for b in items[i + 1:]:
            if b.offset >= a.offset + a.nbytes:
                break
            if not a.nbytes or not b.nbytes or a.end < b.start or b.end < a.start:
                continue
            if a.name in anc[b.name] or b.name in anc[a.name]:
                outer, inner = (a, b) if a.name in anc[b.name] else (b, a)
                if not (outer.offset <= inner.offset and inner.offset + inner.nbytes <= outer.offset + outer.nbytes):
                    fail(f"'{inner.name}' is not inside its concat output '{outer.name}'")
                continue
            fail(f"'{a.name}' [{a.offset}, {a.offset + a.nbytes}) steps {a.start}..{a.end} overlaps "
                 f"'{b.name}' [{b.offset}, {b.offset + b.nbytes}) steps {b.start}..{b.end}")
