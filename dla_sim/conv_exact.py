"""INT8 convolutions (groups = 1, direct and image input modes) through float32 BLAS, exactly.

Every partial sum BLAS forms for output channel k is a sub-sum of ``sum x * w``; with
``X = max(|x|, |pad value|)`` it is bounded by ``X * sum |w_k|`` over the weights it covers. Float32
holds every integer below 2**24 exactly, so a GEMM whose bound stays below 2**24 gives the exact
integers in any summation order (float64 the same below 2**53, which no int8 layer reaches). The
plan per layer:

* 1x1: one GEMM over the (strided) input;
* >= 32 input channels: one GEMM per kernel tap, each bounded by ``X * max_k sum_c |w[k, c, tap]|``,
  summed in float32 when the whole kernel's bound is < 2**24, in float64 otherwise — so wide 3x3
  layers (512 channels: 128 * 4608 * |w| > 2**24) keep float32 GEMMs;
* few channels (the RGB image layer): one im2col GEMM.
A GEMM whose own bound reaches 2**24 runs in float64.

Weights prepared for BLAS (float32 per-tap matrices and their bounds) are kept per weight array when
the array is read-only (``Loadable.from_bytes`` hands out read-only blobs): a read-only array is
taken as immutable. Writeable arrays are prepared on every call. A preparation lives as long as its
array and at most :data:`CACHE_BYTES` are kept in all (about 100 MB for ResNet-50: 4 bytes per
weight), the least recently used arrays' dropped first.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .ops import ConvOp

F32_EXACT = 2**24
I32_MAX = 2**31 - 1
_PER_TAP_MIN_C = 32

CACHE_BYTES = 1 << 30  # prepared weights kept at most; the least recently used arrays' go first


class _Prepared:
    """BLAS-ready forms of one read-only weight array, and their size."""

    __slots__ = ("items", "nbytes", "ref")

    def __init__(self, ref: weakref.ref) -> None:
        self.ref, self.items, self.nbytes = ref, {}, 0


_cache: OrderedDict[int, _Prepared] = OrderedDict()
_held = [0]  # bytes of every kept preparation
_lock = threading.RLock()  # runtime lanes run partitions in threads; re-entrant for weakref callbacks


def _frozen(a: np.ndarray) -> bool:
    """True when neither ``a`` nor any array or buffer under it can be written through numpy."""
    while isinstance(a, np.ndarray):
        if a.flags.writeable:
            return False
        a = a.base
    return a is None or isinstance(a, bytes)


def _forget(key: int) -> None:
    with _lock:
        gone = _cache.pop(key, None)
        if gone is not None:
            _held[0] -= gone.nbytes


def _entry(w: np.ndarray) -> dict:
    """The preparation cache of a read-only weight array (a fresh dict for a writeable one)."""
    if not _frozen(w):
        return {}
    key = id(w)
    with _lock:
        hit = _cache.get(key)
        if hit is not None and hit.ref() is w:
            _cache.move_to_end(key)
            return hit.items

        def drop(ref: weakref.ref, key: int = key) -> None:
            with _lock:
                held = _cache.get(key)
                if held is not None and held.ref is ref:
                    _forget(key)

        _forget(key)
        _cache[key] = entry = _Prepared(weakref.ref(w, drop))
        return entry.items


def _keep(w: np.ndarray, d: dict, key, arr: np.ndarray) -> np.ndarray:
    """Store ``arr`` as ``w``'s preparation ``key``; past :data:`CACHE_BYTES`, drop the least
    recently used other arrays' preparations."""
    with _lock:
        if key in d:  # another thread prepared it meanwhile
            return d[key]
        d[key] = arr
        entry = _cache.get(id(w))
        if entry is not None and entry.items is d:
            entry.nbytes += arr.nbytes
            _held[0] += arr.nbytes
            while _held[0] > CACHE_BYTES and len(_cache) > 1:
                oldest = next(iter(_cache))
                if oldest == id(w):
                    break
                _forget(oldest)
    return arr


def _abs_sums(w: np.ndarray, d: dict) -> tuple[int, int]:
    """(max_k sum |w_k| over the whole kernel, max_k max_tap sum_c |w[k, :, tap]|), exact integers."""
    if "abs" not in d:
        k, c, r, s = w.shape
        a = np.abs(w.astype(np.int32)).reshape(k, c, r * s)
        per_tap = a.sum(axis=1)  # (K, R*S)
        d["abs"] = (int(per_tap.sum(axis=1).max()), int(per_tap.max()))
    return d["abs"]


