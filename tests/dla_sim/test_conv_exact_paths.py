"""The CONV core's INT8 arithmetic through float BLAS: the float32 fast path (partial sums provably
< 2**24), the float64 path, the per-tap and 1x1 GEMMs — all must give the exact int64 result."""

from __future__ import annotations

import numpy as np
import pytest

from dla_sim import conv_core
from dla_sim.config import ORIN
from dla_sim.ops import ConvOp, CubeDesc, Precision


def make_op(n, c, h, w, k, r, s, stride=(1, 1), pad=(0, 0, 0, 0), dil=(1, 1), prec=Precision.INT8, pad_value=0):
    ho = (h + pad[0] + pad[2] - (r - 1) * dil[0] - 1) // stride[0] + 1
    wo = (w + pad[1] + pad[3] - (s - 1) * dil[1] - 1) // stride[1] + 1
    return ConvOp(name="t", input=CubeDesc(n=n, c=c, h=h, w=w, precision=prec),
                  output=CubeDesc(n=n, c=k, h=ho, w=wo, precision=prec), kernel=(r, s), stride=stride, pad=pad,
                  dilation=dil, groups=1, mode="direct", requant=None, has_bias=False, pad_value=pad_value)


def _int64_conv(x, w, stride, pad, dil, pad_value):
    """Exact integer convolution in int64, tap by tap (independent of every BLAS path)."""
    n, c, h, wd = x.shape
    k, _, r, s = w.shape
    pt, pl, pb, pr = pad
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=pad_value)
    ho = (h + pt + pb - (r - 1) * dil[0] - 1) // stride[0] + 1
    wo = (wd + pl + pr - (s - 1) * dil[1] - 1) // stride[1] + 1
    out = np.zeros((n, k, ho, wo), np.int64)
    for i in range(r):
        for j in range(s):
            y0, x0 = i * dil[0], j * dil[1]
            win = xp[:, :, y0:y0 + stride[0] * (ho - 1) + 1:stride[0], x0:x0 + stride[1] * (wo - 1) + 1:stride[1]]
            out += np.einsum("nchw,kc->nkhw", win, w[:, :, i, j].astype(np.int64))
    return out


@pytest.mark.parametrize("c,k,h,r,stride,pad,dil,pad_value,big", [
    (64, 32, 12, 3, (1, 1), (1, 1, 1, 1), (1, 1), 0, False),   # per-tap GEMMs, float32
    (48, 16, 11, 3, (2, 2), (1, 0, 1, 0), (1, 1), -3, False),   # strided, asymmetric pad, pad value
    (40, 24, 14, 3, (1, 1), (2, 2, 2, 2), (2, 2), 0, False),   # dilated
    (96, 40, 9, 1, (1, 1), (0, 0, 0, 0), (1, 1), 0, False),    # 1x1 GEMM
    (64, 16, 10, 1, (2, 2), (0, 0, 0, 0), (1, 1), 0, False),   # strided 1x1
    (8, 16, 10, 3, (1, 1), (1, 1, 1, 1), (1, 1), 0, False),    # im2col (few channels)
    (256, 8, 10, 3, (1, 1), (1, 1, 1, 1), (1, 1), 0, True),    # partial sums >= 2**24: float64 path
])
def test_int8_direct_convolution_is_exact(c, k, h, r, stride, pad, dil, pad_value, big):
    rng = np.random.default_rng(7)
    if big:  # saturated operands: sum |w| * max |x| = 128 * 128 * 2304 > 2**24
        x = rng.choice(np.array([-128, 127], np.int8), size=(1, c, h, h))
        w = rng.choice(np.array([-128, 127], np.int8), size=(k, c, r, r))
    else:
        x = rng.integers(-128, 128, size=(1, c, h, h), dtype=np.int8)
        w = rng.integers(-128, 128, size=(k, c, r, r), dtype=np.int8)
    op = make_op(1, c, h, h, k, r, r, stride=stride, pad=pad, dil=dil, pad_value=pad_value)
    want_type = np.float64 if big else np.float32
    assert conv_core._exact_int_type(x, w.astype(np.float32), op) is want_type
    got = conv_core.accumulate(op, x, w, cfg=ORIN)
    want = np.clip(_int64_conv(x, w, stride, pad, dil, pad_value), -(2**31), 2**31 - 1)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got.astype(np.int64), want)


