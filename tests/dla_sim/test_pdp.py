"""PDP pooling: INT8 bit-exact against loop references, FP16 against float64, limits and modes."""

import dataclasses

import numpy as np
import pytest

from dla_sim import pdp
from dla_sim.config import get_config
from dla_sim.limits import DlaLimitError
from dla_sim.ops import CubeDesc, PdpOp, Precision

NV_FULL = get_config("nv_full")


def _op(shape, mode, k, s, pad, prec=Precision.INT8, pad_value=0.0, source="memory", split=1):
    n, c, h, w = shape
    ho = (h + pad[0] + pad[2] - k[0]) // s[0] + 1
    wo = (w + pad[1] + pad[3] - k[1]) // s[1] + 1
    return PdpOp(
        name="p", input=CubeDesc(n=n, c=c, h=h, w=w, precision=prec),
        output=CubeDesc(n=n, c=c, h=ho, w=wo, precision=prec), mode=mode, kernel=k, stride=s, pad=pad,
        pad_value=pad_value, source=source, split_width=split,
    )


def _rha(num: int, shift: int) -> int:
    q = (abs(num) + (1 << (shift - 1))) >> shift
    return -q if num < 0 else q


def _ref(x, op):
    """Loop reference: windows over the padded plane; max/min ignore pads, avg adds pad_value."""
    (kh, kw), (sy, sx), (t, lft, _, _) = op.kernel, op.stride, op.pad
    n, c, ho, wo = op.output.shape
    out = np.zeros((n, c, ho, wo), dtype=np.float64)
    h, w = x.shape[2:]
    for oy in range(ho):
        for ox in range(wo):
            ys = [oy * sy + i - t for i in range(kh)]
            xs = [ox * sx + j - lft for j in range(kw)]
            vals = [x[:, :, yy, xx].astype(np.float64) for yy in ys for xx in xs if 0 <= yy < h and 0 <= xx < w]
            npad = kh * kw - len(vals)
            stack = np.stack(vals)
            if op.mode == "max":
                out[:, :, oy, ox] = stack.max(0)
            elif op.mode == "min":
                out[:, :, oy, ox] = stack.min(0)
            else:
                out[:, :, oy, ox] = stack.sum(0) + npad * op.pad_value
    return out


CASES = [((3, 3), (2, 2), (1, 1, 1, 1)), ((2, 2), (2, 2), (0, 0, 0, 0)), ((8, 5), (3, 1), (7, 4, 2, 0)),
         ((7, 7), (1, 1), (0, 0, 0, 0)), ((1, 1), (16, 9), (0, 0, 0, 0)), ((6, 3), (5, 2), (5, 2, 3, 1))]


@pytest.mark.parametrize("k,s,pad", CASES)
@pytest.mark.parametrize("mode", ["max", "min", "avg"])
def test_int8_pooling_bit_exact(k, s, pad, mode):
    rng = np.random.default_rng(hash((k, s, pad, mode)) % 2**32)
    shape = (2, 35, 19, 23)
    x = rng.integers(-128, 128, shape).astype(np.int8)
    op = _op(shape, mode, k, s, pad, pad_value=float(rng.integers(-20, 20)))
    y = pdp.run(op, x, cfg=NV_FULL)
    ref = _ref(x, op)
    if mode == "avg":
        rw, rh = round(65536 / k[1]), round(65536 / k[0])
        ref = np.vectorize(lambda v: max(-128, min(127, _rha(_rha(int(v) * rw, 16) * rh, 16))))(ref)
        # the reciprocal multiply is within one LSB of the true mean
        assert np.abs(y - _ref(x, op) / (k[0] * k[1])).max() <= 1.0
    assert y.dtype == np.int8 and np.array_equal(y.astype(np.float64), ref)


