"""RUBIK contract: deconvolution (phase convolutions + contract) equals a transposed convolution."""

import dataclasses

import numpy as np
import pytest

from dla_sim import rubik
from dla_sim.config import get_config
from dla_sim.limits import DlaLimitError
from dla_sim.ops import CubeDesc, Precision, RubikOp

NV_FULL = get_config("nv_full")


def _transposed_conv(x, w, s):
    """Reference: scatter every input pixel through the kernel (float64). w: (C, K, R, S)."""
    n, c, h, wd = x.shape
    _, k, r, q = w.shape
    sy, sx = s
    y = np.zeros((n, k, (h - 1) * sy + r, (wd - 1) * sx + q))
    for i in range(h):
        for j in range(wd):
            y[:, :, i * sy : i * sy + r, j * sx : j * sx + q] += np.einsum("nc,ckrs->nkrs", x[:, :, i, j], w)
    return y


def _phase_convs(x, w, s):
    """The deconvolution as sy*sx stride-1 convolutions with split, reversed kernels ([PG])."""
    n, c, h, wd = x.shape
    _, k, r, q = w.shape
    sy, sx = s
    ry, rx = -(-r // sy), -(-q // sx)
    xp = np.pad(x, ((0, 0), (0, 0), (ry - 1, ry - 1), (rx - 1, rx - 1)))
    outs = []
    for py in range(sy):
        for px in range(sx):
            sub = np.zeros((c, k, ry, rx))
            for jy in range(ry):
                for jx in range(rx):
                    if jy * sy + py < r and jx * sx + px < q:
                        sub[:, :, ry - 1 - jy, rx - 1 - jx] = w[:, :, jy * sy + py, jx * sx + px]
            ho, wo = h + ry - 1, wd + rx - 1
            o = np.zeros((n, k, ho, wo))
            for a in range(ry):
                for b in range(rx):
                    o += np.einsum("nchw,ck->nkhw", xp[:, :, a : a + ho, b : b + wo], sub[:, :, a, b])
            outs.append(o)
    return np.concatenate(outs, axis=1), (h + ry - 1) * sy, (wd + rx - 1) * sx


@pytest.mark.parametrize("stride,kernel", [((2, 2), (4, 4)), ((2, 3), (3, 5)), ((1, 2), (1, 2)), ((3, 1), (5, 1))])
def test_deconvolution_via_contract_equals_transposed_conv(stride, kernel):
    rng = np.random.default_rng(71)
    x = rng.integers(-8, 8, (2, 5, 6, 7)).astype(np.float64)
    k = 32
    w = rng.integers(-8, 8, (5, k, *kernel)).astype(np.float64)
    ext, hh, ww = _phase_convs(x, w, stride)
    sy, sx = stride
    op = RubikOp(
        name="ct", input=CubeDesc(n=2, c=ext.shape[1], h=ext.shape[2], w=ext.shape[3], precision=Precision.INT8),
        output=CubeDesc(n=2, c=k, h=hh, w=ww, precision=Precision.INT8), mode="contract", stride=stride,
    )
    y = rubik.run(op, ext.astype(np.int32), cfg=NV_FULL)
    ref = _transposed_conv(x, w, stride)
    assert np.array_equal(y[:, :, : ref.shape[2], : ref.shape[3]], ref)
    assert not y[:, :, ref.shape[2] :].any() and not y[:, :, :, ref.shape[3] :].any()
    assert sy * sx * k == ext.shape[1]


def test_contract_alignment_and_dims_raise():
    bad = RubikOp(name="b", input=CubeDesc(c=48, h=4, w=4), output=CubeDesc(c=12, h=8, w=8), stride=(2, 2))
    with pytest.raises(DlaLimitError, match=r"C=48 x 1 B not divisible by stride_x\*stride_y\*32 B = 128"):
        rubik.run(bad, np.zeros((1, 48, 4, 4), np.int8), cfg=NV_FULL)
    wide = RubikOp(name="w", input=CubeDesc(c=128, h=4, w=5000), output=CubeDesc(c=32, h=8, w=10000), stride=(2, 2))
    with pytest.raises(DlaLimitError, match="output width 10000 exceeds 8192"):
        rubik.timing(wide, NV_FULL)
    with pytest.raises(DlaLimitError, match="RUBIK not available on nv_small"):
        rubik.timing(dataclasses.replace(bad, input=CubeDesc(c=128, h=4, w=4), output=CubeDesc(c=32, h=8, w=8)),
                     get_config("nv_small"))


def test_split_merge_identity_and_timing():
    rng = np.random.default_rng(72)
    cube = CubeDesc(c=20, h=6, w=10, precision=Precision.FP16)
    x = rng.standard_normal((1, 20, 6, 10)).astype(np.float16)
    for mode in ("split", "merge"):
        op = RubikOp(name=mode, input=cube, output=cube, mode=mode)
        assert np.array_equal(rubik.run(op, x, cfg=NV_FULL), x)
    t = rubik.timing(RubikOp(name="s", input=cube, output=cube, mode="split"), NV_FULL)
    assert t.dram_read_bytes == 2 * 6 * 10 * 32  # 20 FP16 channels -> 2 atoms per pixel
    assert t.dram_write_bytes == 20 * 6 * 64  # one plane per channel, 20 B lines padded to 64 B
    c = RubikOp(name="c", input=CubeDesc(c=128, h=4, w=8), output=CubeDesc(c=32, h=8, w=16), stride=(2, 2))
    tc = rubik.timing(c, NV_FULL)
    assert tc.cycles == pytest.approx((tc.dram_read_bytes + tc.dram_write_bytes) / NV_FULL.dram_bytes_per_cycle())
