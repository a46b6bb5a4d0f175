"""Reductions and the layers built on them: Reduce, SoftMax, LRN, Normalization."""

from __future__ import annotations

import numpy as np

from engine.ir.errors import UnsupportedError
from engine.ir.layers import ReduceOp

_FLOAT_ONLY = (ReduceOp.L2, ReduceOp.LOG_SUM, ReduceOp.LOG_SUM_EXP)


def _reduce(op: ReduceOp, x: np.ndarray, axes: tuple[int, ...], keep: bool) -> np.ndarray:
    if op is ReduceOp.SUM:
        return np.sum(x, axis=axes, keepdims=keep)
    if op is ReduceOp.MEAN:
        if x.dtype.kind in "iu":
            count = max(1, int(np.prod([x.shape[a] for a in axes])))
            s = np.sum(x, axis=axes, keepdims=keep, dtype=np.int64)
            return (np.sign(s) * (np.abs(s) // count)).astype(x.dtype)  # truncating, as C integer division
        return np.mean(x, axis=axes, keepdims=keep)
    if op is ReduceOp.MAX:
        return np.max(x, axis=axes, keepdims=keep)
    if op is ReduceOp.MIN:
        return np.min(x, axis=axes, keepdims=keep)
    if op is ReduceOp.PROD:
        return np.prod(x, axis=axes, keepdims=keep)
    if op is ReduceOp.L1:
        return np.sum(np.abs(x), axis=axes, keepdims=keep)
    if op is ReduceOp.SUM_SQUARE:
        return np.sum(x * x, axis=axes, keepdims=keep)
    if op is ReduceOp.L2:
        return np.sqrt(np.sum(x * x, axis=axes, keepdims=keep))
    if op is ReduceOp.LOG_SUM:
        return np.log(np.sum(x, axis=axes, keepdims=keep))
    if op is ReduceOp.LOG_SUM_EXP:
        if x.size == 0:  # log of an empty sum
            return np.log(np.sum(np.exp(x), axis=axes, keepdims=keep))
        m = np.max(x, axis=axes, keepdims=True)
        m = np.where(np.isfinite(m), m, np.zeros_like(m))
        y = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
        return y if keep else np.squeeze(y, axis=axes)
    raise AssertionError(op)


def reduce(layer, inputs, weights):
    p = layer.params
    x = inputs[0]
    op = ReduceOp(p.op)
    if x.dtype == np.bool_ or (op in _FLOAT_ONLY and x.dtype.kind != "f"):
        raise UnsupportedError(f"{layer.describe()}: reduce {op.value} of {x.dtype} tensors is not supported")
    axes = tuple(sorted(a % x.ndim for a in p.axes)) if x.ndim else ()
    if op in (ReduceOp.ARGMAX, ReduceOp.ARGMIN):  # the first extreme index, as ONNX's select_last_index=0
        find = np.argmax if op is ReduceOp.ARGMAX else np.argmin
        return [np.asarray(find(x, axis=axes[0], keepdims=p.keep_dims), dtype=np.int64)]
    if x.size == 0 and op in (ReduceOp.MAX, ReduceOp.MIN):
        raise UnsupportedError(f"{layer.describe()}: reduce {op.value} of an empty tensor")
    with np.errstate(all="ignore"):
        y = _reduce(op, x, axes, p.keep_dims)
    return [np.asarray(y, dtype=x.dtype)]


def softmax(layer, inputs, weights):
    p = layer.params
    x = inputs[0]
    ax = p.axis % x.ndim
    m = np.max(x, axis=ax, keepdims=True)
    z = x - m
    e = np.exp(z)
    s = np.sum(e, axis=ax, keepdims=True)
    y = z - np.log(s) if p.log else e / s
    return [y.astype(x.dtype, copy=False)]


def lrn(layer, inputs, weights):
    """ONNX LRN: the window over channels is [c - (size-1)//2, c + ceil((size-1)/2)]."""
    p = layer.params
    x = inputs[0]
    c = x.shape[1]
    lo, hi = (p.size - 1) // 2, p.size - 1 - (p.size - 1) // 2
    sq = x * x
    padded = np.pad(sq, [(0, 0), (lo, hi)] + [(0, 0)] * (x.ndim - 2))
    window = np.zeros_like(sq)
    for j in range(p.size):
        window += padded[:, j:j + c]
    base = np.float32(p.bias) + np.float32(p.alpha / p.size) * window
    return [(x / np.power(base, np.float32(p.beta))).astype(x.dtype, copy=False)]


def normalization(layer, inputs, weights):
    p = layer.params
    x = inputs[0]
    axes = tuple(sorted({a % x.ndim for a in p.axes}))
    mean = np.mean(x, axis=axes, keepdims=True)
    d = x - mean
    var = np.mean(d * d, axis=axes, keepdims=True)
    y = d / np.sqrt(var + np.float32(p.epsilon))
    if "scale" in weights:
        y = y * weights["scale"].astype(x.dtype, copy=False)
    if "bias" in weights:
        y = y + weights["bias"].astype(x.dtype, copy=False)
    return [y.astype(x.dtype, copy=False)]
