"""SDP: INT8 bit-exact against an integer reference written here, FP16 against float64."""

import dataclasses

import numpy as np
import pytest

from dla_sim import sdp
from dla_sim.config import get_config
from dla_sim.limits import DlaLimitError
from dla_sim.lut import sigmoid_lut, tanh_lut
from dla_sim.ops import CubeDesc, Precision, Requant, SdpOp

NV_FULL = get_config("nv_full")
I8, F16 = Precision.INT8, Precision.FP16
_FIELDS = {f.name for f in dataclasses.fields(SdpOp)}


def _rha(v: np.ndarray, shift) -> np.ndarray:
    """Round half away from zero of v / 2**shift, in float64 (exact for |v| < 2**52)."""
    q = np.asarray(v, dtype=np.float64) / np.power(2.0, shift)
    return np.sign(q) * np.floor(np.abs(q) + 0.5)


def _sat(v, bits):
    return np.clip(v, -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1)


def _op(shape, prec=I8, out=I8, **kw) -> SdpOp:
    extra = {k: kw.pop(k) for k in list(kw) if k.endswith("_shift") or k == "lut_in_scale"}
    missing = [k for k, v in extra.items() if k not in _FIELDS and v]
    if missing:
        pytest.skip(f"SdpOp lacks fields {missing}")
    extra = {k: v for k, v in extra.items() if k in _FIELDS}
    n, c, h, w = shape
    return SdpOp(
        name="t",
        input=CubeDesc(n=n, c=c, h=h, w=w, precision=prec),
        output=CubeDesc(n=n, c=c, h=h, w=w, precision=out),
        **kw,
        **extra,
    )


@pytest.mark.parametrize("bias_shift,scale_shift", [(0, 0), (3, 9)])
def test_int8_bias_scale_eltwise_relu_requant_bit_exact(bias_shift, scale_shift):
    rng = np.random.default_rng(41)
    shape = (2, 40, 5, 6)
    c = shape[1]
    x = rng.integers(-(2**22), 2**22, shape).astype(np.int32)
    bias = rng.integers(-32768, 32768, c)
    scale = rng.integers(-32768, 32768, c)
    elt = rng.integers(-128, 128, shape).astype(np.int8)
    in_rq = Requant(scale=(rng.integers(1, 2**14),), shift=(3,), offset=int(rng.integers(-10, 10)), out_precision=I8)
    out_sc = tuple(int(v) for v in rng.integers(1, 2**15, c))
    out_sh = tuple(int(v) for v in rng.integers(20, 34, c))
    out_rq = Requant(scale=out_sc, shift=out_sh, offset=int(rng.integers(-1000, 1000)), out_precision=I8)
    op = _op(shape, bias="per_channel", scale="per_channel", eltwise="add", in_requant=in_rq, out_requant=out_rq,
             activation="relu", bias_shift=bias_shift, scale_shift=scale_shift)
    y = sdp.run(op, x, bias, scale, elt, cfg=NV_FULL)
    assert y.dtype == np.int8
    # independent reference
    b4, s4 = bias.reshape(1, c, 1, 1), scale.reshape(1, c, 1, 1)
    v = _sat(x.astype(np.float64) + b4 * 2.0**bias_shift, 32)
    v = _sat(_rha(v * s4, scale_shift), 32)
    e = _sat(_rha((elt.astype(np.float64) - in_rq.offset) * in_rq.scale[0], in_rq.shift[0]), 32)
    v = np.maximum(_sat(v + e, 32), 0)
    osc = np.array(out_sc, dtype=np.float64).reshape(1, c, 1, 1)
    osh = np.array(out_sh, dtype=np.float64).reshape(1, c, 1, 1)
    ref = _sat(_rha((v - out_rq.offset) * osc, osh), 8)
    assert np.array_equal(y.astype(np.float64), ref)
    assert (y == 127).any() or (y == 0).any()  # exercised saturation / relu


@pytest.mark.parametrize("kind", ["sub", "max", "min", "mul"])
def test_int8_eltwise_kinds_bit_exact(kind):
    rng = np.random.default_rng(42)
    shape = (1, 33, 4, 7)
    x = rng.integers(-(2**15), 2**15, shape).astype(np.int32)
    elt = rng.integers(-128, 128, shape).astype(np.int8)
    rq = Requant(scale=(9,), shift=(6,), out_precision=I8)
    op = _op(shape, eltwise=kind, out_requant=rq, eltwise_shift=4 if kind == "mul" else 0)
    y = sdp.run(op, x, elt, cfg=NV_FULL)
    xv, ev = x.astype(np.float64), elt.astype(np.float64)
    v = {"sub": xv - ev, "max": np.maximum(xv, ev), "min": np.minimum(xv, ev),
         "mul": _rha(xv * ev, 4 if "eltwise_shift" in _FIELDS else 0)}[kind]
    ref = _sat(_rha(_sat(v, 32) * 9, 6), 8)
    assert np.array_equal(y.astype(np.float64), ref)


def test_int8_prelu_and_clip_bit_exact():
    rng = np.random.default_rng(43)
    shape = (1, 20, 6, 6)
    x = rng.integers(-(2**12), 2**12, shape).astype(np.int32)
    slopes = rng.integers(1, 2**12, 20)
    op = _op(shape, activation="prelu", out_requant=Requant(scale=(3,), shift=(5,)), prelu_shift=12)
    y = sdp.run(op, x, slopes, cfg=NV_FULL)
    xv = x.astype(np.float64)
    ps = 12 if "prelu_shift" in _FIELDS else 0
    v = np.where(xv < 0, _rha(xv * slopes.reshape(1, -1, 1, 1), ps), xv)
    assert np.array_equal(y.astype(np.float64), _sat(_rha(v * 3, 5), 8))
    op = _op(shape, activation="clip", clip_max=1000.0, out_requant=Requant(scale=(1,), shift=(3,)))
    y = sdp.run(op, x, cfg=NV_FULL)
    assert np.array_equal(y.astype(np.float64), _sat(_rha(np.clip(xv, 0, 1000), 3), 8))


