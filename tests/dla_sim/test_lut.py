"""LUT: the hardware's indexing, interpolation, out-of-range and priority rules; builder errors."""

import numpy as np
import pytest

from dla_sim import lut as L


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _rha(num: int, shift: int) -> int:
    """Round-half-away integer division by 2**shift (python ints)."""
    if shift <= 0:
        return num << -shift
    q = (abs(num) + (1 << (shift - 1))) >> shift
    return -q if num < 0 else q


@pytest.mark.parametrize("name,fn", [("sigmoid", _sigmoid), ("tanh", np.tanh)])
def test_fp_activation_within_stated_error(name, fn):
    b = L.sigmoid_lut() if name == "sigmoid" else L.tanh_lut()
    rng = np.random.default_rng(31)
    x = np.concatenate([rng.uniform(-24, 24, 40000), rng.uniform(-2.5, 2.5, 20000)]).astype(np.float32)
    y = L.evaluate(b.lut, x)
    err = np.abs(y.astype(np.float64) - fn(x.astype(np.float64)))
    assert err.max() <= b.max_abs_error
    assert b.max_abs_error < 1e-3  # the stated error is a useful one


@pytest.mark.parametrize("name,fn", [("sigmoid", _sigmoid), ("tanh", np.tanh)])
@pytest.mark.parametrize("in_scale", [1 / 16, 1 / 1000, 0.3])
def test_int_activation_within_stated_error(name, fn, in_scale):
    b = L.sigmoid_lut(in_scale) if name == "sigmoid" else L.tanh_lut(in_scale)
    rng = np.random.default_rng(32)
    lim = int(min(2**31 - 1, 30 / in_scale))
    x = rng.integers(-lim, lim, 50000)
    y = L.evaluate(b.lut, x, unit="sdp")
    err = np.abs(y * b.out_scale - fn(x * in_scale))
    assert err.max() <= b.max_abs_error
    assert b.max_abs_error < 0.02


def _table(entries, start, end, **kw):
    return L.LutTable(tuple(float(e) for e in entries), start, end, **kw)


def test_int_linear_interpolation_bit_exact():
    rng = np.random.default_rng(33)
    lo_e = rng.integers(-32768, 32768, 257)
    le_e = rng.integers(-32768, 32768, 65)
    sel, start = 7, -5000
    lut = L.Lut(
        le=_table(le_e, 10**9, 10**9 + 64, index_select=0),  # never hit in this test
        lo=_table(lo_e, start, start + 256 * 2**sel, index_select=sel),
        integer=True,
        hybrid_priority="lo",
    )
    x = rng.integers(start + 1, start + 256 * 2**sel, 3000)
    y_sdp = L.evaluate(lut, x, unit="sdp")
    y_cdp = L.evaluate(lut, x, unit="cdp")
    for xi, ys, yc in zip(x.tolist(), y_sdp.tolist(), y_cdp.tolist()):
        d = xi - start
        i, r = d >> sel, d & ((1 << sel) - 1)
        f35, f16 = r << (35 - sel), r << (16 - sel)
        y0, y1 = int(lo_e[i]), int(lo_e[i + 1])
        assert ys == _rha(y0 * (2**35 - f35) + y1 * f35, 35)
        assert yc == max(-32768, min(32767, y0 + _rha((y1 - y0) * f16, 16)))


def test_int_exponential_index_and_fraction():
    rng = np.random.default_rng(34)
    le_e = rng.integers(-20000, 20000, 65)
    start, off = 100, 3
    lut = L.Lut(
        le=_table(le_e, start, 2**40, index_offset=off, exponent=True),
        lo=_table(np.zeros(257), -(10**12), -(10**12) + 256, index_select=0),  # always overflows
        integer=True,
        oflow_priority="le",
        hybrid_priority="le",
    )
    d = rng.integers(2**off, 2**40, 3000)
    y = L.evaluate(lut, start + d, unit="sdp")
    for di, yi in zip(d.tolist(), y.tolist()):
        e = di.bit_length() - 1
        rem = di - (1 << e)
        f = rem >> (e - 35) if e >= 35 else rem << (35 - e)
        i = e - off
        assert yi == _rha(int(le_e[i]) * (2**35 - f) + int(le_e[i + 1]) * f, 35)