def _tap_weights(w: np.ndarray, d: dict, dtype) -> np.ndarray:
    """(R*S, K, C) contiguous weights in ``dtype``: tap t's matrix is one contiguous block."""
    key = ("taps", np.dtype(dtype).str)
    if key not in d:
        k, c, r, s = w.shape
        t = np.empty((r * s, k, c), dtype)
        t[...] = w.reshape(k, c, r * s).transpose(2, 0, 1)
        return _keep(w, d, key, t)
    return d[key]


def _flat_weights(w: np.ndarray, d: dict, dtype) -> np.ndarray:
    """(K, C*R*S) weights in ``dtype`` (im2col order)."""
    key = ("flat", np.dtype(dtype).str)
    if key not in d:
        return _keep(w, d, key, w.reshape(w.shape[0], -1).astype(dtype))
    return d[key]


def _padded(x: np.ndarray, op: ConvOp, dtype) -> np.ndarray:
    pt, pl, pb, pr = op.pad
    if not any(op.pad):
        return x.astype(dtype)
    n, c, h, w = x.shape
    xp = np.empty((n, c, h + pt + pb, w + pl + pr), dtype)
    xp[...] = op.pad_value
    xp[:, :, pt:pt + h, pl:pl + w] = x
    return xp


def _tap(xp: np.ndarray, i: int, j: int, op: ConvOp) -> np.ndarray:
    """(N, C, Ho*Wo): the input pixels kernel tap (i, j) meets at every output position."""
    (sy, sx), (dy, dx), ho, wo = op.stride, op.dilation, op.output.h, op.output.w
    v = xp[:, :, i * dy: i * dy + (ho - 1) * sy + 1: sy, j * dx: j * dx + (wo - 1) * sx + 1: sx]
    return v.reshape(v.shape[0], v.shape[1], ho * wo)


def supported(op: ConvOp, x: np.ndarray, w: np.ndarray) -> bool:
    return (op.groups == 1 and op.mode in ("direct", "image") and x.dtype == np.int8 and w.dtype == np.int8
            and x.size > 0 and w.size > 0)


def accumulate(op: ConvOp, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """CACC values (int32, saturated) of a :func:`supported` INT8 convolution."""
    d = _entry(w)
    whole, per_tap = _abs_sums(w, d)
    xmax = max(-int(x.min()), int(x.max()), abs(int(op.pad_value)))
    bound = xmax * whole
    k, c, r, s = w.shape
    n, ho, wo = op.output.n, op.output.h, op.output.w
    if r == s == 1 and not any(op.pad):
        dt = np.float32 if bound < F32_EXACT else np.float64
        (sy, sx) = op.stride
        xs = x if (sy, sx) == (1, 1) else x[:, :, : (ho - 1) * sy + 1: sy, : (wo - 1) * sx + 1: sx]
        acc = np.matmul(_flat_weights(w, d, dt), xs.astype(dt).reshape(n, c, ho * wo))
    elif c >= _PER_TAP_MIN_C:
        dt = np.float32 if xmax * per_tap < F32_EXACT else np.float64
        sum_dt = np.float32 if bound < F32_EXACT else np.float64
        xp = _padded(x, op, dt)
        taps = _tap_weights(w, d, dt)
        acc = None
        for t in range(r * s):
            part = np.matmul(taps[t], _tap(xp, t // s, t % s, op))
            if acc is None:
                acc = part if part.dtype == sum_dt else part.astype(sum_dt)
            else:
                np.add(acc, part, out=acc)
    else:
        dt = np.float32 if bound < F32_EXACT else np.float64
        xp = _padded(x, op, dt)
        (sy, sx), (dy, dx) = op.stride, op.dilation
        sn, sc, sh, sw = xp.strides
        cols = as_strided(xp, (n, c, r, s, ho, wo), (sn, sc, sh * dy, sw * dx, sh * sy, sw * sx), writeable=False)
        acc = np.matmul(_flat_weights(w, d, dt), cols.reshape(n, c * r * s, ho * wo))
    acc = acc.reshape(n, k, ho, wo)
    if bound <= I32_MAX:  # exact integers inside int32: the CACC saturation cannot act
        return acc.astype(np.int32)
    return np.clip(acc, -(2**31), I32_MAX).astype(np.int32)
