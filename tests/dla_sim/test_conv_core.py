"""CONV core: functional results against independent float64 references, and timing rules."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from dla_sim import cbuf, conv_core
from dla_sim.config import NV_FULL, ORIN, SPREADSHEET, XAVIER
from dla_sim.limits import DlaLimitError
from dla_sim.ops import ConvOp, CubeDesc, Precision, Requant


def ref_conv(x, w, stride=(1, 1), pad=(0, 0, 0, 0), dil=(1, 1), groups=1, pad_value=0.0):
    """Tap-by-tap float64 convolution (independent of the im2col path)."""
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    n, c, h, wd = x.shape
    k, cg, r, s = w.shape
    pt, pl, pb, pr = pad
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=pad_value)
    ho = (h + pt + pb - (r - 1) * dil[0] - 1) // stride[0] + 1
    wo = (wd + pl + pr - (s - 1) * dil[1] - 1) // stride[1] + 1
    out = np.zeros((n, k, ho, wo))
    kg = k // groups
    for g in range(groups):
        xs = xp[:, g * cg:(g + 1) * cg]
        for i in range(r):
            for j in range(s):
                y0, x0 = i * dil[0], j * dil[1]
                win = xs[:, :, y0:y0 + stride[0] * (ho - 1) + 1:stride[0], x0:x0 + stride[1] * (wo - 1) + 1:stride[1]]
                out[:, g * kg:(g + 1) * kg] += np.einsum("nchw,kc->nkhw", win, w[g * kg:(g + 1) * kg, :, i, j])
    return out


def ref_deconv(x, wt, stride):
    n, c, h, w = x.shape
    _, k, r, s = wt.shape
    out = np.zeros((n, k, (h - 1) * stride[0] + r, (w - 1) * stride[1] + s))
    xf, wf = x.astype(np.float64), wt.astype(np.float64)
    for iy in range(h):
        for ix in range(w):
            out[:, :, iy * stride[0]:iy * stride[0] + r, ix * stride[1]:ix * stride[1] + s] += np.einsum(
                "nc,ckrs->nkrs", xf[:, :, iy, ix], wf
            )
    return out


def make_op(n, c, h, w, k, r, s, stride=(1, 1), pad=(0, 0, 0, 0), dil=(1, 1), groups=1,
            prec=Precision.INT8, mode="direct", requant=None, has_bias=False, pad_value=0):
    ho = (h + pad[0] + pad[2] - (r - 1) * dil[0] - 1) // stride[0] + 1
    wo = (w + pad[1] + pad[3] - (s - 1) * dil[1] - 1) // stride[1] + 1
    return ConvOp(
        name="t", input=CubeDesc(n=n, c=c, h=h, w=w, precision=prec),
        output=CubeDesc(n=n, c=k, h=ho, w=wo, precision=prec), kernel=(r, s), stride=stride, pad=pad,
        dilation=dil, groups=groups, mode=mode, requant=requant, has_bias=has_bias, pad_value=pad_value,
    )


def rand_i8(rng, shape, lo=-128, hi=127):
    return rng.integers(lo, hi + 1, size=shape).astype(np.int8)


CASES = [
    dict(n=1, c=64, h=12, w=10, k=48, r=3, s=3, pad=(1, 1, 1, 1)),
    dict(n=2, c=35, h=11, w=13, k=20, r=5, s=3, stride=(2, 3), pad=(2, 1, 0, 2)),
    dict(n=1, c=16, h=15, w=15, k=8, r=3, s=3, dil=(2, 3), pad=(2, 1, 1, 2)),
    dict(n=3, c=32, h=9, w=9, k=16, r=3, s=3, groups=4, pad=(1, 1, 1, 1)),
    dict(n=1, c=24, h=10, w=8, k=24, r=3, s=3, groups=24, pad=(1, 1, 1, 1), stride=(2, 2)),
    dict(n=1, c=130, h=1, w=1, k=70, r=1, s=1),
]


@pytest.mark.parametrize("case", CASES)
def test_int8_accumulate_bit_exact(case):
    rng = np.random.default_rng(hash(str(case)) % 2**32)
    op = make_op(**case, pad_value=-3)
    x = rand_i8(rng, op.input.shape)
    w = rand_i8(rng, op.weight_shape)
    acc = conv_core.accumulate(op, x, w, cfg=NV_FULL)
    ref = ref_conv(x, w, op.stride, op.pad, op.dilation, op.groups, pad_value=-3)
    assert acc.dtype == np.int32
    np.testing.assert_array_equal(acc.astype(np.int64), ref.astype(np.int64))


def _ref_requant(v, scale, shift):
    p = v.astype(object) * scale
    out = np.empty(v.shape, dtype=np.int64)
    for idx, val in np.ndenumerate(p):
        sh = int(shift[idx[1]])
        sc = val
        mag = (abs(sc) + ((1 << (sh - 1)) if sh else 0)) >> sh
        out[idx] = max(-128, min(127, mag if sc >= 0 else -mag))
    return out


def test_int8_run_with_bias_requant_bit_exact():
    rng = np.random.default_rng(7)
    k = 12
    scale = rng.integers(1, 2**15, size=k)
    shift = rng.integers(12, 24, size=k)
    op = make_op(1, 40, 7, 9, k, 3, 3, pad=(1, 1, 1, 1), has_bias=True,
                 requant=Requant(scale=tuple(int(v) for v in scale), shift=tuple(int(v) for v in shift)))
    x, w = rand_i8(rng, op.input.shape), rand_i8(rng, op.weight_shape)
    bias = rng.integers(-5000, 5000, size=k)
    y = conv_core.run(op, x, w, bias, cfg=NV_FULL)
    ref = ref_conv(x, w, pad=op.pad).astype(np.int64) + bias.reshape(1, -1, 1, 1)
    want = _ref_requant(ref, scale.reshape(1, -1, 1, 1), shift)
    assert y.dtype == np.int8
    assert np.unique(y).size > 20  # the converter is exercised, not saturated flat
    np.testing.assert_array_equal(y.astype(np.int64), want)


@pytest.mark.parametrize("case", CASES[:5])
def test_fp16_within_tolerance(case):
    rng = np.random.default_rng(11)
    op = make_op(**case, prec=Precision.FP16)
    x = rng.standard_normal(op.input.shape).astype(np.float16)
    w = (rng.standard_normal(op.weight_shape) * 0.2).astype(np.float16)
    acc = conv_core.accumulate(op, x, w, cfg=NV_FULL)
    out = conv_core.run(op, x, w, cfg=NV_FULL)
    ref = ref_conv(x, w, op.stride, op.pad, op.dilation, op.groups)
    assert acc.dtype == np.float32 and out.dtype == np.float16
    scale = np.abs(ref).max()
    np.testing.assert_allclose(out.astype(np.float64), ref, rtol=1e-2, atol=1e-2 * scale)


def test_winograd_fp16_matches_direct():
    rng = np.random.default_rng(3)
    op = make_op(1, 40, 12, 16, 24, 3, 3, pad=(1, 1, 1, 1), prec=Precision.FP16, mode="winograd")
    x = rng.standard_normal(op.input.shape).astype(np.float16)
    g = (rng.standard_normal(op.weight_shape) * 0.2).astype(np.float16)
    u = conv_core.winograd_weights(g, Precision.FP16)
    acc = conv_core.accumulate(op, x, u, cfg=NV_FULL).astype(np.float64)
    ref = ref_conv(x, g, pad=op.pad)
    np.testing.assert_allclose(acc, ref, rtol=1e-2, atol=1e-2 * np.abs(ref).max())


def test_winograd_int8_is_exactly_four_times_direct_when_the_pra_fits_int8():
    """|V| <= 4 * 31 < 128: the PRA output holds every transformed input at PRA truncate 0."""
    rng = np.random.default_rng(5)
    op = make_op(1, 64, 8, 12, 32, 3, 3, pad=(1, 1, 1, 1), mode="winograd")
    x = rand_i8(rng, op.input.shape, -31, 31)
    g = rand_i8(rng, op.weight_shape, -12, 12)  # |4U| <= 9*12 < 128: representable
    u = conv_core.winograd_weights(g, Precision.INT8)
    acc = conv_core.accumulate(op, x, u, cfg=NV_FULL).astype(np.int64)
    direct = conv_core.accumulate(make_op(1, 64, 8, 12, 32, 3, 3, pad=(1, 1, 1, 1)), x, g, cfg=NV_FULL)
    np.testing.assert_array_equal(acc, conv_core.WINOGRAD_INT8_GAIN * direct.astype(np.int64))


def _winograd_pra(x: np.ndarray, g: np.ndarray, shift: int) -> np.ndarray:
    """Independent F(2x2,3x3) per tile: V = C^T d C truncated as [PREC]'s pra_trunc, U4 = 4 G g G^T."""
    c_t = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)  # C^T
    gm = np.array([[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]], np.float64)  # 2G
    a_t = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    n, c, h, w = x.shape
    out = np.zeros((n, g.shape[0], h, w))
    u = np.einsum("ar,kcrs,bs->kcab", gm, g.astype(np.float64), gm)
    for i in range(0, h, 2):
        for j in range(0, w, 2):
            v = np.einsum("ab,ncbd,ed->ncae", c_t, xp[:, :, i:i + 4, j:j + 4], c_t)
            r = np.sign(v) * np.floor(np.abs(v) / 2 ** shift + 0.5)
            v = np.clip(r, -128, 127)
            m = np.einsum("ncab,kcab->nkab", v, u)
            out[:, :, i:i + 2, j:j + 2] = np.einsum("pa,nkab,qb->nkpq", a_t, m, a_t)
    return out


