"""Strided views for chains of data movement, and removal of the launches nobody reads.

A transpose, a reshape that keeps the element order of its (possibly strided) input, a slice and
a gather at one constant index each map an output coordinate to an input element by a base
offset plus a stride per output dimension. Composed, a chain of them is one such map from the
chain's last tensor to its first materialized slot (the root). Exported attention blocks split
their fused QKV projection with a transpose, three gathers and three reshape + transposes: with
views, each head-major Q, K and V tensor is one copy from the projection's output, and the
intermediate tensors' copies, which no launch reads any more, are dropped (``drop_dead_ops``).

``reshape_strides`` follows the rule numpy uses to reshape without copying: the old dimensions
(size-1 ones aside) are grouped so that each group's product equals that of a group of new
dimensions, and a group can be relabelled only if its old dimensions are contiguous among
themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from backends.gpu.lowering.slots import Lowered, Slot


@dataclass(frozen=True)
class View:
    """Tensor of ``shape`` whose element at coordinates c is ``root``'s element base + sum(c * strides)."""

    root: str
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    base: int = 0

    @staticmethod
    def of(slot: Slot) -> View:
        return View(slot.name, slot.shape, slot.strides, 0)

    def permute(self, perm: Sequence[int] | None) -> View:
        if perm is None:
            return self
        return View(self.root, tuple(self.shape[p] for p in perm), tuple(self.strides[p] for p in perm), self.base)

    def reshape(self, shape: Sequence[int]) -> View | None:
        strides = reshape_strides(self.shape, self.strides, tuple(shape))
        return None if strides is None else View(self.root, tuple(shape), strides, self.base)

    def take(self, axis: int, index: int) -> View:
        """The view at one index of ``axis`` (the axis is dropped)."""
        keep = [d for d in range(len(self.shape)) if d != axis]
        return View(self.root, tuple(self.shape[d] for d in keep), tuple(self.strides[d] for d in keep),
                    self.base + index * self.strides[axis])


def reshape_strides(shape: tuple[int, ...], strides: tuple[int, ...], new_shape: tuple[int, ...]
                    ) -> tuple[int, ...] | None:
    """Strides that give ``new_shape`` the same element order over the same memory, or None."""
    if math.prod(shape) != math.prod(new_shape) or 0 in shape:
        return None
    old = [(d, s) for d, s in zip(shape, strides) if d != 1]
    out = [0] * len(new_shape)
    oi = ni = 0
    while oi < len(old) and ni < len(new_shape):
        op, np_ = old[oi][0], new_shape[ni]
        oj, nj = oi + 1, ni + 1
        while np_ != op:  # the totals are equal, so both groups end inside their shapes
            if np_ < op:
                np_ *= new_shape[nj]
                nj += 1
            else:
                op *= old[oj][0]
                oj += 1
        for k in range(oi, oj - 1):  # the group's old dims must be contiguous among themselves
            if old[k][1] != old[k + 1][0] * old[k + 1][1]:
                return None
        stride = old[oj - 1][1]
        for k in range(nj - 1, ni - 1, -1):
            out[k] = stride
            stride *= new_shape[k]
        oi, ni = oj, nj
    return tuple(out)  # new dims left over are of size 1: any stride (0) will do


def drop_dead_ops(low: Lowered) -> Lowered:
    """Without the generated-kernel launches whose slots no launch reads and the caller does not
    take (repeated until none is left: a chain of copies goes as a whole), and without the slots
    no remaining launch touches. Only 'gen' launches go: they are pure functions of their reads."""
    def root(name: str) -> str:
        s = low.slots.get(name)
        return s.alias if s is not None and s.alias else name

    ops = list(low.ops)
    while True:
        read = {root(n) for n in low.outputs.values()} | {root(r) for op in ops for r in op.reads}
        alive = [op for op in ops if op.kind != "gen" or not op.writes or any(root(w) in read for w in op.writes)]
        if len(alive) == len(ops):
            break
        ops = alive
    used = set(low.inputs) | set(low.outputs.values())
    for op in ops:
        used.update(op.reads)
        used.update(op.writes)
        used.update(a for a in op.args if isinstance(a, str))
    used |= {root(n) for n in used}
    slots = {n: s for n, s in low.slots.items() if n in used}
    return Lowered(slots, ops, low.inputs, low.outputs, low.source, low.conv_layers)
