"""Convolution and transposed convolution, N-d (1-3 spatial dims), via im2col/col2im and BLAS.

Float inputs arrive as float32 and every product is accumulated in float32 by BLAS, the
accumulation type of the GPU and DLA convolution units.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from engine.ir.errors import UnsupportedError

from . import channels_last, compiled
from .activation import apply_activation_inplace

# Below this many input channels (an RGB stem), channels-last im2col copies runs too short to be
# fast; such inputs gather whole output planes per (channel, tap) instead.
_MIN_CHANNELS_LAST = 16


def _pad_spatial(x: np.ndarray, pre, post, value: float = 0.0) -> np.ndarray:
    if not any(pre) and not any(post):
        return x
    return np.pad(x, [(0, 0), (0, 0), *zip(pre, post)], constant_values=value)


def windows(xp: np.ndarray, kernel, stride, dilation, out) -> np.ndarray:
    """A strided view (N, C, *out, *kernel) of the padded input ``xp``: every tap of every window."""
    sp = len(kernel)
    span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    axes = tuple(range(2, 2 + sp))
    v = sliding_window_view(xp, span, axis=axes)
    idx = (slice(None), slice(None),
           *(slice(0, (o - 1) * s + 1, s) for o, s in zip(out, stride)),
           *(slice(None, None, d) for d in dilation))
    return v[idx]


def _out_size(x_sp, kernel, stride, pre, post, dilation) -> tuple[int, ...]:
    return tuple([(n + a + b - (d * (k - 1) + 1)) // s + 1
                  for n, k, s, a, b, d in zip(x_sp, kernel, stride, pre, post, dilation)])


def conv_nd(x: np.ndarray, w: np.ndarray, stride, pre, post, dilation, groups: int,
            bordered: bool = False) -> np.ndarray:
    """y[n, k, o] = sum_{c, t} x_pad[n, g*Cg + c, o*stride + t*dilation] * w[k, c, t] (no bias).

    2-D float convolutions run channels-last (``channels_last``): the result may then be stored
    NHWC, with ``bordered`` (1x1 and few-channel paths) inside a ``row_bordered`` buffer; its
    values are the same.
    """
    n, c = x.shape[:2]
    k_out = w.shape[0]
    kernel = w.shape[2:]
    sp = len(kernel)
    out = _out_size(x.shape[2:], kernel, stride, pre, post, dilation)
    path = channels_last.supports(x, w, groups) if all(o > 0 for o in out) else None
    if path == "1x1" and not any(pre) and not any(post):
        return channels_last.conv1x1(x, w, stride, out, bordered=bordered)
    if path == "depthwise":
        return channels_last.depthwise(x, w, stride, pre, post, dilation, out)
    if path is not None:
        if x.shape[1] < _MIN_CHANNELS_LAST:
            return channels_last.im2col_few_channels(x, w, stride, pre, post, dilation, out, bordered=bordered)
        return channels_last.im2col_conv(x, w, stride, pre, post, dilation, out)
    taps = math.prod(kernel)
    nout = math.prod(out)
    if groups == 1 and taps == 1 and not any(pre) and not any(post):
        # 1x1 convolution: one GEMM on the (strided) input.
        xs = x[(slice(None), slice(None), *(slice(0, (o - 1) * s + 1, s) for o, s in zip(out, stride)))]
        y = np.matmul(w.reshape(k_out, c), xs.reshape(n, c, nout))
        return y.reshape(n, k_out, *out)
    xp = _pad_spatial(x, pre, post)
    win = windows(xp, kernel, stride, dilation, out)  # (N, C, *out, *kernel)
    cg, kg = c // groups, k_out // groups
    if cg == 1 and kg == 1 and groups > 1:
        # Depthwise: accumulate tap by tap (no im2col copy, no tiny batched GEMMs).
        wf = w.reshape(c, taps)
        y = np.zeros((n, c, *out), dtype=np.result_type(x, w))
        for t, tap in enumerate(np.ndindex(*kernel)):
            y += win[(Ellipsis, *tap)] * wf[:, t].reshape(c, *([1] * sp))
        return y
    # im2col with the output pixels innermost, so the gather copies contiguous rows:
    # (G, Kg, Cg*taps) @ (G, Cg*taps, N*out) -> (G, Kg, N*out)
    perm = (1, *range(2 + sp, 2 + 2 * sp), 0, *range(2, 2 + sp))
    cols = np.ascontiguousarray(win.transpose(perm)).reshape(groups, cg * taps, n * nout)
    y = np.matmul(w.reshape(groups, kg, cg * taps), cols)
    y = y.reshape(k_out, n, *out)
    return np.ascontiguousarray(np.moveaxis(y, 1, 0)) if n > 1 else y.reshape(1, k_out, *out)


def deconv_nd(x: np.ndarray, w: np.ndarray, stride, pre, post, dilation, output_padding, groups: int,
              out_shape) -> np.ndarray:
    """ONNX ConvTranspose: scatter every input pixel's kernel-weighted copy, then crop the padding."""
    n, c = x.shape[:2]
    kernel = w.shape[2:]
    sp = len(kernel)
    cg = c // groups
    kg = w.shape[1]
    ins = x.shape[2:]
    nin = math.prod(ins)
    taps = math.prod(kernel)
    # cols[g, n*in, kg*taps] = x[n, g, c, in] . w[g, c, kg*taps]
    xm = x.reshape(n, groups, cg, nin).transpose(1, 0, 3, 2).reshape(groups, n * nin, cg)
    wm = w.reshape(groups, cg, kg * taps)
    cols = np.matmul(xm, wm).reshape(groups, n, *ins, kg, *kernel)
    full = tuple(s * (i - 1) + d * (k - 1) + 1 + op
                 for i, k, s, d, op in zip(ins, kernel, stride, dilation, output_padding))
    y = np.zeros((n, groups, kg, *full), dtype=cols.dtype)
    # move (n, kg) to the front of cols: (n, kg, *ins, *kernel) per group
    perm = (1, 0, 2 + sp, *range(2, 2 + sp), *range(3 + sp, 3 + 2 * sp))
    cols = cols.transpose(perm)  # (N, G, Kg, *ins, *kernel)
    for tap in np.ndindex(*kernel):
        dst = (Ellipsis, *(slice(t * d, t * d + (i - 1) * s + 1, s)
                           for t, d, i, s in zip(tap, dilation, ins, stride)))
        y[dst] += cols[(Ellipsis, *tap)]
    crop = (slice(None), slice(None), slice(None), *(slice(a, a + o) for a, o in zip(pre, out_shape)))
    y = y[crop]
    return np.ascontiguousarray(y.reshape(n, groups * kg, *out_shape))