@pytest.mark.parametrize("shift", [0, 1, 2])
def test_winograd_int8_truncates_the_pra_as_the_precision_doc_says(shift):
    """Full-range int8 input: the PRA output is V >> pra_trunc rounded and saturated to int8
    ([PREC] pra_trunc), so the result is not the direct convolution (why NVDLA's compiler keeps
    INT8 in direct mode); at PRA truncate 2 it is the direct result up to V's dropped low bits."""
    rng = np.random.default_rng(6 + shift)
    op = make_op(1, 16, 8, 8, 16, 3, 3, pad=(1, 1, 1, 1), mode="winograd")
    op = dataclasses.replace(op, pra_trunc=shift)
    x = rand_i8(rng, op.input.shape)
    g = rand_i8(rng, op.weight_shape, -12, 12)
    acc = conv_core.accumulate(op, x, conv_core.winograd_weights(g, Precision.INT8), cfg=NV_FULL)
    np.testing.assert_array_equal(acc.astype(np.int64), _winograd_pra(x, g, shift).astype(np.int64))
    direct = ref_conv(x, g, pad=op.pad) * conv_core.winograd_int8_gain(shift)
    assert not np.array_equal(acc.astype(np.float64), direct)
    if shift == 2:
        err = acc.astype(np.float64) - direct
        assert 10 * np.log10(np.sum(direct ** 2) / np.sum(err ** 2)) > 20


