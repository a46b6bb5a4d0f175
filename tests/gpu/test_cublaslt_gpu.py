"""The fused cuBLASLt GEMM (backends/gpu/kernels/cublaslt.py) on the GPU: bias, residual and ReLU
in the library's epilogue, against numpy float64 on fresh random data (fp16 tolerance). The
residual is drawn so that it flips the sign of many sums: ReLU applied before the residual, or
the bias along the wrong axis, would fail."""

from __future__ import annotations

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("m,n,k", [(4096, 256, 64), (37, 128, 512), (1, 1000, 2048)])
@pytest.mark.parametrize("act,bias,residual", [(1, True, True), (1, True, False), (0, True, False), (0, False, True)])
def test_fused_gemm_matches_float64(rng, m, n, k, act, bias, residual) -> None:
    import cupy as cp

    from backends.gpu.kernels.cublaslt import LtGemm, try_gemm

    x = rng.uniform(-1, 1, (m, k)).astype(np.float16)
    w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float16)
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    r = rng.uniform(-2, 2, (m, n)).astype(np.float16) if residual else None
    y = cp.full((m, n), np.nan, cp.float16)
    dev = [None if a is None else cp.asarray(a) for a in (x, w, b, r)]
    if not try_gemm(LtGemm(m, n, k, act, bias, residual), dev[0], dev[1], dev[2], y, dev[3]):
        pytest.fail("cuBLASLt did not run the fused GEMM (no algorithm for the shape, or the epilogue probe failed)")
    want = x.astype(np.float64) @ w.astype(np.float64).T
    if bias:
        want += b
    if residual:
        want += r
    if act == 1:
        want = np.maximum(want, 0.0)
    got = cp.asnumpy(y).astype(np.float64)
    err = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert err < 1e-2, err
    if act == 1:
        assert (got >= 0).all()
