"""The mapping of a row-major batched product onto cuBLAS's column-major strided-batched GEMM
(backends/gpu/kernels/cublas.py), checked without a GPU: ``reference_gemm`` replays the call on
flat memory the way cuBLAS defines it, and must equal numpy's matmul of the logical operands."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

from backends.gpu.kernels import cublas


def _operand(rng: np.random.Generator, shape: tuple[int, ...], strides: tuple[int, ...]
             ) -> tuple[np.ndarray, np.ndarray]:
    """(flat buffer, logical view) for element ``strides`` over ``shape``."""
    span = 1 + sum((d - 1) * s for d, s in zip(shape, strides))
    flat = rng.standard_normal(span)
    return flat, as_strided(flat, shape, tuple(8 * s for s in strides))


def _row_major(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


CASES = [
    # batch, m, n, k, A layout, B layout ("rm": row-major, "cm": transposed storage, "bc": batch broadcast)
    ((), 5, 7, 3, "rm", "rm"),
    ((4,), 6, 8, 16, "rm", "rm"),
    ((4,), 6, 8, 16, "rm", "cm"),  # Q·K^T: B read through a transpose
    ((4,), 6, 8, 16, "cm", "rm"),
    ((2, 3), 9, 5, 4, "rm", "cm"),  # two batch dims that collapse
    ((2, 3), 9, 5, 4, "rm", "bc"),  # B shared by every batch
    ((3,), 1, 7, 5, "rm", "rm"),  # a single row
    ((3,), 4, 1, 5, "rm", "cm"),  # a single column
]


@pytest.mark.parametrize("batch,m,n,k,la,lb", CASES)
def test_plan_matches_numpy(batch, m, n, k, la, lb) -> None:
    rng = np.random.default_rng(hash((batch, m, n, k, la, lb)) % 2**32)

    def strides(rows: int, cols: int, layout: str) -> tuple[int, ...]:
        if layout == "bc":
            return (0,) * len(batch) + (cols, 1)
        mat = (cols, 1) if layout == "rm" else (1, rows)
        return tuple(s * rows * cols for s in _row_major(batch)) + mat

    sa, sb = strides(m, k, la), strides(k, n, lb)
    fa, a = _operand(rng, (*batch, m, k), sa)
    fb, b = _operand(rng, (*batch, k, n), sb)
    plan = cublas.plan_gemm(batch, m, n, k, sa, sb)
    assert plan is not None
    got = cublas.reference_gemm(plan, fa, fb).reshape(*batch, m, n)
    np.testing.assert_allclose(got, np.matmul(a, b), rtol=1e-12, atol=1e-12)


def test_strides_one_call_cannot_express_are_refused() -> None:
    # A's batch dims do not collapse to one stride: (2, 3) batches with an outer stride that skips memory
    assert cublas.plan_gemm((2, 3), 4, 4, 4, (100, 16, 4, 1), (0, 0, 4, 1)) is None
    # a broadcast over one batch dim only
    assert cublas.plan_gemm((2, 3), 4, 4, 4, (0, 16, 4, 1), (48, 16, 4, 1)) is None
    # neither dimension of the matrix is contiguous
    assert cublas.plan_gemm((), 4, 4, 4, (8, 2), (4, 1)) is None
