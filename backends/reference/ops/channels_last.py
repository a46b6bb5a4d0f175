"""2-D convolution computed channels-last (NHWC), the layout in which numpy and BLAS are fast.

Results are returned as (N, K, H, W) arrays whose memory is NHWC (a transposed view of an
(N, H, W, K) buffer, whose images may lie between zero rows: ``row_bordered``). Values do not
depend on the layout; the next convolution reads such an input without a copy, and every other
kernel handles any strides. The executor makes network outputs C-contiguous again.

* 1x1: one GEMM (N*H*W, C) @ (C, K), the output channels innermost; expansion layers carry the
  bias into the GEMM as one more input channel of ones, and write its output between zero rows.
* depthwise: all taps accumulated by one ``einsum`` over a strided window view whose inner axis is
  a whole output row (W*C contiguous values), the weights tiled along it. An input between zero
  rows is read in place (``_depthwise_in_buffer``: horizontal stride 1 or 2); any other is padded
  and, for a strided convolution, split into its column phases, so that every tap reads
  contiguous rows.
* k x k: im2col with the channels innermost (each tap copies contiguous runs of C), then one GEMM;
  inputs with few channels (an RGB stem) gather whole output planes per (channel, tap) instead.

Prepared weights (transposed, tiled, bias-augmented) are cached per weight array, weakly, like
the FP16 copies in ``kernels``: they live as long as the layer's weights.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable

import numpy as np

# (id(weight), tag) -> (weakrefs to the weight and companions, prepared array)
_PREPARED: dict[tuple[int, tuple], tuple[tuple[weakref.ref, ...], np.ndarray]] = {}


def prepared(w: np.ndarray, tag: tuple, make: Callable[[np.ndarray], np.ndarray],
             also: np.ndarray | None = None) -> np.ndarray:
    """``make(w)``, computed once per weight array (and companion array ``also``, e.g. the bias
    folded into it) and ``tag`` while the arrays live."""
    key = (id(w), tag if also is None else (*tag, id(also)))
    hit = _PREPARED.get(key)
    if hit is not None:  # the ids may belong to arrays that died since: the weakrefs tell
        refs = hit[0]
        if refs[0]() is w and (also is None or refs[1]() is also):
            return hit[1]
    arrays = (w,) if also is None else (w, also)
    out = np.ascontiguousarray(make(w))
    out.flags.writeable = False
    try:
        # The callback holds the dict itself: at interpreter exit module globals are already gone.
        refs = tuple(weakref.ref(a, lambda _, k=key, d=_PREPARED: d.pop(k, None)) for a in arrays)
    except TypeError:
        return out
    _PREPARED[key] = (refs, out)
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


def nhwc_rows(y: np.ndarray) -> np.ndarray | None:
    """The (N, H, W*C) rows view of an (N, C, H, W) array whose memory is NHWC with contiguous
    image rows (images and rows may lie apart), or None for any other layout."""
    if y.ndim != 4:
        return None
    n, c, h, w = y.shape
    sn, sc, sh, sw = y.strides
    it = y.itemsize
    if (c > 1 and sc != it) or (w > 1 and sw != c * it):
        return None
    return y.transpose(0, 2, 3, 1).reshape(n, h, w * c)  # merges (W, C), contiguous: always a view


# Zero image rows that an expansion convolution leaves above and below each image of its output
# (``row_bordered``): the top/bottom padding of the 3x3 and 5x5 depthwise convolutions that read
# it, plus the row their first and last (masked) taps touch; see ``_depthwise_in_buffer``.
ROW_BORDER = 3


def row_bordered(n: int, h: int, w: int, c: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """A fresh buffer of N images of (H + 2*ROW_BORDER, W, C) whose border rows are zeros: its
    interior as an (N, H, W, C) view and as (N, H*W, C) GEMM output rows (both views of it)."""
    b = ROW_BORDER
    buf = np.empty((n, h + 2 * b, w, c), dtype=dtype)
    buf[:, :b] = 0
    buf[:, b + h:] = 0
    interior = buf[:, b:b + h]
    rows = buf.reshape(n, (h + 2 * b) * w, c)[:, b * w:(b + h) * w]
    return interior, rows


# Below this many bytes a padded copy is cleared whole (one call) rather than border by border.
_SMALL_BYTES = 1 << 18


def _pad_nhwc(xh: np.ndarray, pre, post) -> np.ndarray:
    """Zero-padded copy of an NHWC array (any strides); only the border is cleared (small arrays:
    all of it, in one call). Without padding: ``xh`` itself when C-contiguous, else a copy."""
    n, h, w, c = xh.shape
    (t, left), (b, right) = pre, post
    if not (t or left or b or right):
        return np.ascontiguousarray(xh)
    shape = (n, h + t + b, w + left + right, c)
    if xh.nbytes < _SMALL_BYTES:
        xp = np.zeros(shape, dtype=xh.dtype)
        xp[:, t:t + h, left:left + w] = xh
        return xp
    xp = np.empty(shape, dtype=xh.dtype)
    xp[:, :t] = 0
    xp[:, t + h:] = 0
    xp[:, t:t + h, :left] = 0
    xp[:, t:t + h, left + w:] = 0
    xp[:, t:t + h, left:left + w] = xh
    return xp


def _padded_phases(xh: np.ndarray, pre, post, sw: int) -> list[np.ndarray]:
    """The zero-padded NHWC input split into its ``sw`` column phases (phase q holds the padded
    columns q, q + sw, ...), built in one copy."""
    if sw == 1:
        return [_pad_nhwc(xh, pre, post)]
    if xh.nbytes < _SMALL_BYTES:  # few calls: pad, then one strided copy per phase
        xp = _pad_nhwc(xh, pre, post)
        return [np.ascontiguousarray(xp[:, :, q::sw]) for q in range(sw)]
    n, h, w, c = xh.shape
    (t, left), (b, right) = pre, post
    wp = w + left + right
    phases = []
    for q in range(sw):
        wq = -(-(wp - q) // sw)
        lo = max(0, -(-(left - q) // sw))  # first phase column inside the input
        hi = min(wq, -(-(w + left - q) // sw))
        ph = np.empty((n, h + t + b, wq, c), dtype=xh.dtype)
        ph[:, :t] = 0
        ph[:, t + h:] = 0
        ph[:, t:t + h, :lo] = 0
        ph[:, t:t + h, max(hi, lo):] = 0
        if hi > lo:
            start = q + lo * sw - left
            ph[:, t:t + h, lo:hi] = xh[:, :, start:start + (hi - lo - 1) * sw + 1:sw]
        phases.append(ph)
    return phases


def folds_bias(x: np.ndarray, w: np.ndarray) -> bool:
    """Whether ``conv1x1`` adds the bias inside its GEMM: when the input (copied once, with a
    column of ones) is smaller than the output (an expansion layer), which then skips a pass."""
    return x.shape[1] < w.shape[0]


def conv1x1(x: np.ndarray, w: np.ndarray, stride, out, bias: np.ndarray | None = None,
            bordered: bool = False) -> np.ndarray:
    """Pointwise convolution without padding: one GEMM, output channels innermost.

    With ``bias`` the GEMM computes [x | 1] @ [W^T ; b]: the bias rides along as one more input
    channel (one more product, exact, per output). With ``bordered`` the GEMM writes straight into
    the interior of a ``row_bordered`` buffer.
    """
    n, c = x.shape[:2]
    k = w.shape[0]
    xs = x.transpose(0, 2, 3, 1)[:, ::stride[0], ::stride[1]][:, :out[0], :out[1]]
    pixels = out[0] * out[1]
    if bias is None:
        wt = prepared(w, ("1x1",), lambda a: a.reshape(a.shape[0], -1).T)  # (C, K)
        a = xs.reshape(n, pixels, c)  # reshape copies only when it must
    else:
        wt = prepared(w, ("1x1+bias",), lambda a: np.concatenate([a.reshape(k, -1).T, bias[None, :]]), also=bias)
        xa = np.empty((n, out[0], out[1], c + 1), dtype=np.result_type(x, w))
        xa[..., :c] = xs
        xa[..., c] = 1
        a = xa.reshape(n, pixels, c + 1)
    return _gemm_nhwc(a, wt, n, out, bordered)


def _gemm_nhwc(a: np.ndarray, wm: np.ndarray, n: int, out, bordered: bool) -> np.ndarray:
    """(N, P, Cin) @ (Cin, K) as an (N, K, Ho, Wo) channels-last result, in a ``row_bordered``
    buffer when asked (each image's GEMM writes its rows there directly)."""
    k = wm.shape[1]
    if bordered:
        interior, rows = row_bordered(n, out[0], out[1], k, np.result_type(a, wm))
        for i in range(n):  # one plain 2-D GEMM per image, as BLAS takes it best
            np.matmul(a[i], wm, out=rows[i])
        return from_nhwc(interior)
    y = np.matmul(a.reshape(-1, a.shape[-1]), wm)
    return from_nhwc(y.reshape(n, out[0], out[1], k))


@functools.lru_cache(maxsize=256)
def _phase_taps(kw: int, sw: int, dw: int) -> tuple[tuple[tuple[int, ...], int, int, int], ...]:
    """Per column phase q: the taps j with (j*dw) % sw == q, the first one's column in that phase,
    the (uniform) column step between consecutive taps, and q."""
    out = []
    for q in range(sw):
        js = tuple(j for j in range(kw) if (j * dw) % sw == q)
        if js:
            cols = [(j * dw - q) // sw for j in js]
            step = cols[1] - cols[0] if len(cols) > 1 else 1
            assert all(b - a == step for a, b in zip(cols, cols[1:]))  # an arithmetic progression
            out.append((js, cols[0], step, q))
    return tuple(out)


def _tiled_taps(w: np.ndarray, js: tuple[int, ...], wo: int) -> np.ndarray:
    """(kh, len(js), wo*C): the weights of taps ``js`` of each kernel row, tiled along an output row."""
    c, _, kh, kw = w.shape
    taps = w.reshape(c, kh, kw)[:, :, list(js)].transpose(1, 2, 0)  # (kh, len(js), C)
    return np.tile(taps[:, :, None, :], (1, 1, wo, 1)).reshape(kh, len(js), wo * c)


def _window(src: np.ndarray, b: int, first: int, shape, strides) -> np.ndarray:
    """The window view over image ``b`` of a C-contiguous NHWC phase buffer, from column
    ``first``; np.ndarray checks that it lies inside the buffer."""
    return np.ndarray(shape, dtype=src.dtype, buffer=src, offset=b * src.strides[0] + first * src.strides[2],
                      strides=strides)


def _column_taps(kw: int, sw: int, left: int) -> tuple[int, int, int]:
    """Horizontal taps of an in-buffer depthwise convolution as (first offset, step, count), in
    input columns relative to a position p of the row. Stride 1: position p is output column p,
    offsets j - left. Stride 2: positions p = 2*o + s (s = 0, 1) each take the kernel taps j with
    j - left = s (mod 2) at even offsets, and output column o is the sum of its two positions."""
    if sw == 1:
        return -left, 1, kw
    first = -left - (left % 2)  # the largest even offset <= -left
    last = kw - 2 - left
    last += (last - first) % 2  # the smallest offset >= kw - 2 - left on the even grid
    return first, 2, (last - first) // 2 + 1


def _masked_taps(w: np.ndarray, sw: int, left: int, positions: int, width: int) -> np.ndarray:
    """(kh, taps, positions*C) weights for ``_column_taps``: tap q at position p carries kernel
    column j = first + q*step + (p mod sw) + left, zero where no such j exists or where the
    column it reads (p + first + q*step) lies outside [0, width): the horizontal padding as zero
    weights."""
    c, _, kh, kw = w.shape
    first, step, count = _column_taps(kw, sw, left)
    p = np.arange(positions)[None, :]
    offset = first + step * np.arange(count)[:, None]  # (taps, 1)
    j = offset + p % sw + left  # (taps, positions)
    col = p + offset
    keep = (j >= 0) & (j < kw) & (col >= 0) & (col < width)
    taps = w.reshape(c, kh, kw).transpose(1, 2, 0)  # (kh, kw, C)
    out = taps[:, np.clip(j, 0, kw - 1), :] * keep[None, :, :, None].astype(w.dtype)  # (kh, taps, P, C)
    return out.reshape(kh, count, positions * c)


def _depthwise_in_buffer(x: np.ndarray, w: np.ndarray, stride, pre, post, out) -> np.ndarray | None:
    """A depthwise convolution (dilation 1, horizontal stride 1 or 2) read in place from an input
    whose images lie in a buffer with zero rows above and below (``row_bordered``), or None if
    ``x`` is not such.

    The window view runs over the flat rows of the buffer: the vertical padding is the zero rows;
    a tap past the left or right edge reads the neighbouring row's edge pixel with a zero weight
    (``_masked_taps``). So those edge pixels must be finite (0 * inf is NaN) and the border rows
    zero: both are checked (a few rows and columns) before the buffer is used. A horizontal
    stride of 2 computes both column parities of each output column (``_column_taps``, about a
    third more products than needed) and adds them: no phase copy of the input.
    """
    base = x.base
    n, c, h, wd = x.shape
    kh, kw = w.shape[2:]
    sv, sw = stride
    (t, left), b = pre, post[0]
    ho, wo = out
    first, step, count = _column_taps(kw, sw, left)
    positions = wo * sw
    over = positions + first + (count - 1) * step - wd  # columns read past the right edge
    xh = x.transpose(0, 2, 3, 1)
    sn, sh, sc_w, sc = xh.strides
    it = x.itemsize
    rs = wd * c * it
    if (not isinstance(base, np.ndarray) or not base.flags.c_contiguous or base.dtype != x.dtype
            or sc != it or sc_w != c * it or (h > 1 and sh != rs) or -first > wd or over > wd
            or min(*pre, *post) < 0 or (n > 1 and sn < (h + t + b + 2) * rs)):
        return None
    origin = xh.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    try:  # the rows read, border included (np.ndarray checks they lie inside the buffer)
        rows = np.ndarray((n, h + t + b + 2, wd * c), dtype=x.dtype, buffer=base, offset=origin - (t + 1) * rs,
                          strides=(sn if n > 1 else rs, rs, it))
    except (TypeError, ValueError):
        return None
    if rows[:, :t + 1].any() or rows[:, t + 1 + h:].any():
        return None
    if (over > 0 and not np.isfinite(xh[:, :, :over]).all()) or \
            (first < 0 and not np.isfinite(xh[:, :, wd + first:]).all()):
        return None
    wt = prepared(w, ("dw-masked", sw, left, positions, wd), lambda a: _masked_taps(a, sw, left, positions, wd))
    dtype = x.dtype if x.dtype == w.dtype else np.result_type(x, w)
    z = np.empty((n, ho, positions * c), dtype=dtype)
    start = origin - t * rs + first * c * it  # image 0, output row 0, first tap
    for i in range(n):
        view = np.ndarray((ho, kh, count, positions * c), dtype=x.dtype, buffer=base, offset=start + i * sn,
                          strides=(sv * rs, rs, step * c * it, it))
        np.einsum("hijm,ijm->hm", view, wt, out=z[i])
    if sw == 1:
        return from_nhwc(z.reshape(n, ho, wo, c))
    pairs = z.reshape(n, ho, wo, 2, c)
    return from_nhwc(np.add(pairs[:, :, :, 0], pairs[:, :, :, 1]))


def depthwise(x: np.ndarray, w: np.ndarray, stride, pre, post, dilation, out) -> np.ndarray:
    """y[n, c, o] = sum_t x_pad[n, c, o*stride + t*dilation] * w[c, t].

    The padded input is split into its ``sw`` column phases (phase q holds columns q, q+sw, ...),
    so the taps of one phase read, for every output row, one contiguous run of wo*C values. The
    multiply-accumulate over taps is then one ``einsum`` per phase over a strided window view
    (built directly on the phase buffer), with the weights tiled along the output width: a fused
    loop, no temporaries.
    """
    if stride[1] in (1, 2) and tuple(dilation) == (1, 1):
        y = _depthwise_in_buffer(x, w, stride, pre, post, out)
        if y is not None:
            return y
    n, c = x.shape[:2]
    kh = w.shape[2]
    (sh, sw), (dh, dw) = stride, dilation
    ho, wo = out
    dtype = x.dtype if x.dtype == w.dtype else np.result_type(x, w)
    groups = _phase_taps(w.shape[3], sw, dw)
    phases = _padded_phases(x.transpose(0, 2, 3, 1), pre, post, sw)  # reads NHWC with any strides
    y = np.empty((n, ho, wo * c), dtype=dtype)
    tmp = np.empty((ho, wo * c), dtype=dtype) if len(groups) > 1 else None
    for i, (js, first, step, q) in enumerate(groups):
        phase = phases[q]
        wt = prepared(w, ("dw", wo, sw, dw, q), lambda a, js=js: _tiled_taps(a, js, wo))
        bs, rs, cs, es = phase.strides
        shape, strides = (ho, kh, len(js), wo * c), (sh * rs, dh * rs, step * cs, es)
        for b in range(n):
            view = _window(phase, b, first, shape, strides)
            if i == 0:
                np.einsum("hijm,ijm->hm", view, wt, out=y[b])
            else:
                np.einsum("hijm,ijm->hm", view, wt, out=tmp)
                y[b] += tmp
    return from_nhwc(y.reshape(n, ho, wo, c))


def im2col_conv(x: np.ndarray, w: np.ndarray, stride, pre, post, dilation, out) -> np.ndarray:
    """Dense k x k convolution (groups == 1): channels-innermost im2col and one GEMM."""
    n, c = x.shape[:2]
    k = w.shape[0]
    kh, kw = w.shape[2:]
    (sh, sw), (dh, dw) = stride, dilation
    ho, wo = out
    xp = _pad_nhwc(x.transpose(0, 2, 3, 1), pre, post)
    cols = np.empty((n, ho, wo, kh * kw, c), dtype=np.result_type(x, w))
    for t in range(kh * kw):
        i, j = divmod(t, kw)
        cols[:, :, :, t] = xp[:, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw]
    wm = prepared(w, ("im2col",), lambda a: a.transpose(2, 3, 1, 0).reshape(kh * kw * c, k))
    y = np.matmul(cols.reshape(n * ho * wo, kh * kw * c), wm)
    return from_nhwc(y.reshape(n, ho, wo, k))


def im2col_few_channels(x: np.ndarray, w: np.ndarray, stride, pre, post, dilation, out,
                        bordered: bool = False) -> np.ndarray:
    """Dense convolution of an input with few channels (an RGB stem): im2col rows per (channel, tap),
    each a strided copy of whole output planes, then one GEMM with the output channels innermost
    (into a ``row_bordered`` buffer when asked)."""
    n, c = x.shape[:2]
    k = w.shape[0]
    kh, kw = w.shape[2:]
    (sh, sw), (dh, dw) = stride, dilation
    ho, wo = out
    xp = np.pad(x, [(0, 0), (0, 0), (pre[0], post[0]), (pre[1], post[1])]) if any(pre) or any(post) else x
    cols = np.empty((c, kh, kw, n, ho, wo), dtype=np.result_type(x, w))
    for t in range(kh * kw):
        i, j = divmod(t, kw)
        tap = xp[:, :, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw]
        cols[:, i, j] = tap.transpose(1, 0, 2, 3)
    wm = prepared(w, ("im2col_nchw",), lambda a: a.reshape(k, -1).T)  # (C*taps, K)
    return _gemm_nhwc(cols.reshape(c * kh * kw, n, ho * wo).transpose(1, 2, 0), wm, n, out, bordered)


def per_channel_binary(fn: np.ufunc, a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """``fn(a, b)`` where one operand is a channels-last (N, C, H, W) float array and the other a
    per-channel (N or 1, C, 1, 1) array of the same dtype (squeeze-and-excitation scaling), or None
    for any other pair.

    numpy broadcasting would loop over runs of C values per pixel; here each image row is one
    ufunc run of W*C values against the per-channel operand tiled along the row. Same elementwise
    operation, same values; the result is channels-last.
    """
    if a.ndim != 4 or b.ndim != 4 or a.dtype != b.dtype or a.dtype.kind != "f":
        return None
    swap = not is_channels_last(a)
    x, v = (b, a) if swap else (a, b)
    n, c, h, w = x.shape
    if not is_channels_last(x) or v.shape[1:] != (c, 1, 1) or v.shape[0] not in (1, n) or x.size == 0:
        return None
    xr = x.transpose(0, 2, 3, 1).reshape(n, h, w * c)  # a view: x is channels-last
    vt = np.tile(v.reshape(v.shape[0], 1, c), (1, 1, w))  # (N or 1, 1, W*C)
    y = np.empty((n, h, w, c), dtype=x.dtype)
    yr = y.reshape(n, h, w * c)
    if swap:
        fn(vt, xr, out=yr)
    else:
        fn(xr, vt, out=yr)
    return from_nhwc(y)


def supports(x: np.ndarray, w: np.ndarray, groups: int) -> str | None:
    """Which channels-last path computes this convolution, or None for the generic N-d one."""
    if x.ndim != 4 or x.dtype.kind != "f" or x.size == 0:
        return None
    c, k = x.shape[1], w.shape[0]
    if groups == 1:
        return "1x1" if w.shape[2:] == (1, 1) else "im2col"
    if groups == c == k and w.shape[1] == 1:
        return "depthwise"
    return None