@pytest.mark.parametrize("k,s,pad", CASES)
@pytest.mark.parametrize("mode", ["max", "min"])
def test_int8_min_max_at_the_rails(k, s, pad, mode):
    """Inputs at -128/127 (the values a pad fill in int8 would take) next to single-sample windows."""
    rng = np.random.default_rng(sum(k) * 100 + sum(s) * 10 + sum(pad))
    shape = (1, 9, 19, 23)
    x = rng.choice(np.array([-128, 127, -127, 126], np.int8), size=shape)
    op = _op(shape, mode, k, s, pad)
    y = pdp.run(op, x, cfg=NV_FULL)
    assert y.dtype == np.int8 and np.array_equal(y.astype(np.float64), _ref(x, op))


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_fp16_pooling_vs_float64(mode):
    rng = np.random.default_rng(51)
    shape = (1, 20, 14, 14)
    x = (rng.standard_normal(shape) * 3).astype(np.float16)
    op = _op(shape, mode, (3, 3), (2, 2), (1, 1, 1, 1), Precision.FP16, pad_value=0.0)
    y = pdp.run(op, x, cfg=NV_FULL)
    ref = _ref(x, op) / (9 if mode == "avg" else 1)
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=1e-2, atol=2e-3)


def test_flying_line_buffer_rule():
    # 512 entries of 112 bits: W_out <= 512 for ceil(kh/sy)=1, 256 for 2, 128 for 3-4, 64 for >4
    for k, s, lim in (((2, 2), (2, 2), 512), ((3, 3), (2, 2), 256), ((3, 3), (1, 1), 128), ((7, 7), (1, 1), 64)):
        op = _op((1, 32, 8, 8), "max", k, s, (0, 0, 0, 0), source="flying")
        assert pdp.flying_max_width(op, NV_FULL) == lim
    wide = _op((1, 32, 4, 300), "max", (3, 3), (1, 1), (0, 0, 0, 0), source="flying")
    with pytest.raises(DlaLimitError, match="on-the-fly output width 298 exceeds 128"):
        pdp.run(wide, np.zeros((1, 32, 4, 300), np.int8), cfg=NV_FULL)
    off = dataclasses.replace(wide, source="memory")
    with pytest.raises(DlaLimitError, match="split_width >= 3"):
        pdp.timing(off, NV_FULL)
    ok = dataclasses.replace(wide, source="memory", split_width=3)
    x = np.random.default_rng(52).integers(-128, 128, (1, 32, 4, 300)).astype(np.int8)
    assert np.array_equal(pdp.run(ok, x, cfg=NV_FULL).astype(np.float64), _ref(x, ok))


def test_limits_raise_with_value():
    with pytest.raises(DlaLimitError, match="pooling window 9×9 exceeds 8"):
        pdp.run(_op((1, 8, 20, 20), "max", (9, 9), (1, 1), (0, 0, 0, 0)), np.zeros((1, 8, 20, 20), np.int8),
                cfg=NV_FULL)
    with pytest.raises(DlaLimitError, match="pooling stride 17×1 exceeds 16"):
        pdp.timing(_op((1, 8, 40, 20), "max", (2, 2), (17, 1), (0, 0, 0, 0)), NV_FULL)
    with pytest.raises(DlaLimitError, match="pooling padding left=8 exceeds 7"):
        pdp.timing(_op((1, 8, 20, 20), "avg", (8, 8), (1, 1), (0, 8, 0, 0)), NV_FULL)


def test_timing_offline_counts_traffic():
    shape = (1, 64, 112, 112)
    op = _op(shape, "max", (3, 3), (2, 2), (1, 1, 1, 1))
    t = pdp.timing(op, NV_FULL)
    assert t.compute_cycles == 64 * 112 * 112 / 8  # 8 elem/cycle on nv_full [SPEC]
    assert t.dram_read_bytes == 2 * 112 * 112 * 32 and t.dram_write_bytes == 2 * 56 * 56 * 32
    assert t.cycles == max(t.compute_cycles, t.dram_bytes / NV_FULL.dram_bytes_per_cycle())
    fly = dataclasses.replace(op, source="flying")
    assert pdp.timing(fly, NV_FULL).dram_read_bytes == 0
