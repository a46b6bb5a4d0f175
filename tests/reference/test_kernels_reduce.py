"""Reduce, SoftMax, LRN, Normalization, MatrixMultiply and FullyConnected."""

from __future__ import annotations

import numpy as np
import pytest
from refhelp import assert_close, assert_fp16_close, ort_single, randn, rng, run_single, seed_of

from engine.ir.dtypes import Precision
from engine.ir.layers import (
    ActivationSpec,
    ActivationType,
    FullyConnectedParams,
    LRNParams,
    MatrixMultiplyParams,
    NormalizationParams,
    ReduceOp,
    ReduceParams,
    SoftMaxParams,
)

R = ReduceOp
ONNX_REDUCE = {R.MEAN: "ReduceMean", R.MAX: "ReduceMax", R.MIN: "ReduceMin", R.SUM: "ReduceSum",
               R.PROD: "ReduceProd", R.L1: "ReduceL1", R.L2: "ReduceL2", R.SUM_SQUARE: "ReduceSumSquare",
               R.LOG_SUM: "ReduceLogSum", R.LOG_SUM_EXP: "ReduceLogSumExp"}


def _reduce_input(op, g, shape):
    x = randn(g, *shape)
    if op is R.LOG_SUM:
        x = np.abs(x) + 0.1
    if op is R.PROD:
        x = (np.sign(x) * (0.8 + 0.4 * g.random(shape))).astype(np.float32)  # keep the product O(1)
    return x


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("axes", [(1,), (0, 2), (-1,), (0, 1, 2, 3)])
@pytest.mark.parametrize("op", list(ONNX_REDUCE))
def test_reduce(op, axes, keep):
    g = rng(seed_of("reduce", op, axes, keep))
    x = _reduce_input(op, g, (3, 4, 5, 6))
    want = ort_single(ONNX_REDUCE[op], [x, np.array(axes, np.int64)], {"keepdims": int(keep)}, const_inputs=[1])[0]
    got = run_single(ReduceParams(op, axes, keep), [x])[0]
    assert_close(got, want, rtol=2e-5)
    if op not in (R.PROD,):
        assert_fp16_close(run_single(ReduceParams(op, axes, keep), [x], precision=Precision.FP16)[0], want,
                          atol=2e-2 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("op", [R.ARGMAX, R.ARGMIN])
def test_arg_reduce(op, axis, keep):
    """One axis, an int64 index; ties (forced here by rounding to a coarse grid) give the first."""
    x = np.round(randn(rng(seed_of("argreduce", op, axis, keep)), 3, 4, 5) * 2) / 2
    onnx_op = "ArgMax" if op is R.ARGMAX else "ArgMin"
    want = ort_single(onnx_op, [x], {"axis": axis, "keepdims": int(keep)})[0]
    got = run_single(ReduceParams(op, (axis,), keep), [x])[0]
    assert got.dtype == np.int64 and np.array_equal(got, want)


def test_arg_reduce_takes_one_axis():
    with pytest.raises(Exception, match="takes one axis"):
        run_single(ReduceParams(R.ARGMAX, (0, 1), True), [np.zeros((2, 3), np.float32)])


@pytest.mark.parametrize("op", [R.SUM, R.MAX, R.MIN, R.PROD, R.MEAN, R.L1, R.SUM_SQUARE])
def test_reduce_int32(op):
    x = rng(seed_of("ireduce", op)).integers(-5, 6, size=(3, 4, 5)).astype(np.int32)
    if op is R.PROD:
        x = np.where(x == 0, 1, np.clip(x, -2, 2)).astype(np.int32)
    got = run_single(ReduceParams(op, (1,), False), [x])[0]
    want = ort_single(ONNX_REDUCE[op], [x, np.array([1], np.int64)], {"keepdims": 0}, const_inputs=[1])[0]
    assert got.dtype == np.int32 and np.array_equal(got, want)


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax(axis, log):
    x = randn(rng(seed_of("softmax", axis, log)), 3, 5, 7) * 5
    want = ort_single("LogSoftmax" if log else "Softmax", [x], {"axis": axis})[0]
    params = SoftMaxParams(axis, log)
    assert_close(run_single(params, [x])[0], want)
    assert_fp16_close(run_single(params, [x], precision=Precision.FP16)[0], want)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 6])
