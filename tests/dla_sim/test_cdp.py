"""CDP LRN against a float64 reference, within the LUT's stated error."""

import numpy as np
import pytest

from dla_sim import cdp
from dla_sim.config import get_config
from dla_sim.limits import DlaLimitError
from dla_sim.ops import CdpOp, CubeDesc, Precision

NV_FULL = get_config("nv_full")
F16 = Precision.FP16


def _lrn(x, n, alpha, beta, k):
    x = x.astype(np.float64)
    c = x.shape[1]
    s = np.zeros_like(x)
    for ci in range(c):
        s[:, ci] = np.sum(x[:, max(0, ci - n // 2) : min(c, ci + n // 2 + 1)] ** 2, axis=1)
    return x / (k + alpha / n * s) ** beta, s


def _op(shape, **kw):
    n, c, h, w = shape
    cube = CubeDesc(n=n, c=c, h=h, w=w, precision=F16)
    return CdpOp(name="lrn", input=cube, output=cube, **kw)


@pytest.mark.parametrize("n", [3, 5, 7, 9])
@pytest.mark.parametrize("scale,alpha,beta,k", [(1.0, 1e-4, 0.75, 1.0), (50.0, 1e-4, 0.75, 2.0), (2.0, 1.0, 0.5, 1.0)])
def test_lrn_within_stated_lut_error(n, scale, alpha, beta, k):
    rng = np.random.default_rng(81 + n)
    shape = (2, 37, 5, 6)
    x = (rng.standard_normal(shape) * scale).astype(np.float16)
    op = _op(shape, local_size=n, alpha=alpha, beta=beta, k=k)
    y = cdp.run(op, x, cfg=NV_FULL)
    ref, s = _lrn(x, n, alpha, beta, k)
    b = cdp.lrn_build(op)
    assert s.max() <= b.domain[1]
    tol = (b.max_rel_error + 2.0**-11 + 1e-6) * np.abs(ref) + 2.0**-24  # LUT + fp16 output rounding
    assert np.all(np.abs(y.astype(np.float64) - ref) <= tol)


def test_lrn_typical_inputs_meet_fp16_tolerance():
    rng = np.random.default_rng(85)
    shape = (1, 96, 7, 7)
    x = (rng.standard_normal(shape) * 20).astype(np.float16)  # sums stay in the density table
    y = cdp.run(_op(shape), x, cfg=NV_FULL)
    ref, _ = _lrn(x, 5, 1e-4, 0.75, 1.0)
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=1e-2, atol=1e-3)


def test_refusals():
    shape = (1, 8, 2, 2)
    with pytest.raises(DlaLimitError, match=r"LRN window 4 not in \{3, 5, 7, 9\}"):
        cdp.run(_op(shape, local_size=4), np.zeros(shape, np.float16), cfg=NV_FULL)
    cube = CubeDesc(c=8, h=2, w=2, precision=Precision.INT8)
    with pytest.raises(NotImplementedError, match="CDP INT pipeline"):
        cdp.run(CdpOp(name="i", input=cube, output=cube), np.zeros(shape, np.int8), cfg=NV_FULL)


def test_timing():
    shape = (1, 96, 55, 55)
    t = cdp.timing(_op(shape), NV_FULL)
    assert t.compute_cycles == 96 * 55 * 55 / 8  # 8 elem/cycle [SPEC]
    assert t.dram_read_bytes == t.dram_write_bytes == 6 * 55 * 55 * 32  # 96 FP16 ch = 6 atoms
    assert t.cycles == max(t.compute_cycles, t.dram_bytes / NV_FULL.dram_bytes_per_cycle())
