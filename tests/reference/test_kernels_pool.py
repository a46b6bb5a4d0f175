"""Pooling against onnxruntime's MaxPool / AveragePool / LpPool and their global forms."""

from __future__ import annotations

import pytest
from refhelp import assert_close, assert_fp16_close, ort_single, randn, rng, run_single, seed_of

from engine.ir.dtypes import Precision
from engine.ir.layers import PoolingParams, PoolingType

# (input shape, window, stride, pre, post, dilation, ceil_mode)
CASES = {
    "1d": ((2, 3, 15), (3,), (2,), (1,), (1,), (1,), False),
    "2d_plain": ((2, 3, 10, 9), (2, 2), (2, 2), (0, 0), (0, 0), (1, 1), False),
    "2d_resnet": ((1, 4, 12, 12), (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), False),
    "2d_ceil": ((1, 3, 11, 10), (3, 3), (2, 2), (0, 0), (0, 0), (1, 1), True),
    "2d_ceil_pad_asym": ((2, 2, 9, 12), (3, 2), (2, 3), (1, 0), (2, 1), (1, 1), True),
    "2d_dilation": ((1, 3, 13, 11), (3, 2), (1, 2), (1, 1), (1, 0), (2, 3), False),
    "2d_dilation_ceil": ((1, 2, 12, 13), (2, 3), (3, 2), (1, 1), (1, 2), (2, 2), True),
    "3d": ((1, 2, 7, 8, 6), (2, 3, 2), (2, 1, 2), (0, 1, 1), (1, 1, 0), (1, 1, 1), False),
    "3d_ceil": ((1, 2, 7, 8, 7), (3, 3, 2), (2, 2, 2), (1, 1, 0), (1, 0, 1), (1, 1, 1), True),
}


def _attrs(case, extra):
    shape, window, stride, pre, post, dil, ceil = case
    a = dict(kernel_shape=list(window), strides=list(stride), pads=list(pre) + list(post), ceil_mode=int(ceil))
    if any(d != 1 for d in dil) or extra != "AveragePool":
        a["dilations"] = list(dil)
    return a


def _params(case, t, **kw):
    shape, window, stride, pre, post, dil, ceil = case
    return PoolingParams(t, window, stride, pre, post, dil, ceil_mode=ceil, **kw)


@pytest.mark.parametrize("name", sorted(CASES))
def test_max_pool(name):
    case = CASES[name]
    x = randn(rng(seed_of("max", name)), *case[0])
    want = ort_single("MaxPool", [x], _attrs(case, "MaxPool"))[0]
    params = _params(case, PoolingType.MAX)
    assert_close(run_single(params, [x])[0], want)
    assert_fp16_close(run_single(params, [x], precision=Precision.FP16)[0], want)


@pytest.mark.parametrize("include_pad", [False, True])
@pytest.mark.parametrize("name", sorted(CASES))
def test_average_pool(name, include_pad):
    case = CASES[name]
    x = randn(rng(seed_of("avg", name, include_pad)), *case[0])
    attrs = _attrs(case, "AveragePool") | {"count_include_pad": int(include_pad)}
    want = ort_single("AveragePool", [x], attrs)[0]
    params = _params(case, PoolingType.AVERAGE, count_include_pad=include_pad)
    assert_close(run_single(params, [x])[0], want)
    assert_fp16_close(run_single(params, [x], precision=Precision.FP16)[0], want)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("name", ["1d", "2d_plain", "2d_resnet", "2d_ceil", "2d_dilation", "3d"])
def test_lp_pool(name, order):
    case = CASES[name]
    x = randn(rng(seed_of("lp", name, order)), *case[0])
    want = ort_single("LpPool", [x], _attrs(case, "LpPool") | {"p": order})[0]
    params = _params(case, PoolingType.LP, lp_order=order)
    assert_close(run_single(params, [x])[0], want, rtol=3e-5)


@pytest.mark.parametrize("shape", [(2, 3, 9), (2, 4, 7, 5), (1, 3, 3, 4, 5)])
@pytest.mark.parametrize("t,op", [(PoolingType.MAX, "GlobalMaxPool"), (PoolingType.AVERAGE, "GlobalAveragePool"),
                                  (PoolingType.LP, "GlobalLpPool")])
def test_global_pool(shape, t, op):
    x = randn(rng(seed_of("global", shape, t)), *shape)
    want = ort_single(op, [x], {"p": 2} if t is PoolingType.LP else {})[0]
    params = PoolingParams(t, global_pool=True)
    assert_close(run_single(params, [x])[0], want)