def test_lrn(size):
    x = randn(rng(seed_of("lrn", size)), 2, 9, 4, 5)
    attrs = {"size": size, "alpha": 1e-2, "beta": 0.75, "bias": 1.5}
    if size % 2:  # onnxruntime implements odd sizes only
        want = ort_single("LRN", [x], attrs)[0]
        assert_close(run_single(LRNParams(size, 1e-2, 0.75, 1.5), [x])[0], want)
    # independent float64 formula with the ONNX window [c - floor((n-1)/2), c + ceil((n-1)/2)]
    x64 = x.astype(np.float64)
    lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
    sq = np.stack([(x64[:, max(0, c - lo):c + hi + 1] ** 2).sum(axis=1) for c in range(9)], axis=1)
    assert_close(run_single(LRNParams(size, 1e-2, 0.75, 1.5), [x])[0],
                 (x64 / (1.5 + 1e-2 / size * sq) ** 0.75).astype(np.float32))


def test_layer_normalization():
    g = rng(31)
    x, s, b = randn(g, 2, 5, 8) * 3 + 1, randn(g, 8), randn(g, 8)
    want = ort_single("LayerNormalization", [x, s, b], {"axis": -1, "epsilon": 1e-5}, const_inputs=[1, 2])[0]
    params = NormalizationParams((-1,), 1e-5)
    assert_close(run_single(params, [x], {"scale": s, "bias": b})[0], want, rtol=2e-5)
    assert_fp16_close(run_single(params, [x], {"scale": s, "bias": b}, precision=Precision.FP16)[0], want)


def test_instance_normalization():
    g = rng(32)
    x, s, b = randn(g, 2, 3, 6, 7) * 2 - 1, randn(g, 3), randn(g, 3)
    want = ort_single("InstanceNormalization", [x, s, b], {"epsilon": 1e-3}, const_inputs=[1, 2])[0]
    got = run_single(NormalizationParams((2, 3), 1e-3), [x], {"scale": s.reshape(3, 1, 1), "bias": b.reshape(3, 1, 1)})
    assert_close(got[0], want, rtol=2e-5)


def test_normalization_without_affine_matches_float64():
    x = randn(rng(33), 4, 6, 5) * 10 + 3
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(1, 2), keepdims=True)
    want = (x64 - mean) / np.sqrt(x64.var(axis=(1, 2), keepdims=True) + 1e-5)
    assert_close(run_single(NormalizationParams((1, 2)), [x])[0], want.astype(np.float32), rtol=2e-5)


@pytest.mark.parametrize("sa,sb,ta,tb", [
    ((4, 5), (5, 3), False, False),
    ((2, 3, 4, 5), (5, 6), False, False),
    ((2, 1, 4, 5), (3, 5, 2), False, False),
    ((7,), (7, 3), False, False),
    ((2, 4, 7), (7,), False, False),
    ((5, 4), (5, 3), True, False),
    ((2, 4, 5), (2, 3, 5), False, True),
    ((3, 5, 4), (2, 1, 6, 5), True, True),
])
def test_matrix_multiply(sa, sb, ta, tb):
    g = rng(seed_of("mm", sa, sb, ta, tb))
    a, b = randn(g, *sa), randn(g, *sb)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if ta:
        a64 = np.swapaxes(a64, -1, -2)
    if tb:
        b64 = np.swapaxes(b64, -1, -2)
    want = np.matmul(a64, b64).astype(np.float32)
    params = MatrixMultiplyParams(ta, tb)
    assert_close(run_single(params, [a, b])[0], want, atol=1e-5)
    if not (ta or tb):
        assert_close(run_single(params, [a, b])[0], ort_single("MatMul", [a, b])[0], atol=1e-5)
    assert_fp16_close(run_single(params, [a, b], precision=Precision.FP16)[0], want)


@pytest.mark.parametrize("shape", [(3, 10), (2, 3, 10), (10,)])
@pytest.mark.parametrize("act", [None, ActivationSpec(ActivationType.RELU), ActivationSpec(ActivationType.SIGMOID)])
def test_fully_connected(shape, act):
    g = rng(seed_of("fc", shape, act))
    x, w, b = randn(g, *shape), randn(g, 6, 10), randn(g, 6)
    want = x.astype(np.float64) @ w.T.astype(np.float64) + b
    if act is not None:
        want = np.maximum(want, 0) if act.type is ActivationType.RELU else 1 / (1 + np.exp(-want))
    if len(shape) == 2 and act is None:
        gemm = ort_single("Gemm", [x, w, b], {"transB": 1}, const_inputs=[1, 2])[0]
        assert_close(run_single(FullyConnectedParams(6), [x], {"kernel": w, "bias": b})[0], gemm, atol=1e-5)
    params = FullyConnectedParams(6, act)
    got = run_single(params, [x], {"kernel": w, "bias": b})[0]
    assert_close(got, want.astype(np.float32), atol=1e-5)
    assert_fp16_close(run_single(params, [x], {"kernel": w, "bias": b}, precision=Precision.FP16)[0],
                      want.astype(np.float32))
