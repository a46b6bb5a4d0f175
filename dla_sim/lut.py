"""The SDP/CDP two-level lookup table (LUT), as the hardware evaluates it.

Structure ([LUTPG] nvdla/doc ``doc/hw/v1/ias/lut-programming.rst``; cmod ``hls/sdp/sdp_y_idx.cpp``,
``hls/sdp/sdp_y_inp.cpp``, ``cdp/NV_NVDLA_cdp.cpp``):

* LE table: 65 entries, linear or exponential indexing; LO table: 257 entries, linear only.
  Entries are 16 bits: int16 in the INT pipelines, fp16 in the FP16 pipeline.
* Linear index: ``(x - START) >> index_select`` (step = 2**index_select, may be negative in the
  FP pipeline and in CDP); the bits shifted out are the interpolation fraction.
* Exponential index (LE only): ``floor(log2(x - START)) - index_offset``; the fraction is the
  position inside the octave [2**e, 2**(e+1)).
* ``x - START <= 0`` or index < 0 is an underflow, index >= entries-1 an overflow. Out-of-range
  samples are extrapolated linearly: ``LUT[0] + (x - P_u) * UFLOW_SCALE >> UFLOW_SHIFT`` and
  ``LUT[N] + (x - END) * OFLOW_SCALE >> OFLOW_SHIFT`` (shift is a signed 5-bit field; FP: no shift).
  ``P_u`` is START, or START + 2**index_offset for an exponential table (cmod CDP).
* Selection between the two tables ([LUTPG] "Hit/Miss behavior"): if exactly one table hits, its
  result; both hit -> ``hybrid_priority``; both underflow -> ``uflow_priority``; both overflow ->
  ``oflow_priority``; one under- and one overflow -> ``hybrid_priority``.
* Interpolation: SDP (INT) ``(y0*(2**35 - f) + y1*f) >> 35`` rounded half away from zero, 35-bit
  fraction; CDP (INT) ``y0 + ((y1 - y0)*f16 >> 16)`` with a 16-bit fraction, result saturated to
  int16. FP pipeline: ``y0*(1-f) + y1*f`` in float32 (the hardware uses fp17/fp32; float32 is at
  least as precise, the difference is far below the table's own error).

Builders fill tables for sigmoid, tanh and the LRN denominator ``(k + alpha/n * s)**-beta``. Each
build carries its stated error, derived without evaluating the table: the worst error of the ideal
chord between exact nodes (maximised on a fine grid inside every interval), plus the rounding of
the stored 16-bit entries, plus the tail error beyond the covered range, plus the output rounding
of the integer interpolation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .formats import rshift_round, saturate

LE_ENTRIES = 65
LO_ENTRIES = 257
SDP_FRAC_BITS = 35  # yLutFracSize in cmod sdp.h
CDP_FRAC_BITS = 16  # "The precision of offset is 16bits" in cmod CDP

Table = Literal["le", "lo"]


@dataclass(frozen=True)
class LutTable:
    """One table and its index registers (START/END in the pipeline's encoding)."""

    entries: tuple[float, ...]  # int16 values (INT pipeline) or fp16-representable values
    start: float
    end: float
    index_select: int = 0  # linear: log2(step)
    index_offset: int = 0  # exponential: exponent of the first entry
    exponent: bool = False
    uflow_scale: float = 0
    uflow_shift: int = 0
    oflow_scale: float = 0
    oflow_shift: int = 0


@dataclass(frozen=True)
class Lut:
    """LE (65) + LO (257) tables with the selection rules."""

    le: LutTable
    lo: LutTable
    integer: bool  # INT pipeline (int16 entries, integer arithmetic) or FP16 pipeline
    hybrid_priority: Table = "le"
    uflow_priority: Table = "lo"
    oflow_priority: Table = "lo"

    def __post_init__(self) -> None:
        if len(self.le.entries) != LE_ENTRIES or len(self.lo.entries) != LO_ENTRIES:
            raise ValueError(
                f"LUT needs {LE_ENTRIES} LE and {LO_ENTRIES} LO entries, "
                f"got {len(self.le.entries)} and {len(self.lo.entries)}"
            )
        if self.lo.exponent:
            raise ValueError("the LO table supports linear indexing only")
        for t in (self.le, self.lo):
            e = np.asarray(t.entries, dtype=np.float64)
            if self.integer and (np.any(e != np.round(e)) or np.any(np.abs(e) > 32767 + (e < 0))):
                raise ValueError("INT LUT entries must be int16 values")
            if not self.integer and np.any(e.astype(np.float16).astype(np.float64) != e):
                raise ValueError("FP LUT entries must be fp16-representable")

    @property
    def bytes(self) -> int:
        """Storage: (65 + 257) x 2 B = 644 B [IAS]."""
        return 2 * (LE_ENTRIES + LO_ENTRIES)


@dataclass(frozen=True)
class LutStats:
    """The hardware's per-layer LUT statistics registers ([LUTPG] "LUT Statistics")."""

    le_hit: int
    lo_hit: int
    uflow: int
    oflow: int
    priority: int


# ----------------------------------------------------------------------------------------------
# lookup


def _index_int(t: LutTable, x: np.ndarray, n: int, frac_bits: int):
    """(index, fraction, uflow, oflow) for int64 input, as the INT pipeline computes them."""
    start = int(t.start)
    d = x - start
    uf = d <= 0
    dpos = np.where(uf, 1, d)
    if t.exponent:
        e = np.floor(np.log2(dpos.astype(np.float64))).astype(np.int64)
        # correct float log2 rounding near powers of two
        e = np.where((np.int64(1) << np.clip(e, 0, 62)) > dpos, e - 1, e)
        e = np.where((np.int64(1) << np.clip(e + 1, 0, 62)) <= dpos, e + 1, e)
        idx = e - t.index_offset
        rem = dpos - (np.int64(1) << np.clip(e, 0, 62))
        frac = np.where(e >= frac_bits, rem >> np.maximum(e - frac_bits, 0), rem << np.maximum(frac_bits - e, 0))
        uf = uf | (idx < 0)
    else:
        sel = t.index_select
        if sel >= 0:
            idx = dpos >> sel
            rem = dpos & ((np.int64(1) << sel) - 1)
            frac = rem >> (sel - frac_bits) if sel >= frac_bits else rem << (frac_bits - sel)
        else:
            idx = dpos << (-sel)
            frac = np.zeros_like(dpos)
    of = ~uf & (idx >= n - 1)
    idx = np.where(uf, 0, np.where(of, n - 1, idx))
    frac = np.where(uf | of, 0, frac)
    return idx, frac, uf, of


def _index_float(t: LutTable, x: np.ndarray, n: int):
    d = (x - np.float32(t.start)).astype(np.float32)
    uf = ~(d > 0)  # also NaN
    dpos = np.where(uf, np.float32(1), d)
    if t.exponent:
        m, ex = np.frexp(dpos)  # dpos = m * 2**ex, m in [0.5, 1)
        e = ex.astype(np.int64) - 1
        idx = e - t.index_offset
        frac = (2 * m - 1).astype(np.float32)
        uf = uf | (idx < 0)
    else:
        tt = dpos * np.float32(2.0 ** (-t.index_select))
        fl = np.floor(tt)
        idx = np.minimum(fl, n).astype(np.int64)
        frac = (tt - fl).astype(np.float32)
    of = ~uf & (idx >= n - 1)
    idx = np.where(uf, 0, np.where(of, n - 1, idx))
    frac = np.where(uf | of, np.float32(0), frac)
    return idx, frac, uf, of


def _table_int(t: LutTable, x: np.ndarray, n: int, frac_bits: int, delta_form: bool, out_bits: int):
    idx, frac, uf, of = _index_int(t, x, n, frac_bits)
    e = np.asarray(t.entries, dtype=np.int64)
    y0, y1 = e[idx], e[np.minimum(idx + 1, n - 1)]
    if delta_form:
        hit = y0 + rshift_round((y1 - y0) * frac, frac_bits)
    else:
        hit = rshift_round(y0 * ((np.int64(1) << frac_bits) - frac) + y1 * frac, frac_bits)
    pu = int(t.start) + ((1 << t.index_offset) if (t.exponent and t.index_offset >= 0) else 0)
    under = e[0] + rshift_round((x - pu) * int(t.uflow_scale), t.uflow_shift)
    over = e[n - 1] + rshift_round((x - int(t.end)) * int(t.oflow_scale), t.oflow_shift)
    y = np.where(uf, under, np.where(of, over, hit))
    return saturate(y, out_bits), uf, of


def _table_float(t: LutTable, x: np.ndarray, n: int):
    idx, frac, uf, of = _index_float(t, x, n)
    e = np.asarray(t.entries, dtype=np.float32)
    y0, y1 = e[idx], e[np.minimum(idx + 1, n - 1)]
    hit = y0 * (np.float32(1) - frac) + y1 * frac
    pu = np.float32(t.start + ((2.0**t.index_offset) if t.exponent else 0.0))
    under = e[0] + (x - pu) * np.float32(np.float16(t.uflow_scale))
    over = e[n - 1] + (x - np.float32(t.end)) * np.float32(np.float16(t.oflow_scale))
    y = np.where(uf, under, np.where(of, over, hit)).astype(np.float32)
    return y, uf, of


def evaluate(
    lut: Lut, x: np.ndarray, *, unit: Literal["sdp", "cdp"] = "sdp", with_stats: bool = False
) -> np.ndarray | tuple[np.ndarray, LutStats]:
    """Look ``x`` up: int64 in -> int64 out (INT pipeline) or float in -> float32 out (FP16).

    ``unit`` picks the INT interpolation arithmetic: SDP (35-bit fraction, int32 result) or CDP
    (16-bit fraction, int16 result).
    """
    if lut.integer:
        xi = np.asarray(x, dtype=np.int64)
        fb = SDP_FRAC_BITS if unit == "sdp" else CDP_FRAC_BITS
        ob = 32 if unit == "sdp" else 16
        delta = unit == "cdp"
        y_le, le_uf, le_of = _table_int(lut.le, xi, LE_ENTRIES, fb, delta, ob)
        y_lo, lo_uf, lo_of = _table_int(lut.lo, xi, LO_ENTRIES, fb, delta, ob)
    else:
        xf = np.asarray(x, dtype=np.float32)
        y_le, le_uf, le_of = _table_float(lut.le, xf, LE_ENTRIES)
        y_lo, lo_uf, lo_of = _table_float(lut.lo, xf, LO_ENTRIES)
    le_hit, lo_hit = ~(le_uf | le_of), ~(lo_uf | lo_of)
    both_uf, both_of = le_uf & lo_uf, le_of & lo_of
    pick_lo = np.where(
        le_hit ^ lo_hit,
        lo_hit,
        np.where(
            both_uf,
            lut.uflow_priority == "lo",
            np.where(both_of, lut.oflow_priority == "lo", lut.hybrid_priority == "lo"),
        ),
    )
    y = np.where(pick_lo, y_lo, y_le)
    if not with_stats:
        return y
    stats = LutStats(
        le_hit=int(np.sum(le_hit & ~lo_hit)),
        lo_hit=int(np.sum(lo_hit & ~le_hit)),
        uflow=int(np.sum(both_uf)),
        oflow=int(np.sum(both_of)),
        priority=int(np.sum((le_hit & lo_hit) | ((le_uf & lo_of) | (le_of & lo_uf)))),
    )
    return y, stats


# ----------------------------------------------------------------------------------------------
# builders


@dataclass(frozen=True)
class LutBuild:
    """A filled LUT, the real-valued meaning of its input/output, and its stated error.

    Real input = ``x * in_scale``; real output = ``y * out_scale``. ``max_abs_error`` bounds
    |real output - f(real input)| over all inputs (``max_rel_error`` relative to f, for LRN) on the
    stated ``domain``; ``None`` where not stated.
    """

    lut: Lut
    function: str
    in_scale: float
    out_scale: float
    domain: tuple[float, float]
    max_abs_error: float | None = None
    max_rel_error: float | None = None


def _chord_error(f: Callable[[np.ndarray], np.ndarray], nodes: np.ndarray, rel: bool = False) -> float:
    """Worst |chord - f| (or relative) between consecutive exact nodes, on a fine grid."""
    a, b = nodes[:-1, None], nodes[1:, None]
    t = np.linspace(0.0, 1.0, 65)[None, :]
    xs = a + (b - a) * t
    chord = f(a) * (1 - t) + f(b) * t
    err = np.abs(chord - f(xs))
    if rel:
        err = err / np.abs(f(xs))
    return float(err.max())


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


_FUNCS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float, float, float, float]] = {
    # name: (f, f(-inf), f(+inf), raw half-range, density half-range)
    "sigmoid": (_sigmoid, 0.0, 1.0, 16.0, 2.0),
    "tanh": (np.tanh, -1.0, 1.0, 8.0, 1.0),
}


