"""Exact algebra of Shuffle layers (transpose, reshape, transpose in row-major order).

A shuffle is written as a sequence of ops, ``("perm", p)`` or ``("reshape", shape)``, applied to a
known input shape. ``simplify`` rewrites the sequence without changing the data: a permutation
that only moves size-1 dims is a reshape, adjacent permutations compose, adjacent reshapes keep
the last, and a reshape to the current shape or an identity permutation disappears. A sequence
that simplifies to at most perm-reshape-perm is one Shuffle layer again; one that simplifies to
nothing is an identity.
"""

from __future__ import annotations

from engine.ir.layers import ShuffleParams

Op = tuple[str, tuple[int, ...]]


def ops_of(params: ShuffleParams) -> list[Op]:
    ops: list[Op] = []
    if params.first_perm is not None:
        ops.append(("perm", tuple(params.first_perm)))
    if params.reshape is not None:
        ops.append(("reshape", tuple(params.reshape)))
    if params.second_perm is not None:
        ops.append(("perm", tuple(params.second_perm)))
    return ops


def _moves_only_unit_dims(perm: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """True when the dims larger than 1 keep their relative order (row-major data is unchanged)."""
    kept = [p for p in perm if shape[p] != 1]
    return kept == sorted(kept)


def simplify(ops: list[Op], shape: tuple[int, ...]) -> list[Op]:
    """An equivalent, shortest-found op sequence for input ``shape``."""
    ops = list(ops)
    changed = True
    while changed:
        changed = False
        out: list[Op] = []
        cur = tuple(shape)
        for kind, arg in ops:
            if kind == "perm":
                new_shape = tuple(cur[p] for p in arg)
                if _moves_only_unit_dims(arg, cur):
                    kind, arg = "reshape", new_shape
                    changed = True
            else:
                new_shape = tuple(arg)
            if kind == "reshape" and new_shape == cur:
                changed = True
                continue
            if kind == "perm" and arg == tuple(range(len(arg))):
                changed = True
                continue
            if out and out[-1][0] == kind:
                prev = out.pop()
                if kind == "perm":  # transpose(transpose(x, p), q) == transpose(x, p[q])
                    arg = tuple(prev[1][q] for q in arg)
                changed = True
                if kind == "reshape" and new_shape == _shape_before(out, shape):
                    cur = new_shape
                    continue
            out.append((kind, arg))
            cur = new_shape
        ops = out
    return ops


def _shape_before(ops: list[Op], shape: tuple[int, ...]) -> tuple[int, ...]:
    cur = tuple(shape)
    for kind, arg in ops:
        cur = tuple(cur[p] for p in arg) if kind == "perm" else tuple(arg)
    return cur


def to_params(ops: list[Op]) -> ShuffleParams | None:
    """One Shuffle layer for an op sequence of the form [perm] [reshape] [perm], else None."""
    first = reshape = second = None
    i = 0
    if i < len(ops) and ops[i][0] == "perm":
        first = ops[i][1]
        i += 1
    if i < len(ops) and ops[i][0] == "reshape":
        reshape = ops[i][1]
        i += 1
    if i < len(ops) and ops[i][0] == "perm":
        if reshape is None:
            return None  # two perms in a row are composed by simplify; cannot happen
        second = ops[i][1]
        i += 1
    if i != len(ops):
        return None
    return ShuffleParams(first_perm=first, reshape=reshape, second_perm=second)


def is_identity(params: ShuffleParams, shape: tuple[int, ...]) -> bool:
    return not simplify(ops_of(params), shape)
