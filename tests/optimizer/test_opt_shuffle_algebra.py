"""The shuffle algebra behind shuffle elimination is exact: any simplified op sequence moves the
data exactly as the original one (checked on index arrays, so every element is traced)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.ir.layers import ShuffleParams
from engine.optimizer import shuffle_algebra


def apply(ops: list[shuffle_algebra.Op], x: np.ndarray) -> np.ndarray:
    for kind, arg in ops:
        x = np.transpose(x, arg) if kind == "perm" else np.reshape(x, arg)
    return x


def factorizations(n: int, rank: int, draw) -> tuple[int, ...]:
    dims = []
    for _ in range(rank - 1):
        divisors = [d for d in range(1, n + 1) if n % d == 0]
        d = draw(st.sampled_from(divisors))
        dims.append(d)
        n //= d
    dims.append(n)
    return tuple(dims)


@st.composite
def op_sequences(draw):
    shape = tuple(draw(st.lists(st.sampled_from([1, 2, 3]), min_size=1, max_size=4)))
    size = math.prod(shape)
    ops = []
    cur = shape
    for _ in range(draw(st.integers(1, 5))):
        if draw(st.booleans()):
            perm = tuple(draw(st.permutations(range(len(cur)))))
            ops.append(("perm", perm))
            cur = tuple(cur[p] for p in perm)
        else:
            cur = factorizations(size, draw(st.integers(1, 4)), draw)
            ops.append(("reshape", cur))
    return shape, ops


@settings(max_examples=300, deadline=None)
@given(op_sequences())
def test_simplify_preserves_data(case) -> None:
    shape, ops = case
    x = np.arange(math.prod(shape)).reshape(shape)
    simple = shuffle_algebra.simplify(ops, shape)
    assert len(simple) <= len(ops)
    np.testing.assert_array_equal(apply(simple, x), apply(ops, x))
    params = shuffle_algebra.to_params(simple)
    if params is not None:
        np.testing.assert_array_equal(apply(shuffle_algebra.ops_of(params), x), apply(ops, x))


def test_inverse_transposes_cancel() -> None:
    ops = [("perm", (0, 2, 3, 1)), ("perm", (0, 3, 1, 2))]
    assert shuffle_algebra.simplify(ops, (1, 3, 4, 5)) == []


def test_unit_dim_transpose_is_a_reshape() -> None:
    assert shuffle_algebra.is_identity(ShuffleParams(first_perm=(1, 0, 2)), (1, 1, 7))
    assert not shuffle_algebra.is_identity(ShuffleParams(first_perm=(0, 2, 1)), (1, 2, 7))


def test_real_transposes_do_not_vanish() -> None:
    ops = [("perm", (0, 2, 1)), ("reshape", (1, 12)), ("reshape", (1, 4, 3))]
    simple = shuffle_algebra.simplify(ops, (1, 3, 4))
    assert simple == [("perm", (0, 2, 1))]