def test_fp16_convolution_keeps_its_float32_path():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 64, 12, 12)).astype(np.float16)
    w = (0.1 * rng.standard_normal((32, 64, 3, 3))).astype(np.float16)
    op = make_op(1, 64, 12, 12, 32, 3, 3, pad=(1, 1, 1, 1), prec=Precision.FP16)
    got = conv_core.accumulate(op, x, w, cfg=ORIN)
    ref = np.zeros((1, 32, 12, 12))
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    for i in range(3):
        for j in range(3):
            ref += np.einsum("nchw,kc->nkhw", xp[:, :, i:i + 12, j:j + 12], w[:, :, i, j].astype(np.float64))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# dla_sim.conv_exact: the INT8 groups=1 path accumulate() takes (per-tap bounds, prepared weights)


def _case(rng, c, k, h, r, saturated=False, n=1, frozen=False):
    if saturated:  # same-signed large operands: sums far beyond 2**24 that float32 would round
        x = rng.integers(100, 128, size=(n, c, h, h), dtype=np.int8)
        w = rng.integers(100, 128, size=(k, c, r, r), dtype=np.int8)
        w[:, :, 0, 0] *= -1
    else:
        x = rng.integers(-128, 128, size=(n, c, h, h), dtype=np.int8)
        w = rng.integers(-128, 128, size=(k, c, r, r), dtype=np.int8)
    if frozen:
        w.flags.writeable = False
    return x, w


@pytest.mark.parametrize("c,k,h,r,stride,pad,dil,pad_value,saturated,n", [
    (64, 32, 12, 3, (1, 1), (1, 1, 1, 1), (1, 1), 0, False, 2),   # per-tap, float32 sums, batch 2
    (512, 16, 7, 3, (1, 1), (1, 1, 1, 1), (1, 1), 0, True, 1),    # per-tap float32 GEMMs, float64 sum
    (256, 8, 9, 3, (2, 2), (1, 1, 1, 1), (1, 1), 5, True, 1),     # strided, float64 sum, pad value
    (2048, 8, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 0, True, 1),    # one tap's bound >= 2**24: float64 GEMMs
    (40, 24, 14, 3, (1, 1), (2, 2, 2, 2), (2, 2), -7, False, 1),  # dilated
    (2048, 40, 5, 1, (1, 1), (0, 0, 0, 0), (1, 1), 0, True, 2),   # 1x1 beyond 2**24: float64 GEMM
    (96, 40, 9, 1, (2, 2), (0, 0, 0, 0), (1, 1), 0, False, 1),    # strided 1x1 on the int8 input
    (3, 16, 20, 7, (2, 2), (3, 3, 3, 3), (1, 1), 0, False, 1),    # few channels: im2col
])
def test_conv_exact_paths_match_int64(c, k, h, r, stride, pad, dil, pad_value, saturated, n):
    from dla_sim import conv_exact

    rng = np.random.default_rng(c * 31 + k)
    x, w = _case(rng, c, k, h, r, saturated, n)
    op = make_op(n, c, h, h, k, r, r, stride=stride, pad=pad, dil=dil, pad_value=pad_value)
    assert conv_exact.supported(op, x, w)
    got = conv_core.accumulate(op, x, w, cfg=ORIN)
    want = np.clip(_int64_conv(x, w, stride, pad, dil, pad_value), -(2**31), 2**31 - 1)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got.astype(np.int64), want)
    np.testing.assert_array_equal(got, conv_core._accumulate_blas(op, x, w))  # the whole-layer float path


def test_cacc_saturates_at_int32():
    """8192 channels x 16 taps of (-128) * (-128) sum to exactly 2**31: CACC hands on 2**31 - 1."""
    x = np.full((1, 8192, 4, 4), -128, np.int8)
    w = np.full((2, 8192, 4, 4), -128, np.int8)
    w[1, :, 0, 0] = 127  # the second kernel stays inside int32
    op = make_op(1, 8192, 4, 4, 2, 4, 4)
    got = conv_core.accumulate(op, x, w, cfg=ORIN)
    assert got.ravel().tolist() == [2**31 - 1, 2**31 - 8192 * 128 * 255]


