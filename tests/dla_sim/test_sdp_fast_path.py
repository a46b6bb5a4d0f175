"""The SDP INT pipeline's bounded fast path (dla_sim.sdp_fast) gives the integers of the int64
reference chain (sdp._run_int_reference) on fresh random data, including the saturating corners."""

from __future__ import annotations

import numpy as np
import pytest

from dla_sim import sdp, sdp_fast
from dla_sim.ops import CubeDesc, Precision, Requant, SdpOp

I8, I16 = Precision.INT8, Precision.INT16


def _requant(rng, c, base, scale_lo=1, offset=0, out=I8, per_layer=False, zeros=False, scale_hi=2**15):
    """Random per-channel scales and shifts around ``base`` (so that results stay mostly in range);
    ``zeros``: a third of the channels shift by 0 (no rounding there)."""
    n = 1 if per_layer else c
    sh = np.clip(base + rng.integers(-1, 2, n), 0, 62)
    if zeros:
        sh[rng.random(n) < 0.33] = 0
    return Requant(scale=tuple(int(v) for v in rng.integers(scale_lo, scale_hi, n)),
                   shift=tuple(int(v) for v in sh), offset=offset, out_precision=out)


def _case(seed: int, kind: str):
    """(op, x, operands) of one random programming; ``kind`` picks the corner exercised. Magnitudes
    vary (small values make exact rounding ties frequent), converters are scaled so that most
    outputs land inside the output range."""
    rng = np.random.default_rng(seed)
    n, c, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 70)), int(rng.integers(1, 9)), int(rng.integers(1, 9))
    shape = (n, c, h, w)
    out = I16 if kind == "int16_out" else I8
    lg = {"huge": 31, "int8_in": 7}.get(kind, int(rng.choice([4, 8, 14, 21])))
    xr = 2**lg - 1
    x = rng.integers(-xr - 1, xr + 1, shape).astype(np.int8 if kind == "int8_in" else np.int32)
    if kind == "huge":  # CACC values at the int32 rails: the bias add saturates
        x[..., 0] = rng.choice(np.array([-(2**31), 2**31 - 1]), (n, c, h))
    bshift = int(rng.integers(0, 12)) if kind in ("huge", "bias_shift") else 0
    bias = rng.integers(-min(32768, 2**lg), min(32768, 2**lg), c)
    vlg = max(lg, 15 + bshift if kind in ("huge", "bias_shift") else lg)
    eltwise = None if kind in ("plain", "int16_out", "int8_in") else "add"
    signed = kind == "signed"
    in_rq = None
    if eltwise and kind != "eltwise_raw":
        in_rq = _requant(rng, c, max(0, 22 - vlg), scale_lo=-(2**15) if signed else 1,
                         offset=int(rng.integers(-20, 20)) if signed else 0, zeros=kind == "mixed_shift")
    act = {"clip": "clip", "plain": "none", "signed": "none"}.get(kind, "relu")
    out_bits = 15 if out is I16 else 7
    out_rq = _requant(rng, c, vlg + 16 - out_bits, scale_lo=-(2**15) if signed else 1,
                      offset=int(rng.integers(-2**(vlg - 2), 2**(vlg - 2))) if kind in ("signed", "huge") else 0,
                      out=out, per_layer=kind == "plain", zeros=kind == "mixed_shift")
    op = SdpOp(name="t", input=CubeDesc(n=n, c=c, h=h, w=w, precision=I8),
               output=CubeDesc(n=n, c=c, h=h, w=w, precision=out),
               bias="per_layer" if kind == "per_layer_bias" else "per_channel", bias_shift=bshift,
               eltwise=eltwise, in_requant=in_rq, activation=act,
               clip_max=float(rng.integers(0, 2**vlg)) if act == "clip" else None, out_requant=out_rq)
    ops = {"bias": bias[:1] if kind == "per_layer_bias" else bias}
    if eltwise:
        ops["eltwise"] = rng.integers(-128, 128, shape).astype(np.int8)
    return op, x, ops


