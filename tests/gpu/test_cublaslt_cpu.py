"""The cuBLASLt fused GEMM's operand mapping, checked without a GPU: ``reference_lt`` rebuilds
the column-major operands from ``LtGemm.layouts`` alone, so a wrong layout, transpose or bias
direction shows up against the row-major formula the convolution means."""

from __future__ import annotations

import numpy as np
import pytest

from backends.gpu.kernels.cublaslt import LtGemm, fusable, reference_lt


@pytest.mark.parametrize("m,n,k", [(7, 16, 24), (33, 8, 40), (1, 64, 8)])
@pytest.mark.parametrize("act", [0, 1])
@pytest.mark.parametrize("bias,residual", [(True, True), (True, False), (False, True), (False, False)])
def test_layouts_compute_the_row_major_product_with_its_epilogue(m, n, k, act, bias, residual) -> None:
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    x = rng.standard_normal((m, k))
    w = rng.standard_normal((n, k))
    b = rng.standard_normal(n) if bias else None
    r = rng.standard_normal((m, n)) if residual else None
    want = x @ w.T + (b if bias else 0.0) + (r if residual else 0.0)
    if act == 1:
        want = np.maximum(want, 0.0)
    got = reference_lt(LtGemm(m, n, k, act, bias, residual), x, w, b, r)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_transposed_weight_layout_is_caught() -> None:
    """The check can fail: a layout that forgets the transpose of W gives another product."""
    rng = np.random.default_rng(1)
    m, n, k = 5, 8, 8
    x, w = rng.standard_normal((m, k)), rng.standard_normal((n, k))
    got = reference_lt(LtGemm(m, n, k, 0, False, False), x, w.T.copy(), None, None)
    assert not np.allclose(got, x @ w.T)


def test_only_activations_the_library_computes_as_defined_are_fused() -> None:
    from backends.gpu.activations import ACT_CODES
    from engine.ir.layers import ActivationType

    assert fusable(ACT_CODES[None]) and fusable(ACT_CODES[ActivationType.RELU])
    for t in (ActivationType.GELU_ERF, ActivationType.GELU_TANH, ActivationType.CLIP, ActivationType.SILU):
        assert not fusable(ACT_CODES[t])
    assert LtGemm(4, 8, 8, 1, True, False).epilogue == 6  # CUBLASLT_EPILOGUE_RELU_BIAS
    assert LtGemm(4, 8, 8, 0, False, True).epilogue == 1  # CUBLASLT_EPILOGUE_DEFAULT