def test_int8_to_fp16_output_converter():
    rng = np.random.default_rng(44)
    shape = (1, 17, 3, 3)
    x = rng.integers(-(2**20), 2**20, shape).astype(np.int32)
    op = _op(shape, out=F16, out_requant=Requant(scale=(5,), shift=(7,), out_precision=F16))
    y = sdp.run(op, x, cfg=NV_FULL)
    ref = _sat(_rha(x.astype(np.float64) * 5, 7), 17).astype(np.float16)
    assert y.dtype == np.float16 and np.array_equal(y, ref)


def test_fp16_bias_scale_eltwise_prelu_vs_float64():
    rng = np.random.default_rng(45)
    shape = (2, 24, 5, 5)
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    bias = rng.standard_normal(24)
    scale = rng.uniform(0.5, 2.0, 24)
    elt = rng.standard_normal(shape).astype(np.float16)
    op = _op(shape, F16, F16, bias="per_channel", scale="per_channel", eltwise="mul", activation="prelu",
             prelu_slope=0.125)
    y = sdp.run(op, x, bias, scale, elt, cfg=NV_FULL)
    v = (x.astype(np.float64) + bias.reshape(1, -1, 1, 1)) * scale.reshape(1, -1, 1, 1) * elt
    ref = np.where(v < 0, v * 0.125, v)
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("act", ["sigmoid", "tanh"])
def test_fp16_lut_activation_within_lut_error(act):
    rng = np.random.default_rng(46)
    shape = (1, 16, 8, 8)
    x = (rng.standard_normal(shape) * 5).astype(np.float32)
    y = sdp.run(_op(shape, F16, F16, activation=act), x, cfg=NV_FULL)
    xv = x.astype(np.float64)
    ref = 1 / (1 + np.exp(-xv)) if act == "sigmoid" else np.tanh(xv)
    bound = (sigmoid_lut() if act == "sigmoid" else tanh_lut()).max_abs_error + 2.0**-11  # + fp16 output rounding
    assert np.abs(y.astype(np.float64) - ref).max() <= bound


def test_int_lut_sigmoid_with_input_scale():
    if "lut_in_scale" not in _FIELDS:
        pytest.skip("SdpOp lacks lut_in_scale")
    rng = np.random.default_rng(47)
    shape = (1, 8, 6, 6)
    s_in = 1 / 256
    x = rng.integers(-(10 * 256), 10 * 256, shape).astype(np.int32)
    # LUT output LSB 2**-14; convert to int8 with LSB 1/127 ~ scale 127/2**14
    op = _op(shape, activation="sigmoid", lut_in_scale=s_in, out_requant=Requant(scale=(127,), shift=(14,)))
    y = sdp.run(op, x, cfg=NV_FULL)
    ref = 1 / (1 + np.exp(-x * s_in)) * 127
    assert np.abs(y - ref).max() <= 0.5 + 127 * sigmoid_lut(s_in).max_abs_error + 1e-9


def test_refusals_name_the_limit():
    shape = (1, 8, 2, 2)
    x = np.zeros(shape, np.int32) + 5
    with pytest.raises(DlaLimitError, match="int16"):
        sdp.run(_op(shape, bias="per_layer"), x, np.array([40000]), cfg=NV_FULL)
    with pytest.raises(DlaLimitError, match="FP16 -> INT8"):
        sdp.run(_op(shape, F16, I8), x.astype(np.float32), cfg=NV_FULL)
    with pytest.raises(DlaLimitError, match="LUT"):
        sdp.run(_op(shape, F16, F16, activation="sigmoid"), x.astype(np.float32), cfg=get_config("nv_small"))
    with pytest.raises(DlaLimitError, match="lut_in_scale|FP16"):
        sdp.run(_op(shape, activation="tanh"), x, cfg=NV_FULL)
    with pytest.raises(DlaLimitError, match="converter shift 70"):
        sdp.run(_op(shape, out_requant=Requant(scale=(1,), shift=(70,))), x, cfg=NV_FULL)


def test_timing_flying_and_offline():
    shape = (1, 64, 56, 56)
    op = _op(shape, bias="per_channel", activation="relu")
    t = sdp.timing(op, NV_FULL)
    elems = 64 * 56 * 56
    assert t.compute_cycles == elems / 16  # X1 and X2 at 16 elem/cycle [SPEC]
    assert t.dram_read_bytes == 64 * 2  # per-channel int16 bias, one atom multiple
    assert t.dram_write_bytes == 2 * 56 * 56 * 32  # 64 INT8 channels = 2 atoms per pixel
    off = dataclasses.replace(op, source="memory")
    t2 = sdp.timing(off, NV_FULL)
    assert t2.dram_read_bytes == t.dram_read_bytes + 2 * 56 * 56 * 32
    assert t2.cycles >= t.cycles
    lut_op = _op(shape, F16, F16, activation="sigmoid")
    t3 = sdp.timing(lut_op, NV_FULL)
    assert t3.compute_cycles == elems / 4  # Y unit at 4 elem/cycle
    assert t3.cycles == max(t3.compute_cycles, t3.dram_bytes / NV_FULL.dram_bytes_per_cycle())
