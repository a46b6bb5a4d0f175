"""The SDP's INT pipeline for its most common programming, in fewer and narrower passes.

A convolution's epilogue on the DLA is nearly always ``bias -> [element-wise add] -> [ReLU/clip]
-> output converter``. :func:`sdp._run_int` evaluates every sub-unit in int64 with a saturation
after each; this module gives the same integers with bounds carried along instead:

* the value range ``[lo, hi]`` of every intermediate is known from the input's min/max and the
  operands, so a saturation whose range provably holds is skipped, and the X stages run in int32
  whenever their range fits it (int64 otherwise, saturating where the bound does not hold);
* the element-wise operand (int8 from memory) goes through its converter in int32 when
  ``|e - offset| * |scale|`` fits;
* a round-half-away-from-zero shift skips its negative-value correction where the value is known
  to be >= 0 (after ReLU, non-negative scales); the output converter of such values runs in float64
  (``(x - offset) * scale * 2**-shift + 0.5``, exact below 2**52, then truncated).

:func:`run_int` returns None for any programming outside these cases (X1 MUL, PReLU, LUT,
element-wise other than ``add``, FP16 output, per-element bias, very wide shifts...), and the caller
then runs the straightforward pipeline. Both give the same integers (tests pin it on random data).
"""

from __future__ import annotations

import weakref

import numpy as np

from .ops import Precision, Requant, SdpOp

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
_NARROW = tuple(np.dtype(t) for t in (np.int8, np.int16, np.int32, np.uint8, np.uint16))
_WIDE = 2**40  # operands beyond this stay on the int64 reference path (no wrap-around questions)


def _fit(lo: int, hi: int, half: int = 0, shift: int = 0) -> type:
    """int32 when every value in [lo, hi] (plus a rounding half) stays inside int32 and the shifts
    are well inside its width, else int64."""
    return np.int32 if lo - half >= I32_MIN and hi + half <= I32_MAX and shift <= 30 else np.int64


class _Converter:
    """One converter's per-channel operands, shaped (1, C, 1, 1) for NCHW, computed once per
    (Requant, C): Requant is frozen, so they never change."""

    def __init__(self, rq: Requant, c: int) -> None:
        sc, sh = rq.arrays(c)
        self.offset = int(rq.offset)
        self.scale_abs, self.scale_min = int(np.abs(sc).max()), int(sc.min())
        self.shift_min, self.shift_max = int(sh.min()), int(sh.max())
        self.ok = self.shift_min >= 0 and self.shift_max <= 62 and I32_MIN <= self.offset <= I32_MAX
        self.half_max = 1 << max(self.shift_max - 1, 0)
        scale, shift = sc.reshape(1, c, 1, 1), sh.reshape(1, c, 1, 1)
        pos = shift > 0
        self.any_pos, self.all_pos, self.pos = bool(pos.any()), bool(pos.all()), pos
        half = np.where(pos, np.int64(1) << np.maximum(shift - 1, 0), 0)
        self.int = {np.dtype(dt): (scale.astype(dt), shift.astype(dt), half.astype(dt)) for dt in (np.int32, np.int64)}
        self.factor = scale * np.exp2(-shift.astype(np.float64))  # scale * 2**-shift, exact in float64


_converters: dict[int, tuple[weakref.ref, dict[int, _Converter]]] = {}


def _converter_of(rq: Requant, c: int) -> _Converter:
    key = id(rq)
    hit = _converters.get(key)
    if hit is None or hit[0]() is not rq:

        def drop(ref: weakref.ref, key: int = key) -> None:
            if _converters.get(key, (None,))[0] is ref:
                _converters.pop(key, None)

        hit = _converters[key] = (weakref.ref(rq, drop), {})
    by_c = hit[1]
    if c not in by_c:
        by_c[c] = _Converter(rq, c)
    return by_c[c]


def _shift_round(p: np.ndarray, k: _Converter, nonneg: bool) -> None:
    """In place: ``rshift_round(p, shift)`` with ``k``'s per-channel shifts (the caller checked that
    ``p`` has room for the added half)."""
    if not k.any_pos:
        return
    _, shift, half = k.int[p.dtype]
    if not nonneg:
        neg = p < 0
        if not k.all_pos:
            neg &= k.pos
        p -= neg
    p += half
    p >>= shift