def _activation_fp(name: str) -> LutBuild:
    f, lo_lim, hi_lim, raw, dense = _FUNCS[name]
    sel_lo = int(np.log2(2 * raw / (LO_ENTRIES - 1)))
    sel_le = int(np.log2(2 * dense / (LE_ENTRIES - 1)))
    lo_nodes = -raw + np.arange(LO_ENTRIES) * 2.0**sel_lo
    le_nodes = -dense + np.arange(LE_ENTRIES) * 2.0**sel_le
    lo_e = f(lo_nodes).astype(np.float16).astype(np.float64)
    le_e = f(le_nodes).astype(np.float16).astype(np.float64)
    lut = Lut(
        le=LutTable(tuple(le_e), -dense, dense, index_select=sel_le),
        lo=LutTable(tuple(lo_e), -raw, raw, index_select=sel_lo),
        integer=False,
    )
    interp = max(_chord_error(f, lo_nodes), _chord_error(f, le_nodes))
    entry = max(np.abs(lo_e - f(lo_nodes)).max(), np.abs(le_e - f(le_nodes)).max())
    tail = max(abs(lo_e[0] - lo_lim), abs(lo_e[-1] - hi_lim))
    arith = 1e-6  # float32 interpolation arithmetic on values <= 1
    return LutBuild(lut, name, 1.0, 1.0, (-np.inf, np.inf), max_abs_error=float(max(interp + entry, tail) + arith))


