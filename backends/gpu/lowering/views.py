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

Part = tuple[int, int]  # (size, element stride) of one factor of a dimension


@dataclass(frozen=True)
class View:
    """Tensor of ``shape`` whose element at coordinates c is ``root``'s element base + sum(c * strides).

    ``parts``, when set, is per dimension its factors (size, stride), outermost first: a
    dimension that merges others whose strides do not line up (a batch merged with heads) is no
    single stride, but a later reshape may split it again into dimensions that are. Such a
    composite view is not ``affine``: kernels read only affine views, but a chain goes on through
    it. ``strides`` of a composite dimension is meaningless (0).
    """

    root: str
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    base: int = 0
    parts: tuple[tuple[Part, ...], ...] | None = None

    @staticmethod
    def of(slot: Slot) -> View:
        return View(slot.name, slot.shape, slot.strides, 0)

    @property
    def affine(self) -> bool:
        return self.parts is None

    def _parts(self) -> tuple[tuple[Part, ...], ...]:
        return self.parts if self.parts is not None else tuple(((d, s),) for d, s in zip(self.shape, self.strides))

    def permute(self, perm: Sequence[int] | None) -> View:
        if perm is None:
            return self
        parts = None if self.parts is None else tuple(self.parts[p] for p in perm)
        return View(self.root, tuple(self.shape[p] for p in perm), tuple(self.strides[p] for p in perm), self.base,
                    parts)

    def reshape(self, shape: Sequence[int]) -> View | None:
        shape = tuple(shape)
        if self.parts is None:
            strides = reshape_strides(self.shape, self.strides, shape)
            if strides is not None:
                return View(self.root, shape, strides, self.base)
        parts = regroup(self._parts(), shape)
        return None if parts is None else _from_parts(self.root, shape, parts, self.base)

    def slice(self, start: Sequence[int], step: Sequence[int], shape: Sequence[int]) -> View | None:
        """The elements start + i * step of each dim (an affine view with positive steps; else None)."""
        if self.parts is not None or any(k <= 0 for k in step):
            return None
        base = self.base + sum(a * st for a, st in zip(start, self.strides))
        return View(self.root, tuple(shape), tuple(st * k for st, k in zip(self.strides, step)), base)

    def take(self, axis: int, index: int) -> View:
        """The view at one index of ``axis`` (the axis is dropped)."""
        keep = [d for d in range(len(self.shape)) if d != axis]
        base = self.base
        for size, stride in reversed(self._parts()[axis]):  # mixed-radix digits of the index
            base += (index % size) * stride
            index //= size
        parts = None if self.parts is None else tuple(self.parts[d] for d in keep)
        return View(self.root, tuple(self.shape[d] for d in keep), tuple(self.strides[d] for d in keep), base, parts)

    def offset_expr(self, coords: Sequence[str]) -> str:
        """C expression of the root offset at ``coords`` (one per dim), composite dims included."""
        terms = [str(self.base)] if self.base else []
        for c, dim in zip(coords, self._parts()):
            inner = 1
            for size, stride in reversed(dim):
                if size > 1 and stride:
                    digit = c if len(dim) == 1 else f"(({c} / {inner}) % {size})" if inner > 1 else f"({c} % {size})"
                    terms.append(f"(IT){digit} * {stride}")
                inner *= size
        return " + ".join(terms) or "0"


@dataclass(frozen=True)
class Digits:
    """An affine view of a row-major tensor in the tensor's own coordinates: view dim j walks
    tensor dim ``dims[j][0]`` by ``dims[j][1]`` per step (-1: a dim that does not move), from the
    tensor coordinates ``base``. A kernel reading such a view through a concatenation it never
    materialized selects the input by one coordinate and reads each input with its own strides."""

    dims: tuple[tuple[int, int], ...]
    base: tuple[int, ...]

    @staticmethod
    def identity(rank: int) -> Digits:
        return Digits(tuple((j, 1) for j in range(rank)), (0,) * rank)

    def coordinate(self, d: int) -> str:
        """C expression of tensor coordinate ``d`` from the view's output coordinates l0, l1, ..."""
        terms = [str(self.base[d])] * bool(self.base[d])
        terms += [f"(IT)l{j}" if k == 1 else f"(IT)l{j} * {k}" for j, (dj, k) in enumerate(self.dims) if dj == d]
        return " + ".join(terms) or "0"


def root_digits(view: View, root_shape: Sequence[int]) -> Digits | None:
    """``view`` (whose root is row-major of ``root_shape``) as ``Digits``, or None where a view dim
    does not stay within one root dim (a merged or wrapping walk)."""
    if not view.affine or view.base < 0 or any(st < 0 for st in view.strides):
        return None
    rs = [math.prod(root_shape[d + 1:]) for d in range(len(root_shape))]
    base = tuple((view.base // rs[d]) % n for d, n in enumerate(root_shape))
    if sum(b * r for b, r in zip(base, rs)) != view.base:
        return None
    reach = list(base)
    dims = []
    for n, st in zip(view.shape, view.strides):
        if n == 1 or st == 0:
            dims.append((-1, 0))
            continue
        d = next((d for d, size in enumerate(root_shape) if size > 1 and rs[d] <= st < rs[d] * size), None)
        if d is None or st % rs[d]:
            return None
        dims.append((d, st // rs[d]))
        reach[d] += (n - 1) * (st // rs[d])
    if any(r >= n for r, n in zip(reach, root_shape)):
        return None
    return Digits(tuple(dims), base)


def _from_parts(root: str, shape: tuple[int, ...], parts: list[list[Part]], base: int) -> View:
    """A view over ``parts`` per dim: affine when every dim is one factor after merging."""
    merged = tuple(tuple(_merge(dim)) for dim in parts)
    if all(len(dim) <= 1 for dim in merged):
        strides = tuple(dim[0][1] if dim else 0 for dim in merged)
        return View(root, shape, strides, base)
    strides = tuple(dim[0][1] if len(dim) == 1 else 0 for dim in merged)
    return View(root, shape, strides, base, tuple(dim or ((1, 0),) for dim in merged))


def _merge(dim: list[Part]) -> list[Part]:
    """Adjacent factors that are one stride (outer stride = inner stride x inner size) become one."""
    out: list[Part] = []
    for size, stride in dim:
        if size == 1:
            continue
        if out and out[-1][1] == stride * size:
            out[-1] = (out[-1][0] * size, stride)
        else:
            out.append((size, stride))
    return out


def regroup(parts: Sequence[Sequence[Part]], shape: tuple[int, ...]) -> list[list[Part]] | None:
    """The factors of a view, in order, dealt out to the dims of ``shape`` (a factor split where a
    new dim ends inside it and divides it), or None where a new dim would end mid-factor."""
    fine = [p for dim in parts for p in dim if p[0] != 1]
    if math.prod(p[0] for p in fine) != math.prod(shape) or 0 in shape:
        return None
    out: list[list[Part]] = []
    i = 0
    for n in shape:
        dim: list[Part] = []
        need = n
        while need > 1:
            size, stride = fine[i]
            if size <= need:
                if need % size:
                    return None
                dim.append((size, stride))
                need //= size
                i += 1
            else:
                if size % need:
                    return None
                dim.append((need, stride * (size // need)))  # the outer part of the factor
                fine[i] = (size // need, stride)
                need = 1
        out.append(dim)
    return out


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