def test_winograd_int8_rejects_unrepresentable_weights():
    g = np.full((1, 1, 3, 3), 100, dtype=np.int8)
    with pytest.raises(DlaLimitError, match="exceeds int8"):
        conv_core.winograd_weights(g, Precision.INT8)


def test_image_mode_equals_direct():
    rng = np.random.default_rng(9)
    op = make_op(1, 3, 20, 18, 16, 7, 7, stride=(2, 2), pad=(3, 3, 3, 3), mode="image")
    x, w = rand_i8(rng, op.input.shape), rand_i8(rng, op.weight_shape)
    acc = conv_core.accumulate(op, x, w, cfg=XAVIER)
    np.testing.assert_array_equal(acc, ref_conv(x, w, (2, 2), op.pad).astype(np.int64))


@pytest.mark.parametrize("stride,kernel", [((2, 2), (4, 4)), ((2, 3), (3, 5)), ((3, 1), (3, 2))])
def test_deconvolution_int8_matches_transposed_conv(stride, kernel):
    rng = np.random.default_rng(sum(stride) * 10 + sum(kernel))
    x = rand_i8(rng, (2, 24, 5, 6))
    wt = rand_i8(rng, (24, 16, *kernel))
    got = conv_core.deconvolution(x, wt, stride, cfg=NV_FULL)
    np.testing.assert_array_equal(got.astype(np.int64), ref_deconv(x, wt, stride).astype(np.int64))