def _epilogue(y: np.ndarray, bias, residual, act) -> np.ndarray:
    """bias, residual and activation applied in place on the freshly computed ``y``.

    A channels-last result is updated as (N, H, W*K) rows with the bias tiled along a row, so
    every ufunc runs over long contiguous rows rather than K values at a time.
    """
    rows = channels_last.nhwc_rows(y)
    if residual is None and rows is not None and compiled.bias_activate_rows(y, rows, bias, act):
        return y  # one compiled pass (numba installed)
    if rows is not None:
        w = y.shape[3]
        if bias is not None:
            bias = bias if bias.dtype == y.dtype else bias.astype(y.dtype)
            rows += channels_last.prepared(bias, ("tile", w), lambda b: np.tile(b, w))
        if residual is not None:
            y += residual
        if act is not None:
            apply_activation_inplace(rows, act)
        return y
    if bias is not None:
        y += bias.astype(y.dtype, copy=False).reshape(1, -1, *([1] * (y.ndim - 2)))
    if residual is not None:
        y += residual
    if act is not None:
        y = apply_activation_inplace(y, act)
    return y


def _check_float(layer, x: np.ndarray) -> None:
    if x.dtype.kind != "f":
        raise UnsupportedError(f"{layer.describe()}: convolution of {x.dtype} tensors is not supported")


