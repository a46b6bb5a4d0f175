"""Convolution, transposed convolution, pooling and LRN."""

from __future__ import annotations

import numpy as np

from engine.ir.layers import (
    ConvolutionParams,
    DeconvolutionParams,
    LRNParams,
    PoolingParams,
    PoolingType,
)
from engine.onnx_parser.context import NodeContext
from engine.onnx_parser.registry import converter


def _explicit_pads(nc: NodeContext, sp: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    pads = nc.ints("pads", (0,) * (2 * sp))
    if len(pads) != 2 * sp:
        raise nc.error(f"pads {pads} must have {2 * sp} values for {sp} spatial dims")
    return tuple(pads[:sp]), tuple(pads[sp:])


def resolve_padding(nc: NodeContext, spatial: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
                    dilation: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(pre, post) padding from ``auto_pad`` or ``pads`` (ONNX's SAME_UPPER puts the odd pixel last)."""
    sp = len(spatial)
    auto_pad = nc.attr("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        return _explicit_pads(nc, sp)
    if auto_pad == "VALID":
        return (0,) * sp, (0,) * sp
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise nc.error(f"auto_pad '{auto_pad}' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
    pre, post = [], []
    for size, k, s, d in zip(spatial, kernel, stride, dilation):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        if auto_pad == "SAME_UPPER":
            pre.append(small)
            post.append(total - small)
        else:
            pre.append(total - small)
            post.append(small)
    return tuple(pre), tuple(post)


def _geometry(nc: NodeContext, sp: int, kernel: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    stride = nc.ints("strides", (1,) * sp)
    dilation = nc.ints("dilations", (1,) * sp)
    for what, v in (("strides", stride), ("dilations", dilation)):
        if len(v) != sp:
            raise nc.error(f"{what} {v} must have {sp} values")
    return stride, dilation


def _bias(nc: NodeContext, index: int, channels: int, dtype: np.dtype) -> np.ndarray | None:
    if not nc.has_input(index):
        return None
    b = nc.const(index, "bias")
    if b.size != channels:
        raise nc.error(f"bias has {b.size} values, expected {channels}")
    return b.reshape(channels).astype(dtype)


@converter("Conv")
def conv(nc):
    x = nc.input(0)
    xs = nc.shape(x)
    if len(xs) < 3 or len(xs) > 5:
        raise nc.unsupported(f"convolution over {len(xs) - 2} spatial dims (input shape {xs}); hetrt supports 1-3")
    dtype = nc.np_dtype(x)
    w = nc.const(1, "weights").astype(dtype)
    sp = len(xs) - 2
    kernel = nc.ints("kernel_shape", w.shape[2:])
    if tuple(kernel) != tuple(w.shape[2:]):
        raise nc.error(f"kernel_shape {kernel} does not match weights shape {w.shape}")
    stride, dilation = _geometry(nc, sp, kernel)
    pre, post = resolve_padding(nc, xs[2:], kernel, stride, dilation)
    weights = {"kernel": w}
    b = _bias(nc, 2, w.shape[0], dtype)
    if b is not None:
        weights["bias"] = b
    params = ConvolutionParams(num_output_maps=int(w.shape[0]), kernel=tuple(kernel), stride=stride,
                               pre_padding=pre, post_padding=post, dilation=dilation,
                               groups=int(nc.attr("group", 1)))
    return [nc.add1(params, [x], weights)]


@converter("ConvTranspose")
def conv_transpose(nc):
    x = nc.input(0)
    xs = nc.shape(x)
    if len(xs) < 3 or len(xs) > 5:
        raise nc.unsupported(f"transposed convolution over {len(xs) - 2} spatial dims; hetrt supports 1-3")
    dtype = nc.np_dtype(x)
    w = nc.const(1, "weights").astype(dtype)
    sp = len(xs) - 2
    group = int(nc.attr("group", 1))
    kernel = nc.ints("kernel_shape", w.shape[2:])
    if tuple(kernel) != tuple(w.shape[2:]):
        raise nc.error(f"kernel_shape {kernel} does not match weights shape {w.shape}")
    stride, dilation = _geometry(nc, sp, kernel)
    opad = list(nc.ints("output_padding", (0,) * sp))
    if len(opad) != sp:
        raise nc.error(f"output_padding {tuple(opad)} must have {sp} values")
    spatial = xs[2:]
    full = [stride[i] * (spatial[i] - 1) + opad[i] + (kernel[i] - 1) * dilation[i] + 1 for i in range(sp)]
    output_shape = nc.ints("output_shape")
    auto_pad = nc.attr("auto_pad", "NOTSET")
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if output_shape is None:
            target = [spatial[i] * stride[i] for i in range(sp)]
        else:
            target = list(output_shape[-sp:])
            if len(target) != sp:
                raise nc.error(f"output_shape {output_shape} must give {sp} spatial dims")
        pre, post = [], []
        for i in range(sp):
            total = full[i] - target[i]
            if total < 0:  # a larger output than the kernel covers: extra output padding at the end
                opad[i] -= total
                total = 0
            if auto_pad == "SAME_UPPER":
                pre.append(total // 2)
                post.append(total - total // 2)
            else:
                pre.append(total - total // 2)
                post.append(total // 2)
        pre, post = tuple(pre), tuple(post)
    elif auto_pad == "VALID":
        pre, post = (0,) * sp, (0,) * sp
    elif auto_pad == "NOTSET":
        pre, post = _explicit_pads(nc, sp)
    else:
        raise nc.error(f"auto_pad '{auto_pad}' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
    k = int(w.shape[1]) * group
    weights = {"kernel": w}
    b = _bias(nc, 2, k, dtype)
    if b is not None:
        weights["bias"] = b
    params = DeconvolutionParams(num_output_maps=k, kernel=tuple(kernel), stride=stride, pre_padding=pre,
                                 post_padding=post, dilation=dilation, output_padding=tuple(opad), groups=group)
    return [nc.add1(params, [x], weights)]


def _pool(nc: NodeContext, ptype: PoolingType, lp_order: int = 2) -> list:
    x = nc.input(0)
    xs = nc.shape(x)
    if len(xs) < 3:
        raise nc.error(f"pooling input must be (N, C, spatial...), got shape {xs}")
    sp = len(xs) - 2
    kernel = nc.ints("kernel_shape")
    if kernel is None or len(kernel) != sp:
        raise nc.error(f"kernel_shape {kernel} must have {sp} values")
    stride, dilation = _geometry(nc, sp, kernel)
    pre, post = resolve_padding(nc, xs[2:], kernel, stride, dilation)
    ceil_mode = bool(nc.attr("ceil_mode", 0))
    if ceil_mode and nc.attr("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        # ONNX's SAME output size is ceil(in / stride) regardless of ceil_mode.
        ceil_mode = False
    params = PoolingParams(ptype, window=tuple(kernel), stride=stride, pre_padding=pre, post_padding=post,
                           dilation=dilation, ceil_mode=ceil_mode,
                           count_include_pad=bool(nc.attr("count_include_pad", 0)), lp_order=lp_order)
    return [nc.add1(params, [x])]


@converter("MaxPool")
def max_pool(nc):
    if nc.output_used(1):
        raise nc.unsupported("MaxPool's second output (Indices) is not supported by hetrt")
    if int(nc.attr("storage_order", 0)) != 0:
        raise nc.unsupported("MaxPool storage_order=1 only affects Indices, which hetrt does not produce")
    return _pool(nc, PoolingType.MAX) + [None]


@converter("AveragePool")
def average_pool(nc):
    return _pool(nc, PoolingType.AVERAGE)


@converter("LpPool")
def lp_pool(nc):
    return _pool(nc, PoolingType.LP, int(nc.attr("p", 2)))


def _global(nc: NodeContext, ptype: PoolingType, lp_order: int = 2) -> list:
    x = nc.input(0)
    if nc.rank(x) < 3:
        raise nc.error(f"pooling input must be (N, C, spatial...), got shape {nc.shape(x)}")
    return [nc.add1(PoolingParams(ptype, global_pool=True, lp_order=lp_order), [x])]


@converter("GlobalMaxPool")
def global_max_pool(nc):
    return _global(nc, PoolingType.MAX)


@converter("GlobalAveragePool")
def global_average_pool(nc):
    return _global(nc, PoolingType.AVERAGE)


@converter("GlobalLpPool")
def global_lp_pool(nc):
    return _global(nc, PoolingType.LP, int(nc.attr("p", 2)))


@converter("LRN")
def lrn(nc):
    size = nc.attr("size")
    if size is None:
        raise nc.error("attribute 'size' is required")
    params = LRNParams(size=int(size), alpha=float(nc.attr("alpha", 1e-4)), beta=float(nc.attr("beta", 0.75)),
                       bias=float(nc.attr("bias", 1.0)))
    return [nc.add1(params, [nc.input(0)])]