def test_deconvolution_fp16():
    rng = np.random.default_rng(21)
    x = rng.standard_normal((1, 16, 6, 5)).astype(np.float16)
    wt = (rng.standard_normal((16, 8, 4, 4)) * 0.3).astype(np.float16)
    got = conv_core.deconvolution(x, wt, (2, 2), cfg=NV_FULL).astype(np.float64)
    ref = ref_deconv(x, wt, (2, 2))
    np.testing.assert_allclose(got, ref, rtol=1e-2, atol=1e-2 * np.abs(ref).max())


def test_contract_layout():
    ext = np.arange(2 * 3 * 4 * 2 * 2).reshape(1, 2 * 3 * 4, 2, 2)
    out = conv_core.contract(ext, (2, 3))
    assert out.shape == (1, 4, 4, 6)
    # phase (py=1, px=2) = channel block 1*3+2 = 5 lands at (oy*2+1, ox*3+2)
    assert out[0, 1, 2 * 1 + 1, 3 * 0 + 2] == ext[0, 5 * 4 + 1, 1, 0]


def test_out_of_limit_ops_raise_naming_the_limit():
    rng = np.random.default_rng(0)
    bad = make_op(1, 16, 8, 8, 16, 5, 5, pad=(2, 2, 2, 2), mode="winograd")
    with pytest.raises(DlaLimitError, match="3×3 kernel at stride 1, got 5×5"):
        conv_core.accumulate(bad, rand_i8(rng, bad.input.shape), rand_i8(rng, (16, 16, 4, 4)), cfg=NV_FULL)
    op = make_op(1, 16, 8, 8, 16, 3, 3)
    lying = ConvOp(input=op.input, output=op.output.with_(h=8), kernel=(3, 3))
    with pytest.raises(DlaLimitError, match="output size: geometry gives 6x6"):
        conv_core.timing(lying, XAVIER)
    big_batch = make_op(33, 16, 4, 4, 16, 1, 1)
    with pytest.raises(DlaLimitError, match="batch 33 exceeds 32"):
        conv_core.timing(big_batch, XAVIER)
    strided = make_op(1, 16, 40, 40, 16, 3, 3, stride=(9, 9))
    with pytest.raises(DlaLimitError, match="conv stride 9×9 exceeds 8"):
        conv_core.accumulate(strided, rand_i8(rng, strided.input.shape), rand_i8(rng, strided.weight_shape),
                             cfg=NV_FULL)


def test_mac_cycles_res2a_branch2b_and_winograd_gain():
    op = make_op(1, 64, 56, 56, 64, 3, 3, pad=(1, 1, 1, 1), mode="winograd")
    assert conv_core.compute_cycles(op, NV_FULL) == 25088  # 64*56*56*64*9 / 2048 / 2.25
    direct = make_op(1, 64, 56, 56, 64, 3, 3, pad=(1, 1, 1, 1))
    assert conv_core.compute_cycles(direct, NV_FULL) / conv_core.compute_cycles(op, NV_FULL) == 2.25