def _pixel_conv(x: np.ndarray, w: np.ndarray, bias, residual, act) -> np.ndarray:
    """A 1x1 convolution of a 1x1 image (squeeze-and-excitation layers): one small GEMM, with
    none of the spatial bookkeeping, whose fixed cost dominates at this size."""
    n, c = x.shape[:2]
    k = w.shape[0]
    y = np.matmul(x.reshape(n, c), channels_last.prepared(w, ("1x1",), lambda a: a.reshape(k, -1).T))
    if bias is not None:
        y += bias.astype(y.dtype, copy=False)
    if residual is not None:
        y += residual.reshape(n, k)
    if act is not None:
        y = apply_activation_inplace(y, act)
    return y.reshape(n, k, 1, 1)


def _compiled_depthwise(x: np.ndarray, w: np.ndarray, bias, p) -> np.ndarray | None:
    """A 2-D depthwise convolution with its epilogue by the compiled kernel (``compiled``), or
    None when that path is off or does not cover the layer."""
    if channels_last.supports(x, w, p.groups) != "depthwise":
        return None
    out = _out_size(x.shape[2:], p.kernel, p.stride, p.pre_padding, p.post_padding, p.dilation)
    if not all(o > 0 for o in out):
        return None
    b = bias.astype(x.dtype, copy=False) if bias is not None else None
    r = compiled.depthwise(x, w, b, p.activation, p.stride, p.pre_padding, p.post_padding, p.dilation, out)
    if r is None:
        return None
    y, fused = r
    return y if fused or p.activation is None else _epilogue(y, None, None, p.activation)


def convolution(layer, inputs, weights):
    p = layer.params
    x = inputs[0]
    _check_float(layer, x)
    w = weights["kernel"].astype(x.dtype, copy=False)
    bias = weights.get("bias")
    if x.ndim == 4 and x.shape[2:] == (1, 1) and w.shape[2:] == (1, 1) and p.groups == 1 \
            and not any(p.pre_padding) and not any(p.post_padding):
        return [_pixel_conv(x, w, bias, inputs[1] if p.residual else None, p.activation)]
    if p.groups > 1 and not p.residual:
        y = _compiled_depthwise(x, w, bias, p)
        if y is not None:
            return [y]
    # An expansion (more output than input channels, no residual) leaves its output between zero
    # rows: its reader is typically a depthwise convolution, which then needs no padding copy.
    bordered = x.ndim == 4 and x.shape[1] < w.shape[0] and p.groups == 1 and not p.residual
    if (bias is not None and channels_last.supports(x, w, p.groups) == "1x1" and not any(p.pre_padding)
            and not any(p.post_padding) and channels_last.folds_bias(x, w)):
        out = _out_size(x.shape[2:], p.kernel, p.stride, p.pre_padding, p.post_padding, p.dilation)
        y = channels_last.conv1x1(x, w, p.stride, out, bias=bias.astype(x.dtype, copy=False), bordered=bordered)
        bias = None
    else:
        y = conv_nd(x, w, p.stride, p.pre_padding, p.post_padding, p.dilation, p.groups, bordered=bordered)
    y = _epilogue(y, bias, inputs[1] if p.residual else None, p.activation)
    return [y.astype(x.dtype, copy=False)]


def deconvolution(layer, inputs, weights):
    p = layer.params
    x = inputs[0]
    _check_float(layer, x)
    sp = x.ndim - 2
    opad = p.output_padding or (0,) * sp
    out_shape = tuple(s * (i - 1) + op + d * (k - 1) + 1 - a - b
                      for i, k, s, d, op, a, b in zip(x.shape[2:], p.kernel, p.stride, p.dilation, opad,
                                                      p.pre_padding, p.post_padding))
    y = deconv_nd(x, weights["kernel"].astype(x.dtype, copy=False), p.stride, p.pre_padding, p.post_padding,
                  p.dilation, opad, p.groups, out_shape)
    y = _epilogue(y, weights.get("bias"), None, p.activation)
    return [y.astype(x.dtype, copy=False)]
