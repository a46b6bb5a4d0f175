"""INT8 reference kernels against an independent int64 computation written here with loops."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import int8_conv_layer

from backends.reference import int8
from engine.ir import int8_annotation as annotation
from engine.ir.dtypes import Precision
from engine.ir.int8_math import quantize, requant_params
from engine.ir.layers import PoolingParams, PoolingType
from engine.ir.network import Layer


def _shift_round(x: int, shift: int) -> int:
    """Independent: round(x / 2**shift) half away from zero, in Python integers."""
    if shift == 0:
        return x
    mag = (abs(x) + (1 << (shift - 1))) >> shift
    return -mag if x < 0 else mag


def _clamp(x: int, bits: int) -> int:
    return max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1, x))


def _multiplier(m: float) -> tuple[int, int]:
    """Independent derivation: the largest shift with round(m * 2**shift) <= 32767."""
    for shift in range(63, -1, -1):
        s = int(np.floor(m * 2.0**shift + 0.5))
        if s <= 32767:
            return s, shift
    raise AssertionError("multiplier too large")


def test_requant_params_match_independent_derivation():
    rng = np.random.default_rng(0)
    m = np.exp(rng.uniform(np.log(1e-6), np.log(3e4), 400))
    sc, sh = requant_params(m)
    for mi, s, h in zip(m, sc, sh):
        assert (int(s), int(h)) == _multiplier(float(mi))
        assert abs(s * 2.0**-h - mi) <= mi * 2**-14


def _ref_conv(xq, wq, bias_q16, bias_shift, sc, sh, stride, pad, groups, relu, res=None, res_sc=None, res_sh=None):
    n, c, h, w = xq.shape
    k, cg, r, s = wq.shape
    xp = np.pad(xq.astype(np.int64), ((0, 0), (0, 0), pad[0], pad[1]))
    ho = (xp.shape[2] - r) // stride[0] + 1
    wo = (xp.shape[3] - s) // stride[1] + 1
    kg = k // groups
    out = np.zeros((n, k, ho, wo), np.int64)
    for b in range(n):
        for ko in range(k):
            g = ko // kg
            for i in range(ho):
                for j in range(wo):
                    patch = xp[b, g * cg:(g + 1) * cg, i * stride[0]:i * stride[0] + r, j * stride[1]:j * stride[1] + s]
                    acc = _clamp(int(np.sum(patch * wq[ko].astype(np.int64))), 32)
                    acc = _clamp(acc + (int(bias_q16[ko]) << bias_shift), 32)
                    if res is not None:
                        e = _clamp(_shift_round(int(res[b, ko, i, j]) * int(res_sc[ko]), int(res_sh[ko])), 32)
                        acc = _clamp(acc + e, 32)
                    if relu:
                        acc = max(acc, 0)
                    out[b, ko, i, j] = _clamp(_shift_round(acc * int(sc[ko]), int(sh[ko])), 8)
    return out


@pytest.mark.parametrize("stride,pad,groups,residual", [((1, 1), ((1, 1), (1, 1)), 1, False),
                                                        ((2, 1), ((0, 1), (2, 0)), 2, False),
                                                        ((1, 1), ((1, 1), (1, 1)), 1, True)])
def test_int8_convolution_bit_exact(stride, pad, groups, residual):
    rng = np.random.default_rng(1)
    c, k = 4, 6
    w = rng.normal(size=(k, c // groups, 3, 3)).astype(np.float32)
    bias = rng.normal(size=k).astype(np.float32) * 3
    s_in, s_out = np.float32(0.02), np.float32(0.05)
    s_w = (np.abs(w).reshape(k, -1).max(1) / 127).astype(np.float32)
    x = rng.normal(size=(2, c, 7, 6)).astype(np.float32)
    res_scale = np.float32(0.04) if residual else None
    layer = int8_conv_layer(w, bias, s_in, s_w, s_out, stride, pad, groups, True, res_scale)
    xq = quantize(x, s_in)
    wq = quantize(w, s_w, axis=0)
    s_acc = np.float64(s_in) * s_w.astype(np.float64)
    bq = np.floor(np.abs(bias / s_acc) + 0.5) * np.sign(bias / s_acc)
    shift = 0
    while np.max(np.abs(np.floor(np.abs(bq) / 2**shift + 0.5))) > 32767:
        shift += 1
    b16 = [_shift_round(int(v), shift) for v in bq]
    sc, sh = zip(*[_multiplier(float(m)) for m in s_acc / np.float64(s_out)])
    inputs = [x]
    res = res_sc = res_sh = None
    if residual:
        ho = (7 + sum(pad[0]) - 3) // stride[0] + 1
        wo = (6 + sum(pad[1]) - 3) // stride[1] + 1
        r = rng.normal(size=(2, k, ho, wo)).astype(np.float32)
        inputs.append(r)
        res = quantize(r, res_scale).astype(np.int64)
        res_sc, res_sh = zip(*[_multiplier(float(m)) for m in np.float64(res_scale) / s_acc])
    want = _ref_conv(xq, wq, b16, shift, sc, sh, stride, pad, groups, True, res, res_sc, res_sh)
    got = int8.run_layer(layer, inputs, Precision.INT8)[0]
    got_q = np.rint(got / s_out).astype(np.int64)
    np.testing.assert_array_equal(got_q, want)
    assert np.array_equal(got, (want.astype(np.float32) * s_out).astype(np.float32))


def test_int8_output_float_and_input_int8_recovery():
    """A float-output INT8 conv returns v * s_in * s_w; an int8 value stored as q*s comes back exactly."""
    rng = np.random.default_rng(2)
    q = rng.integers(-128, 128, size=1000).astype(np.int8)
    for s in (np.float32(0.0123), np.float32(3.7e-5), np.float32(17.0)):
        stored = (q.astype(np.float32) * s).astype(np.float32)
        np.testing.assert_array_equal(quantize(stored, s), q)
    w = rng.normal(size=(3, 2, 1, 1)).astype(np.float32)
    s_w = (np.abs(w).reshape(3, -1).max(1) / 127).astype(np.float32)
    layer = int8_conv_layer(w, None, 0.1, s_w, None, pad=((0, 0), (0, 0)), relu=False)
    x = rng.normal(size=(1, 2, 3, 3)).astype(np.float32)
    y = int8.run_layer(layer, [x], Precision.INT8)[0]
    wq = quantize(w, s_w, 0)[:, :, 0, 0].astype(np.int64)
    acc = np.einsum("nchw,kc->nkhw", quantize(x, 0.1).astype(np.int64), wq)
    want = (acc * (np.float64(np.float32(0.1)) * s_w.astype(np.float64))[None, :, None, None]).astype(np.float32)
    np.testing.assert_array_equal(y, want)


def _pool_layer(kind: PoolingType, window, stride, pad, scale) -> Layer:
    p = PoolingParams(kind, window=window, stride=stride, pre_padding=(pad, pad), post_padding=(pad, pad),
                      count_include_pad=True)
    layer = Layer("pool", p, ["x"], ["y"], {}, precision=Precision.INT8)
    annotation.write(layer, annotation.Int8Spec((scale,), scale))
    return layer


@pytest.mark.parametrize("kind", [PoolingType.MAX, PoolingType.AVERAGE])
def test_int8_pooling_bit_exact(kind):
    rng = np.random.default_rng(3)
    s = np.float32(0.03)
    x = rng.normal(size=(2, 3, 9, 8)).astype(np.float32) * 2
    layer = _pool_layer(kind, (3, 3), (2, 2), 1, s)
    got = np.rint(int8.run_layer(layer, [x], Precision.INT8)[0] / s).astype(np.int64)
    q = np.pad(quantize(x, s).astype(np.int64), ((0, 0), (0, 0), (1, 1), (1, 1)),
               constant_values=-(1 << 40) if kind is PoolingType.MAX else 0)
    ho, wo = (q.shape[2] - 3) // 2 + 1, (q.shape[3] - 3) // 2 + 1
    rw = rh = int(np.floor(65536 / 3 + 0.5))
    want = np.zeros((2, 3, ho, wo), np.int64)
    for idx in np.ndindex(2, 3, ho, wo):
        b, ch, i, j = idx
        win = q[b, ch, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
        if kind is PoolingType.MAX:
            want[idx] = win.max()
        else:
            t = _shift_round(int(win.sum()) * rw, 16)
            want[idx] = _clamp(_shift_round(t * rh, 16), 8)
    np.testing.assert_array_equal(got, want)
