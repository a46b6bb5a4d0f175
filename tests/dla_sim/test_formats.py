"""Feature/weight/I-O formats and the fixed-point primitives, against independent references."""

import numpy as np
import pytest

from dla_sim import formats as F


def _round_half_away(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def test_rshift_round_matches_float_reference():
    rng = np.random.default_rng(1)
    x = rng.integers(-(2**40), 2**40, size=20000)
    s = rng.integers(0, 30, size=20000)
    ref = _round_half_away(x.astype(np.float64) / 2.0**s)  # exact: |x| < 2**53
    assert np.array_equal(F.rshift_round(x, s), ref.astype(np.int64))


def test_rshift_round_ties_go_away_from_zero():
    x = np.array([5, -5, 6, -6, 7, -7, 3, -3])
    assert F.rshift_round(x, 1).tolist() == [3, -3, 3, -3, 4, -4, 2, -2]
    assert F.rshift_round(np.array([3, -3]), -2).tolist() == [12, -12]


def test_convert_int_saturates_and_rounds():
    rng = np.random.default_rng(2)
    x = rng.integers(-(2**31), 2**31, size=5000)
    off = rng.integers(-(2**20), 2**20, size=5000)
    sc = rng.integers(-(2**15), 2**15, size=5000)
    sh = rng.integers(0, 63, size=5000)
    y = F.convert_int(x, off, sc, sh, 8)
    # reference with Python big integers
    ref = []
    for xi, oi, ci, si in zip(x.tolist(), off.tolist(), sc.tolist(), sh.tolist()):
        p = (xi - oi) * ci
        q = (abs(p) + ((1 << si) >> 1)) >> si
        q = -q if p < 0 else q
        ref.append(min(127, max(-128, q)))
    assert y.tolist() == ref


@pytest.mark.parametrize("bpe,atom", [(1, 32), (2, 32), (1, 8), (2, 8)])
def test_feature_pack_positions_and_round_trip(bpe, atom):
    rng = np.random.default_rng(3 + bpe + atom)
    n, c, h, w = 2, 37, 5, 7
    dt = np.int8 if bpe == 1 else np.float16
    x = (rng.integers(-128, 128, (n, c, h, w)) if bpe == 1 else rng.standard_normal((n, c, h, w))).astype(dt)
    lay = F.feature_layout(n, c, h, w, bpe, atom, line_stride=(w + 1) * atom, surface_stride=(h + 2) * (w + 1) * atom)
    buf = F.pack_feature(x, lay)
    epa = atom // bpe
    assert lay.surfaces == -(-c // epa)
    assert lay.total_bytes == n * lay.surfaces * (h + 2) * (w + 1) * atom
    # independent address formula, checked on every element
    for (ni, ci, hi, wi), v in np.ndenumerate(x):
        off = ni * lay.batch_stride + (ci // epa) * lay.surface_stride + hi * lay.line_stride + wi * atom
        off += (ci % epa) * bpe
        got = buf[off : off + bpe].view("<i1" if bpe == 1 else "<f2")[0]
        assert got == v or (np.isnan(got) and np.isnan(v))
    # channel padding is zero
    last = (lay.surfaces - 1) * lay.surface_stride + ((c % epa) or epa) * bpe
    assert not buf[last : (lay.surfaces - 1) * lay.surface_stride + atom].any()
    assert np.array_equal(F.unpack_feature(buf, lay), x)


def test_feature_layout_rejects_misaligned_strides():
    with pytest.raises(ValueError, match="line stride"):
        F.feature_layout(1, 16, 4, 4, 1, 32, line_stride=4 * 32 + 8)
    with pytest.raises(ValueError, match="overlaps"):
        F.feature_layout(1, 16, 4, 4, 1, 32, surface_stride=32)


def test_transfer_bytes_count_padded_atoms():
    lay = F.feature_layout(1, 3, 224, 224, 2, 32)
    assert lay.transfer_bytes == 224 * 224 * 32  # 3 FP16 channels padded to one 16-channel atom
    assert lay.payload_bytes == 3 * 224 * 224 * 2


@pytest.mark.parametrize("bpe", [1, 2])
def test_weight_pack_dc_scan_order(bpe):
    rng = np.random.default_rng(10 + bpe)
    k, c, r, s = 37, 70, 3, 2
    dt = np.int8 if bpe == 1 else np.float16
    wt = (rng.integers(-128, 128, (k, c, r, s)) if bpe == 1 else rng.standard_normal((k, c, r, s))).astype(dt)
    wl = F.weight_layout_dc(k, c, r, s, bpe)
    buf = F.pack_weights_dc(wt, wl)
    assert buf.size % 128 == 0 and buf.size >= k * c * r * s * bpe
    assert not buf[wl.payload_bytes :].any()
    # independent reference: explicit loops in the documented order C' -> K -> S -> R -> C-block, per group
    kg = 32 if bpe == 1 else 16
    seq = []
    for g0 in range(0, k, kg):
        for c0 in range(0, c, 64):
            for ri in range(r):
                for si in range(s):
                    for ki in range(g0, min(g0 + kg, k)):
                        for ci in range(c0, min(c0 + 64, c)):
                            seq.append(wt[ki, ci, ri, si])
    ref = np.array(seq, dtype=dt).astype(np.dtype(dt).newbyteorder("<")).view(np.uint8)
    assert np.array_equal(buf[: ref.size], ref)
    assert np.array_equal(F.unpack_weights_dc(buf, wl), wt)


@pytest.mark.parametrize("fmt", list(F.IOFormat))
def test_io_formats_round_trip_and_size(fmt):
    rng = np.random.default_rng(20)
    c = 3 if fmt is F.IOFormat.DLA_HWC4 else 21
    x = rng.standard_normal((2, c, 5, 9)).astype(np.float16)
    for align in (32, 64):
        buf = F.pack_io(x, fmt, hwc4_row_align=align)
        assert buf.size == F.io_format_bytes(fmt, 2, c, 5, 9, 2, hwc4_row_align=align)
        assert np.array_equal(F.unpack_io(buf, fmt, x.shape, np.float16, hwc4_row_align=align), x)


def test_io_format_sizes_by_hand():
    assert F.io_format_bytes(F.IOFormat.CHW32, 1, 33, 2, 3, 1) == 64 * 6
    assert F.io_format_bytes(F.IOFormat.CHW16, 1, 3, 2, 3, 2) == 16 * 6 * 2
    assert F.io_format_bytes(F.IOFormat.DLA_LINEAR, 1, 3, 2, 3, 2) == 3 * 2 * 64
    assert F.io_format_bytes(F.IOFormat.DLA_HWC4, 1, 3, 2, 9, 1, hwc4_row_align=64) == 2 * 64
    with pytest.raises(ValueError, match="HWC4"):
        F.io_format_bytes(F.IOFormat.DLA_HWC4, 1, 5, 2, 9, 1)


def test_to_fp16_saturates_instead_of_inf():
    y = F.to_fp16(np.array([1e6, -1e6, 1.0009765625]))
    assert y.tolist() == [65504.0, -65504.0, 1.0009765625]


def test_packed_weight_bytes_for_conv_op():
    from dla_sim.config import get_config
    from dla_sim.ops import ConvOp, CubeDesc, Precision

    op = ConvOp(name="c", input=CubeDesc(c=70, h=8, w=8), output=CubeDesc(c=37, h=8, w=8), kernel=(3, 2))
    assert F.packed_weight_bytes(op, get_config("nv_full")) == F.align_up(37 * 70 * 6, 128)
    fp = ConvOp(name="c", input=CubeDesc(c=64, h=8, w=8, precision=Precision.FP16),
                output=CubeDesc(c=64, h=8, w=8, precision=Precision.FP16), kernel=(1, 1), groups=4)
    assert F.packed_weight_bytes(fp, get_config("nv_full")) == 64 * 16 * 2
