"""2-D convolution computed channels-last (NHWC), the layout in which numpy and BLAS are fast.

Results are returned as (N, K, H, W) arrays whose memory is NHWC (a transposed view of a
C-contiguous (N, H, W, K) buffer). Values do not depend on the layout; the next convolution reads
such an input without a copy, and every other kernel handles any strides. The executor makes
network outputs C-contiguous again.

* 1x1: one GEMM (N*H*W, C) @ (C, K), the output channels innermost.
* depthwise: tap-by-tap multiply-add over contiguous rows. Weights are tiled along the output
  width so every ufunc runs over whole (W*C) rows, and a strided convolution first splits the
  padded input into its column phases, so that every tap reads contiguous rows too.
* k x k: im2col with the channels innermost (each tap copies contiguous runs of C), then one GEMM.

Prepared weights (transposed, tiled) are cached per weight array, weakly, like FP16 copies.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable

import numpy as np

# (id(weight), tag) -> (weakref to the weight, prepared array)
_PREPARED: dict[tuple[int, tuple], tuple[weakref.ref, np.ndarray]] = {}


def prepared(w: np.ndarray, tag: tuple, make: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``make(w)``, computed once per weight array and ``tag`` while the array lives."""
    key = (id(w), tag)
    hit = _PREPARED.get(key)
    if hit is not None and hit[0]() is w:
        return hit[1]
    out = np.ascontiguousarray(make(w))
    out.flags.writeable = False
    try:
        ref = weakref.ref(w, lambda _, k=key: _PREPARED.pop(k, None))
    except TypeError:
        return out
    _PREPARED[key] = (ref, out)
    return out


def is_channels_last(x: np.ndarray) -> bool:
    """Whether the 4-D array ``x`` (N, C, H, W) is stored as a C-contiguous (N, H, W, C) buffer."""
    return x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous


def to_nhwc(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) as a C-contiguous (N, H, W, C) array (a view when ``x`` is channels-last)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def from_nhwc(y: np.ndarray) -> np.ndarray:
    """The (N, K, H, W) view of a channels-last result."""
    return y.transpose(0, 3, 1, 2)


def _pad_nhwc(xh: np.ndarray, pre, post) -> np.ndarray:
    """Zero-padded copy of an NHWC array; only the border is cleared."""
    n, h, w, c = xh.shape
    (t, left), (b, right) = pre, post
    if not (t or left or b or right):
        return xh
    xp = np.empty((n, h + t + b, w + left + right, c), dtype=xh.dtype)
    xp[:, :t] = 0
    xp[:, t + h:] = 0
    xp[:, t:t + h, :left] = 0
    xp[:, t:t + h, left + w:] = 0
    xp[:, t:t + h, left:left + w] = xh
    return xp


def conv1x1(x: np.ndarray, w: np.ndarray, stride, out) -> np.ndarray:
    """Pointwise convolution without padding: one GEMM, output channels innermost."""
    n, c = x.shape[:2]
    k = w.shape[0]
    wt = prepared(w, ("1x1",), lambda a: a.reshape(a.shape[0], -1).T)  # (C, K)
    xs = x.transpose(0, 2, 3, 1)[:, ::stride[0], ::stride[1]][:, :out[0], :out[1]]
    y = np.matmul(xs.reshape(n * out[0] * out[1], c), wt)  # reshape copies only when it must
    return from_nhwc(y.reshape(n, out[0], out[1], k))


def depthwise(x: np.ndarray, w: np.ndarray, stride, pre, post, dilation, out) -> np.ndarray:
    """y[n, c, o] = sum_t x_pad[n, c, o*stride + t*dilation] * w[c, t], accumulated in taps order."""
    n, c = x.shape[:2]
    kh, kw = w.shape[2:]
    (sh, sw), (dh, dw) = stride, dilation
    ho, wo = out
    xp = _pad_nhwc(to_nhwc(x), pre, post)
    # Column phase p holds the padded columns p, p + sw, ...: tap column j*dw reads phase
    # (j*dw) % sw from column (j*dw) // sw on, so every tap reads contiguous (wo*c) rows.
    phases = [xp] if sw == 1 else [np.ascontiguousarray(xp[:, :, p::sw]) for p in range(sw)]
    wt = prepared(w, ("dw", wo), lambda a: np.tile(a.reshape(c, kh * kw).T[:, None, :], (1, wo, 1))
                  .reshape(kh * kw, wo * c))
    y = np.empty((n, ho, wo * c), dtype=np.result_type(x, w))
    tmp = np.empty((ho, wo * c), dtype=y.dtype)
    for b in range(n):
        acc = y[b]
        for t in range(kh * kw):
            i, j = divmod(t, kw)
            col = j * dw
            ph = phases[col % sw][b]
            rows = ph[i * dh:i * dh + (ho - 1) * sh + 1:sh, col // sw:col // sw + wo]
            src = rows.reshape(ho, wo * c)
            if t == 0:
                np.multiply(src, wt[0], out=acc)
            else:
                np.multiply(src, wt[t], out=tmp)
                acc += tmp
    return from_nhwc(y.reshape(n, ho, wo, c))


def im2col_conv(x: np.ndarray, w: np.ndarray, stride, pre, post, dilation, out) -> np.ndarray:
    """Dense k x k convolution (groups == 1): channels-innermost im2col and one GEMM."""
    n, c = x.shape[:2]
    k = w.shape[0]
    kh, kw = w.shape[2:]
    (sh, sw), (dh, dw) = stride, dilation
    ho, wo = out
    xp = _pad_nhwc(to_nhwc(x), pre, post)
    cols = np.empty((n, ho, wo, kh * kw, c), dtype=np.result_type(x, w))
    for t in range(kh * kw):
        i, j = divmod(t, kw)
        cols[:, :, :, t] = xp[:, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw]
    wm = prepared(w, ("im2col",), lambda a: a.transpose(2, 3, 1, 0).reshape(kh * kw * c, k))
    y = np.matmul(cols.reshape(n * ho * wo, kh * kw * c), wm)
    return from_nhwc(y.reshape(n, ho, wo, k))


def supports(x: np.ndarray, w: np.ndarray, groups: int) -> str | None:
    """Which channels-last path computes this convolution, or None for the generic N-d one."""
    if x.ndim != 4 or x.dtype.kind != "f" or math.prod(x.shape) == 0:
        return None
    c, k = x.shape[1], w.shape[0]
    if groups == 1:
        return "1x1" if w.shape[2:] == (1, 1) else "im2col"
    if groups == c == k and w.shape[1] == 1:
        return "depthwise"
    return None