def test_out_of_range_extrapolation_int():
    lo_e = np.arange(257) * 10
    lut = L.Lut(
        le=_table(np.zeros(65), 0, 64, index_select=0),
        lo=_table(lo_e, 0, 256 * 4, index_select=2, uflow_scale=3, uflow_shift=1, oflow_scale=-5, oflow_shift=-2),
        integer=True,
        uflow_priority="lo",
        oflow_priority="lo",
    )
    x = np.array([-7, -1, 0, 1030, 2000])
    y = L.evaluate(lut, x, unit="sdp").tolist()
    assert y[0] == 0 + _rha(-7 * 3, 1)
    assert y[1] == 0 + _rha(-1 * 3, 1)
    assert y[2] == 0  # x == START underflows; extrapolation from START gives LUT[0]
    assert y[3] == 2560 + ((1030 - 1024) * -5 << 2)
    assert y[4] == 2560 + ((2000 - 1024) * -5 << 2)


def test_priority_rules():
    le = _table(np.full(65, 100), 0, 64, index_select=0)  # covers [0, 64]
    lo = _table(np.full(257, 200), 32, 32 + 256, index_select=0)  # covers [32, 288]
    x = np.array([-5, 10, 40, 100, 400])  # both uflow, LE only, both, LO only, both oflow

    def run(h, u, o):
        return L.evaluate(L.Lut(le=le, lo=lo, integer=True, hybrid_priority=h, uflow_priority=u, oflow_priority=o), x)

    assert run("le", "le", "le").tolist() == [100, 100, 100, 200, 100]
    assert run("lo", "lo", "lo").tolist() == [200, 100, 200, 200, 200]
    assert run("le", "lo", "le").tolist() == [200, 100, 100, 200, 100]
    # hybrid miss: LE overflows while LO underflows -> hybrid priority
    lo2 = _table(np.full(257, 200), 1000, 1256, index_select=0)
    for h, want in (("le", 100), ("lo", 200)):
        got = L.evaluate(L.Lut(le=le, lo=lo2, integer=True, hybrid_priority=h), np.array([500]))
        assert got.tolist() == [want]
    _, st = L.evaluate(L.Lut(le=le, lo=lo, integer=True), x, with_stats=True)
    assert (st.le_hit, st.lo_hit, st.uflow, st.oflow, st.priority) == (1, 1, 1, 1, 1)


def test_float_linear_and_exponential_lookup():
    rng = np.random.default_rng(35)
    lo_e = rng.standard_normal(257).astype(np.float16).astype(np.float64)
    le_e = rng.standard_normal(65).astype(np.float16).astype(np.float64)
    lut = L.Lut(
        le=_table(le_e, 0.0, 2.0**60, index_offset=-4, exponent=True),
        lo=_table(lo_e, -3.0, -3.0 + 256 / 32, index_select=-5),
        integer=False,
        hybrid_priority="lo",
    )
    x = rng.uniform(-2.99, 4.99, 2000).astype(np.float32)
    y = L.evaluate(lut, x)
    t = (x.astype(np.float64) + 3.0) * 32
    i = np.floor(t).astype(int)
    ref = lo_e[i] * (1 - (t - i)) + lo_e[i + 1] * (t - i)
    # the index is formed in float32 (as the hardware's FP32 subtract): 2**-19 of an index step
    assert np.allclose(y, ref, rtol=0, atol=2e-4)
    x2 = rng.uniform(5.5, 1e6, 2000).astype(np.float32)  # LE only
    y2 = L.evaluate(lut, x2)
    e = np.floor(np.log2(x2.astype(np.float64)))
    fr = x2 / 2.0**e - 1
    j = (e + 4).astype(int)
    ref2 = le_e[j] * (1 - fr) + le_e[j + 1] * fr
    assert np.allclose(y2, ref2, rtol=0, atol=2e-4)


@pytest.mark.parametrize("k,dense", [(1.0, 2.0**16), (2.0, 64.0)])
def test_lrn_lut_within_stated_relative_error(k, dense):
    b = L.lrn_lut(1e-4, 0.75, k, 5, dense_max=dense, s_max=1e7)
    rng = np.random.default_rng(36)
    s = np.concatenate([rng.uniform(0, dense, 20000), np.exp(rng.uniform(0, np.log(1e7), 20000))])
    y = L.evaluate(b.lut, s.astype(np.float32))
    ref = (k + 1e-4 / 5 * s) ** -0.75
    assert (np.abs(y / ref - 1)).max() <= b.max_rel_error


def test_lut_rejects_wrong_sizes_and_entries():
    with pytest.raises(ValueError, match="65 LE and 257 LO"):
        L.Lut(le=_table(np.zeros(64), 0, 1), lo=_table(np.zeros(257), 0, 1), integer=True)
    with pytest.raises(ValueError, match="int16"):
        L.Lut(le=_table(np.full(65, 40000), 0, 1), lo=_table(np.zeros(257), 0, 1), integer=True)
    with pytest.raises(ValueError, match="linear indexing only"):
        L.Lut(le=_table(np.zeros(65), 0, 1), lo=_table(np.zeros(257), 0, 1, exponent=True), integer=True)