def test_prepared_weights_are_kept_for_read_only_arrays_only():
    from dla_sim import conv_exact

    rng = np.random.default_rng(11)
    x, w = _case(rng, 64, 16, 8, 3)
    op = make_op(1, 64, 8, 8, 16, 3, 3, pad=(1, 1, 1, 1))
    first = conv_core.accumulate(op, x, w, cfg=ORIN)
    w[0] = -w[0]  # a writeable array may change between calls: nothing may be cached for it
    np.testing.assert_array_equal(conv_core.accumulate(op, x, w, cfg=ORIN).astype(np.int64),
                                  _int64_conv(x, w, (1, 1), (1, 1, 1, 1), (1, 1), 0))
    assert not np.array_equal(first, conv_core.accumulate(op, x, w, cfg=ORIN))
    assert id(w) not in conv_exact._cache
    view = w.view()
    view.flags.writeable = False  # read-only view of a writeable array: still not frozen
    assert not conv_exact._frozen(view)
    frozen = w.copy()
    frozen.flags.writeable = False
    a = conv_core.accumulate(op, x, frozen, cfg=ORIN)
    assert conv_exact._entry(frozen) is conv_exact._entry(frozen) and conv_exact._entry(frozen)
    np.testing.assert_array_equal(conv_core.accumulate(op, x, frozen, cfg=ORIN), a)
    key = id(frozen)
    del frozen
    assert key not in conv_exact._cache  # dropped with its array


def test_prepared_weights_stay_within_the_byte_budget(monkeypatch):
    from dla_sim import conv_exact

    rng = np.random.default_rng(12)
    op = make_op(1, 64, 6, 6, 16, 3, 3, pad=(1, 1, 1, 1))
    x = rng.integers(-128, 128, size=(1, 64, 6, 6), dtype=np.int8)
    ws = []
    for _ in range(4):
        w = rng.integers(-128, 128, size=(16, 64, 3, 3), dtype=np.int8)
        w.flags.writeable = False
        ws.append(w)
    one = 16 * 64 * 9 * 4  # float32 per-tap matrices of one array
    monkeypatch.setattr(conv_exact, "CACHE_BYTES", 2 * one)
    monkeypatch.setattr(conv_exact, "_cache", type(conv_exact._cache)())
    monkeypatch.setattr(conv_exact, "_held", [0])
    for w in ws:
        np.testing.assert_array_equal(conv_core.accumulate(op, x, w, cfg=ORIN).astype(np.int64),
                                      _int64_conv(x, w, (1, 1), (1, 1, 1, 1), (1, 1), 0))
        assert conv_exact._held[0] <= 2 * one
    assert [k for k in conv_exact._cache] == [id(ws[2]), id(ws[3])]  # the oldest were dropped
    assert conv_exact._held[0] == sum(e.nbytes for e in conv_exact._cache.values())


def test_loadable_blobs_are_read_only(tmp_path):
    from dla_sim.loadable import Loadable

    ld = Loadable("t", [], [], {"w": np.arange(12, dtype=np.int8).reshape(3, 4)})
    back = Loadable.from_bytes(ld.to_bytes())
    assert not back.blobs["w"].flags.writeable
    np.testing.assert_array_equal(back.blobs["w"], ld.blobs["w"])


def test_prepared_weights_from_concurrent_threads():
    """Runtime lanes run partitions in threads: concurrent first runs agree and count bytes once."""
    import threading

    from dla_sim import conv_exact

    rng = np.random.default_rng(13)
    x, w = _case(rng, 64, 32, 10, 3, frozen=True)
    op = make_op(1, 64, 10, 10, 32, 3, 3, pad=(1, 1, 1, 1))
    want = _int64_conv(x, w, (1, 1), (1, 1, 1, 1), (1, 1), 0)
    outs: list = []
    threads = [threading.Thread(target=lambda: outs.append(conv_core.accumulate(op, x, w, cfg=ORIN)))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outs) == 6
    for o in outs:
        np.testing.assert_array_equal(o.astype(np.int64), want)
    assert conv_exact._cache[id(w)].nbytes == 32 * 64 * 9 * 4  # one float32 copy counted once
