"""Max, average and Lp pooling (ONNX semantics: ceil_mode, count_include_pad, dilation, global)."""

from __future__ import annotations

import math

import numpy as np

from engine.ir.errors import UnsupportedError
from engine.ir.layers import PoolingType

from . import channels_last
from .conv import windows


def _out_len(n: int, k: int, s: int, a: int, b: int, d: int, ceil_mode: bool) -> int:
    span = d * (k - 1) + 1
    padded = n + a + b
    if ceil_mode:
        out = -(-(padded - span) // s) + 1
        if (out - 1) * s >= n + a:  # the last window must start inside the input or left pad
            out -= 1
        return out
    return (padded - span) // s + 1


def _tap_counts(n: int, k: int, s: int, a: int, b: int, d: int, out: int, include_pad: bool) -> np.ndarray:
    """How many taps of each 1-d window fall in the input (or in input + explicit padding)."""
    lo, hi = (-a, n + b) if include_pad else (0, n)
    starts = np.arange(out) * s - a
    pos = starts[:, None] + np.arange(k)[None, :] * d
    return ((pos >= lo) & (pos < hi)).sum(axis=1)


def _window_reduce(win: np.ndarray, sp: int, ufunc: np.ufunc) -> np.ndarray:
    """Reduce the trailing ``sp`` window axes of a strided window view.

    Small windows are folded tap by tap (each tap a strided slice, fast in numpy); large ones
    (global pooling) reduce in one call.
    """
    kernel = win.shape[-sp:]
    if math.prod(kernel) > 64:
        return ufunc.reduce(win.reshape(*win.shape[:-sp], -1), axis=-1)
    taps = iter(np.ndindex(*kernel))
    acc = np.array(win[(Ellipsis, *next(taps))], copy=True)
    for tap in taps:
        ufunc(acc, win[(Ellipsis, *tap)], out=acc)
    return acc


def _whole_input(p, sp_shape) -> bool:
    """One window covering exactly the unpadded input (global pooling, or a window that equals it)."""
    return (tuple(p.window) == tuple(sp_shape) and not any(p.pre_padding) and not any(p.post_padding)
            and all(d == 1 for d in p.dilation))


def _global_pool(x: np.ndarray, pool_type: PoolingType) -> np.ndarray:
    """Max, or mean accumulated in float64, over all spatial axes in any memory layout (no window copy)."""
    axes = tuple(range(2, x.ndim))
    if pool_type is PoolingType.MAX:
        return np.max(x, axis=axes, keepdims=True)
    count = math.prod(x.shape[2:])
    if channels_last.is_channels_last(x) and x.size:
        # NHWC memory: sum the image rows as (H, W*C) runs (long contiguous ufunc loops, x's own
        # precision), then the W partial sums of each channel in float64.
        n, c, h, w = x.shape
        rows = np.add.reduce(x.transpose(0, 2, 3, 1).reshape(n, h, w * c), axis=1)
        total = np.add.reduce(rows.reshape(n, w, c), axis=1, dtype=np.float64)
        return (total / count).astype(x.dtype).reshape(n, c, 1, 1)
    if x.ndim == 4 and x.shape[2] > 1:
        # Rows first in x's own precision (vectorised over the other axes whatever the layout),
        # then the W partial sums in float64: the first level rounds H times per value, not H*W.
        x = np.add.reduce(x, axis=2, keepdims=True)
    total = np.add.reduce(x, axis=axes, dtype=np.float64, keepdims=True)
    return (total / count).astype(x.dtype)


def pooling(layer, inputs, weights):
    x = inputs[0]
    if x.dtype.kind != "f":
        raise UnsupportedError(f"{layer.describe()}: pooling of {x.dtype} tensors is not supported")
    sp_shape = x.shape[2:]
    if layer.params.global_pool and layer.params.type in (PoolingType.MAX, PoolingType.AVERAGE):
        return [_global_pool(x, PoolingType(layer.params.type))]  # what the resolved window below gives
    p = layer.params.resolved(sp_shape)
    sp = len(sp_shape)
    out = tuple(_out_len(sp_shape[i], p.window[i], p.stride[i], p.pre_padding[i], p.post_padding[i],
                         p.dilation[i], p.ceil_mode) for i in range(sp))
    # Pad enough on the right for every (ceil-mode) window; the fill never wins / adds nothing.
    need = [(o - 1) * s + d * (k - 1) + 1 for o, s, d, k in zip(out, p.stride, p.dilation, p.window)]
    post = [max(0, nd - n - a) for nd, n, a in zip(need, sp_shape, p.pre_padding)]
    pool_type = PoolingType(p.type)
    if _whole_input(p, sp_shape) and pool_type in (PoolingType.MAX, PoolingType.AVERAGE):
        return [_global_pool(x, pool_type)]
    fill = -np.inf if pool_type is PoolingType.MAX else 0.0
    xp = np.pad(x, [(0, 0), (0, 0), *zip(p.pre_padding, post)], constant_values=fill)
    win = windows(xp, p.window, p.stride, p.dilation, out)
    if pool_type is PoolingType.MAX:
        return [_window_reduce(win, sp, np.maximum).astype(x.dtype, copy=False)]
    if pool_type is PoolingType.LP:
        order = np.float32(p.lp_order)
        with np.errstate(all="ignore"):
            powered = windows(np.power(np.abs(xp), order), p.window, p.stride, p.dilation, out)
            y = np.power(_window_reduce(powered, sp, np.add), np.float32(1.0) / order)
        return [y.astype(x.dtype, copy=False)]
    count = np.ones((), dtype=np.int64)
    for i in range(sp):
        c = _tap_counts(sp_shape[i], p.window[i], p.stride[i], p.pre_padding[i], p.post_padding[i],
                        p.dilation[i], out[i], p.count_include_pad)
        count = np.multiply.outer(count, c)
    y = _window_reduce(win, sp, np.add) / np.maximum(count, 1).astype(x.dtype)
    return [y.astype(x.dtype, copy=False)]
