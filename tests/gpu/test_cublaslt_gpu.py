"""The cuBLASLt tactic on the GPU: GEMM-shaped layers with the bias, the residual and a ReLU in
cuBLASLt's epilogue, against float64 numpy and the reference backend on fresh random data, at
fp16 tolerance; the tactic is timed only where the epilogue computes the layer's activation."""

from __future__ import annotations

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

import cupy as cp  # noqa: E402
from gemm_nets import check_on_tactic  # noqa: E402

from backends.gpu.kernels import cublaslt  # noqa: E402
from backends.gpu.kernels.conv import ConvGeometry, conv2d_cublaslt  # noqa: E402
from backends.gpu.tactics import time_conv_cublaslt  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not cublaslt.available(), reason="no cuBLASLt")]


@pytest.mark.parametrize("m, k, c", [(1, 8, 8), (37, 96, 384), (3136, 384, 96), (200, 72, 40)])
@pytest.mark.parametrize("act", [0, 1])
@pytest.mark.parametrize("residual", [False, True])
def test_fused_epilogue_gemm_matches_float64(rng, m, k, c, act, residual):
    g = ConvGeometry(m, 1, 1, c, k, 1, 1)
    x = rng.uniform(-1, 1, (m, c)).astype(np.float16)
    w = (rng.standard_normal((k, c)) / np.sqrt(c)).astype(np.float16)
    b = rng.standard_normal(k).astype(np.float16).astype(np.float32)
    r = rng.uniform(-1, 1, (m, k)).astype(np.float16) if residual else None
    y = cp.full((m, k), np.nan, cp.float16)
    conv2d_cublaslt(cp.asarray(x), cp.asarray(w), cp.asarray(b.astype(np.float16)), y, g, (act, 0.0, 0.0),
                    None if r is None else cp.asarray(r))
    want = x.astype(np.float64) @ w.T.astype(np.float64) + b + (0 if r is None else r)
    want = np.maximum(want, 0) if act == 1 else want
    got = cp.asnumpy(y).astype(np.float64)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 2e-3


def test_the_tactic_is_timed_only_for_epilogues_it_computes():
    g = ConvGeometry(32, 56, 56, 96, 384, 1, 1)
    assert list(time_conv_cublaslt(g, (0, 0.0, 0.0), True)) == ["cublaslt"]
    assert time_conv_cublaslt(g, (9, 0.0, 0.0), False) == {}  # GELU: not in the epilogue set
    assert time_conv_cublaslt(ConvGeometry(4, 9, 9, 12, 16, 1, 1), (0, 0.0, 0.0), False) == {}  # C % 8


def test_layers_on_the_cublaslt_tactic_match_the_reference(rng):
    """The same 1x1 convolution (bias, residual, ReLU) and a plain FC as the cuBLAS tactic's test,
    both in cuBLASLt's epilogue."""
    check_on_tactic(rng, "cublaslt", None)