def test_fc_weight_reload_penalty():
    fc = make_op(1, 2048, 1, 1, 1024, 1, 1)
    eff = fc.macs / NV_FULL.conv.macs_int8 / conv_core.compute_cycles(fc, NV_FULL)
    assert eff == pytest.approx(0.0625)
    fc16 = make_op(16, 2048, 1, 1, 1024, 1, 1)
    assert fc16.macs / 2048 / conv_core.compute_cycles(fc16, NV_FULL) == pytest.approx(1.0)
    fc4 = make_op(4, 2048, 1, 1, 1024, 1, 1)
    assert fc4.macs / 2048 / conv_core.compute_cycles(fc4, NV_FULL) == pytest.approx(0.25)


def test_fp16_runs_at_half_rate_and_orin_at_four_times():
    i8 = make_op(1, 256, 28, 28, 256, 1, 1)
    f16 = make_op(1, 256, 28, 28, 256, 1, 1, prec=Precision.FP16)
    assert conv_core.compute_cycles(f16, NV_FULL) == 2 * conv_core.compute_cycles(i8, NV_FULL)
    assert conv_core.compute_cycles(i8, NV_FULL) == 4 * conv_core.compute_cycles(i8, ORIN)


def test_cbuf_modes_and_refetch_traffic():
    small = make_op(1, 64, 56, 56, 64, 3, 3, pad=(1, 1, 1, 1))
    t = conv_core.timing(small, XAVIER)
    assert "cbuf=full" in t.notes
    assert t.dram_read_bytes == 56 * 56 * 64 + 64 * 64 * 9  # input atoms + weights, each once
    # 2 MiB of weights, 6 MB of input: neither fits -> split with refetch
    huge = make_op(1, 512, 96, 128, 512, 3, 3, pad=(1, 1, 1, 1))
    in_b = conv_core.input_bytes(huge)
    w_b, grp = conv_core.weight_bytes(huge, XAVIER)
    pl = cbuf.plan(huge, XAVIER, in_b, w_b, grp)
    assert pl.mode in ("split_h", "split_k")
    moved = pl.input_fetches * in_b + pl.weight_fetches * w_b
    assert moved > in_b + w_b
    t = conv_core.timing(huge, XAVIER)
    assert t.dram_read_bytes == pytest.approx(moved, rel=1e-6)
    # large input, tiny weights: split-H, overlap of R - stride lines per chunk
    tall = make_op(1, 64, 512, 256, 32, 3, 3, pad=(1, 1, 1, 1))
    pl = cbuf.plan(tall, XAVIER, conv_core.input_bytes(tall), *conv_core.weight_bytes(tall, XAVIER))
    assert pl.mode == "split_h" and pl.h_chunks > 1
    assert pl.input_fetches == pytest.approx((512 + (pl.h_chunks - 1) * 2) / 512)


def test_channel_padding_counts_whole_atoms():
    op = make_op(1, 40, 10, 10, 8, 1, 1)  # 40 INT8 channels -> 2 atoms of 32
    t = conv_core.timing(op, XAVIER)
    assert t.dram_read_bytes == 2 * 32 * 100 + 384  # input atoms + 320 B of weights aligned to 128
    assert t.dram_write_bytes == 32 * 100  # 8 output channels still occupy one 32-B atom per pixel


def test_spreadsheet_layer_res2a_branch2b():
    op = make_op(1, 64, 56, 56, 64, 3, 3, pad=(1, 1, 1, 1), mode="winograd")
    t = conv_core.spreadsheet_timing(op, SPREADSHEET)
    assert t.compute_cycles == 25088
    # 196 KB in + 64 KB Winograd weights + 196 KB out = 456 KB at 10 GB/s, 1 GHz
    assert t.cycles == math.ceil(456 / 10 * 1000)