def _activation_int(name: str, in_scale: float, out_frac_bits: int = 14) -> LutBuild:
    """INT pipeline table: input int32 with LSB = ``in_scale``; int16 entries with LSB 2**-14."""
    if not in_scale > 0:
        raise ValueError(f"LUT input scale must be > 0, got {in_scale}")
    f, lo_lim, hi_lim, raw, _ = _FUNCS[name]
    sel_lo = max(0, int(np.ceil(np.log2(2 * raw / ((LO_ENTRIES - 1) * in_scale)))))
    sel_le = max(0, sel_lo - 2)
    lo_start = -(1 << sel_lo) * (LO_ENTRIES - 1) // 2
    le_start = -(1 << sel_le) * (LE_ENTRIES - 1) // 2
    lo_nodes_i = lo_start + np.arange(LO_ENTRIES, dtype=np.int64) * (1 << sel_lo)
    le_nodes_i = le_start + np.arange(LE_ENTRIES, dtype=np.int64) * (1 << sel_le)
    q = 2.0**out_frac_bits

    def ent(nodes: np.ndarray) -> np.ndarray:
        return np.clip(np.round(f(nodes * in_scale) * q), -32768, 32767)

    lo_e, le_e = ent(lo_nodes_i), ent(le_nodes_i)
    lut = Lut(
        le=LutTable(tuple(le_e), le_start, int(le_nodes_i[-1]), index_select=sel_le),
        lo=LutTable(tuple(lo_e), lo_start, int(lo_nodes_i[-1]), index_select=sel_lo),
        integer=True,
    )
    lo_nodes, le_nodes = lo_nodes_i * in_scale, le_nodes_i * in_scale
    interp = max(_chord_error(f, lo_nodes), _chord_error(f, le_nodes))
    entry = max(np.abs(lo_e / q - f(lo_nodes)).max(), np.abs(le_e / q - f(le_nodes)).max())
    tail = max(abs(lo_e[0] / q - lo_lim), abs(lo_e[-1] / q - hi_lim))
    rounding = 0.5 / q  # interpolation result rounded to an integer
    bound = max(interp + entry, tail) + rounding
    return LutBuild(lut, name, in_scale, 1.0 / q, (-np.inf, np.inf), max_abs_error=float(bound))