def _ties_case(seed: int, relu: bool = False):
    """Small values, scales and shifts: exact halves (rounding ties) are common — of both signs, or
    (``relu``: non-negative scales) only positive ones, the converter's float64 route."""
    rng = np.random.default_rng(seed)
    lo_scale = 0 if relu else -7
    shape = (1, int(rng.integers(4, 40)), 6, 7)
    c = shape[1]
    x = rng.integers(-40, 40, shape).astype(np.int32)
    in_rq = _requant(rng, c, 2, scale_lo=lo_scale, scale_hi=8, offset=int(rng.integers(-5, 5)))
    out_rq = _requant(rng, c, 2, scale_lo=lo_scale, scale_hi=8, offset=int(rng.integers(-5, 1)), zeros=True)
    op = SdpOp(name="t", input=CubeDesc(n=1, c=c, h=6, w=7, precision=I8),
               output=CubeDesc(n=1, c=c, h=6, w=7, precision=I8), bias="per_channel", eltwise="add",
               in_requant=in_rq, activation="relu" if relu else "none", out_requant=out_rq)
    return op, x, {"bias": rng.integers(-30, 30, c), "eltwise": rng.integers(-128, 128, shape).astype(np.int8)}


KINDS = ["plain", "relu_add", "signed", "huge", "bias_shift", "mixed_shift", "clip", "eltwise_raw", "int16_out",
         "int8_in", "per_layer_bias"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(6))
def test_fast_path_matches_the_int64_chain(kind, seed):
    op, x, ops = _case(1000 * KINDS.index(kind) + seed, kind)
    assert sdp_fast.supported(op, ops)
    b = sdp._int16(sdp._operand(ops["bias"], op.bias, x.shape, "bias"), "bias")
    fast = sdp_fast.run_int(op, x, ops, b)
    assert fast is not None, "the fast path must take this programming"
    want = sdp._run_int_reference(op, x, ops)
    assert fast.dtype == want.dtype
    np.testing.assert_array_equal(fast, want)
    np.testing.assert_array_equal(sdp._run_int(op, x, ops), want)
    if kind not in ("huge", "mixed_shift"):  # most results inside the output range, not on its rails
        rail = np.iinfo(want.dtype)
        assert np.mean((want == rail.min) | (want == rail.max)) < 0.5


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_rounding_ties(seed, relu):
    op, x, ops = _ties_case(seed, relu)
    b = sdp._int16(sdp._operand(ops["bias"], op.bias, x.shape, "bias"), "bias")
    fast = sdp_fast.run_int(op, x, ops, b)
    assert fast is not None
    np.testing.assert_array_equal(fast, sdp._run_int_reference(op, x, ops))


def test_saturating_corner_really_saturates():
    """The 'huge' corner must push the bias add past int32 (the X1 saturation acts)."""
    op, x, ops = _case(3000, "huge")
    v = x.astype(np.int64) + (ops["bias"].astype(np.int64) << op.bias_shift).reshape(1, -1, 1, 1)
    assert ((v > 2**31 - 1) | (v < -(2**31))).sum() > 10
    want = sdp._run_int_reference(op, x, ops)
    b = sdp._int16(sdp._operand(ops["bias"], op.bias, x.shape, "bias"), "bias")
    np.testing.assert_array_equal(sdp_fast.run_int(op, x, ops, b), want)


def test_unsupported_programmings_fall_back():
    rng = np.random.default_rng(5)
    op, x, ops = _case(7, "relu_add")
    wide = op.__class__(**{**op.__dict__, "bias_shift": 40})  # |bias| << 40 beyond the proven range
    b = sdp._int16(sdp._operand(ops["bias"], wide.bias, x.shape, "bias"), "bias")
    assert sdp_fast.run_int(wide, x, ops, b) is None
    np.testing.assert_array_equal(sdp._run_int(wide, x, ops), sdp._run_int_reference(wide, x, ops))
    ops16 = {**ops, "eltwise": rng.integers(-300, 300, x.shape).astype(np.int16)}  # int16 stream: not taken
    assert sdp_fast.run_int(op, x, ops16, sdp._int16(ops["bias"].reshape(1, -1, 1, 1), "bias")) is None
    prelu = op.__class__(**{**op.__dict__, "activation": "prelu", "prelu_slope": 3})
    assert not sdp_fast.supported(prelu, ops)


def test_converter_operands_are_kept_per_requant():
    import gc

    rq = Requant(scale=(3, 5), shift=(1, 40), offset=2)
    k = sdp_fast._converter_of(rq, 2)
    assert sdp_fast._converter_of(rq, 2) is k
    assert k.shift_max == 40 and k.scale_min == 3 and k.offset == 2 and k.any_pos and k.all_pos
    np.testing.assert_array_equal(k.factor.ravel(), [3 / 2, 5 * 2.0**-40])
    other = Requant(scale=(3, 5), shift=(1, 0), offset=2)  # equal-looking fields, another converter
    assert sdp_fast._converter_of(other, 2).all_pos is False
    key = id(rq)
    del rq, k
    gc.collect()
    assert key not in sdp_fast._converters