def _converter(v: np.ndarray, lo: int, hi: int, rq: Requant, c: int, out: np.dtype) -> np.ndarray | None:
    """``convert_int(v, offset, scale, shift, bits)`` in ``out`` (int8/int16) for v in [lo, hi], or
    None (not proven here)."""
    k = _converter_of(rq, c)
    if not k.ok:
        return None
    off = k.offset
    dlo, dhi = lo - off, hi - off
    dmax = max(abs(dlo), abs(dhi))
    pmax = max(dmax * k.scale_abs, dmax)
    if pmax >= 2**62:
        return None
    top = int(np.iinfo(out).max)
    nonneg = dlo >= 0 and k.scale_min >= 0
    if nonneg and pmax + k.half_max < 2**52:
        # (v - off) * scale / 2**shift is a float64 with <= 52 significant bits: exact, and so is
        # adding the half; flooring the non-negative sum (truncation) rounds half away from zero
        q = v.astype(np.float64)
        if off:
            q -= off
        q *= k.factor
        q += 0.5
        return np.minimum(q, top, out=q).astype(out)
    dt = np.dtype(_fit(-pmax, pmax, k.half_max, k.shift_max))
    p = v if v.dtype == dt else v.astype(dt)  # v is this pipeline's own array: work in place
    if off:
        p -= dt.type(off)
    p *= k.int[dt][0]
    _shift_round(p, k, nonneg)
    return np.clip(p, -top - 1, top, out=p).astype(out)


def _eltwise_add_operand(e: np.ndarray, rq: Requant | None, c: int) -> tuple[np.ndarray, int, int] | None:
    """The converted element-wise stream (``convert_int(e, ..., 32)``) and its range, or None."""
    if e.dtype != np.int8:
        return None
    if rq is None:
        return e, -128, 127
    k = _converter_of(rq, c)
    if not k.ok:
        return None
    off = k.offset
    emin, emax = int(e.min()), int(e.max())
    dmax = max(abs(emin - off), abs(emax - off))
    pmax = max(dmax * k.scale_abs, dmax)
    if _fit(-pmax, pmax, k.half_max, k.shift_max) is not np.int32:
        return None
    p = e.astype(np.int32)
    if off:
        p -= np.int32(off)
    p *= k.int[p.dtype][0]
    _shift_round(p, k, nonneg=emin >= off and k.scale_min >= 0)
    # |p| < 2**31 before the shift, so the shifted value is inside int32: the 32-bit saturation holds
    bound = (pmax + k.half_max) >> k.shift_min
    return p, -bound - 1, bound


def supported(op: SdpOp, ops: dict[str, np.ndarray]) -> bool:
    """Whether ``op``'s programming is one :func:`run_int` evaluates (operands not yet inspected)."""
    return (
        op.scale == "none" and "scale" not in ops
        and op.bias in ("none", "per_channel", "per_layer")
        and op.eltwise in (None, "add")
        and op.activation in ("none", "relu", "clip")
        and op.out_requant is not None
        and op.output.precision in (Precision.INT8, Precision.INT16)
    )


def run_int(op: SdpOp, x: np.ndarray, ops: dict[str, np.ndarray], bias: np.ndarray | None) -> np.ndarray | None:
    """The INT pipeline's output for a :func:`supported` op, or None when a bound is not proven.

    ``bias`` is the validated int16 operand (int64, broadcastable to NCHW) or None.
    """
    if x.dtype not in _NARROW or x.size == 0:
        return None
    n, c, h, w = x.shape
    lo, hi = int(x.min()), int(x.max())
    if bias is not None:
        b = np.asarray(bias, dtype=np.int64)
        if int(np.abs(b).max()) << int(op.bias_shift) >= _WIDE:
            return None
        b = np.broadcast_to(b << int(op.bias_shift), (1, c, 1, 1))
        blo, bhi = int(b.min()), int(b.max())
        dt = _fit(lo + blo, hi + bhi)
        if dt is np.int32 and (blo < I32_MIN or bhi > I32_MAX):
            dt = np.int64
        v = np.add(x, b.astype(dt), dtype=dt)
        lo, hi = lo + blo, hi + bhi
        if dt is np.int64 and (lo < I32_MIN or hi > I32_MAX):  # saturation may act: do it
            np.clip(v, I32_MIN, I32_MAX, out=v)
            lo, hi = max(lo, I32_MIN), min(hi, I32_MAX)
    else:
        v = x.astype(np.int32)
    if op.eltwise == "add":
        e = np.asarray(ops["eltwise"])
        if e.shape != x.shape:
            return None
        got = _eltwise_add_operand(e, op.in_requant, c)
        if got is None:
            return None
        ev, elo, ehi = got
        dt = _fit(lo + elo, hi + ehi)
        if v.dtype != dt and dt is np.int64:
            v = v.astype(np.int64)
        v += ev
        lo, hi = lo + elo, hi + ehi
        if lo < I32_MIN or hi > I32_MAX:
            np.clip(v, I32_MIN, I32_MAX, out=v)
            lo, hi = max(lo, I32_MIN), min(hi, I32_MAX)
    if op.activation in ("relu", "clip"):
        np.maximum(v, 0, out=v)
        lo, hi = max(lo, 0), max(hi, 0)
    if op.activation == "clip":
        cm = float(op.clip_max)
        if cm != round(cm) or not I32_MIN <= cm <= I32_MAX:
            return None  # the reference path raises the precise error or works in int64
        np.minimum(v, int(cm), out=v)
        lo, hi = min(lo, int(cm)), min(hi, int(cm))
    return _converter(v, lo, hi, op.out_requant, c, np.dtype(op.output.precision.dtype))