@functools.lru_cache(maxsize=64)
def sigmoid_lut(in_scale: float | None = None) -> LutBuild:
    """Sigmoid: LO raw table over [-16, 16], LE density table over [-2, 2] ([LUTPG] recommends
    LE=density, LO=raw for activations). ``in_scale=None``: FP16 pipeline; otherwise INT."""
    return _activation_fp("sigmoid") if in_scale is None else _activation_int("sigmoid", in_scale)


@functools.lru_cache(maxsize=64)
def tanh_lut(in_scale: float | None = None) -> LutBuild:
    """Tanh: LO raw table over [-8, 8], LE density table over [-1, 1]."""
    return _activation_fp("tanh") if in_scale is None else _activation_int("tanh", in_scale)


def lrn_lut(alpha: float, beta: float, k: float, n: int, dense_max: float = 64.0, s_max: float = 1e6) -> LutBuild:
    """FP16-pipeline LUT for the LRN denominator f(s) = (k + alpha/n * s)**-beta, s = sum of squares.

    As [LUTPG] recommends for LRN: LO = linear density table over [0, 256 * 2**sel] covering
    ``dense_max``; LE = exponential raw table over the 64 octaves from 2**sel up. Both start at 0,
    so s <= 0 underflows to LO[0] = f(0). Slopes are 0: beyond 2**(sel+64) the output is LE[64].
    The stated error is relative to f, on [0, s_max].
    """
    if k <= 0 or beta < 0 or alpha < 0:
        raise ValueError(f"LRN needs k > 0, alpha >= 0, beta >= 0; got k={k} alpha={alpha} beta={beta}")
    a = alpha / n

    def f(s: np.ndarray) -> np.ndarray:
        return (k + a * np.asarray(s, dtype=np.float64)) ** (-beta)

    sel = int(np.ceil(np.log2(dense_max / (LO_ENTRIES - 1))))
    lo_nodes = np.arange(LO_ENTRIES) * 2.0**sel
    le_nodes = 2.0 ** (sel + np.arange(LE_ENTRIES))
    lo_e = np.asarray(f(lo_nodes), dtype=np.float16).astype(np.float64)
    le_e = np.asarray(f(le_nodes), dtype=np.float16).astype(np.float64)
    lut = Lut(
        le=LutTable(tuple(le_e), 0.0, float(le_nodes[-1]), index_offset=sel, exponent=True),
        lo=LutTable(tuple(lo_e), 0.0, float(lo_nodes[-1]), index_select=sel),
        integer=False,
        hybrid_priority="lo",
        uflow_priority="lo",
        oflow_priority="le",
    )
    le_used = le_nodes[: max(2, int(np.searchsorted(le_nodes, s_max)) + 1)]
    used = [lo_nodes] + ([le_used] if s_max > lo_nodes[-1] else [])
    interp = max(_chord_error(f, nodes, rel=True) for nodes in used)
    # an entry error e (relative) moves the interpolant by at most e * max(f(a), f(b)) / f(x)
    ratio = max(float(np.max(f(nodes[:-1]) / f(nodes[1:]))) for nodes in used)
    n_le = len(le_used)
    entry = max(np.abs(lo_e / f(lo_nodes) - 1).max(), np.abs(le_e[:n_le] / f(le_used) - 1).max())
    bound = interp + entry * ratio + 1e-6
    return LutBuild(lut, "lrn", 1.0, 1.0, (0.0, s_max), max_rel_error=float(bound))
