"""Caffe layers with weights or window geometry: Convolution, Deconvolution, Pooling, InnerProduct,
LRN, BatchNorm, Scale and PReLU."""

from __future__ import annotations

import math

import numpy as np

from engine.caffe_parser.converter import LayerContext, converter
from engine.ir.layers import (
    ConvolutionParams,
    DeconvolutionParams,
    FullyConnectedParams,
    LRNParams,
    ParametricReLUParams,
    PoolingParams,
    PoolingType,
    ScaleMode,
    ScaleParams,
    ShuffleParams,
)


def _per_axis(lc: LayerContext, p, sp: int, field: str, default: int) -> tuple[int, ...]:
    """A window field given once for all spatial axes, once per axis, or as field_h/field_w (2-D)."""
    h, w = f"{field}_h", f"{field}_w"
    if sp == 2 and (p.HasField(h) or p.HasField(w)):
        if field != "pad" and not (p.HasField(h) and p.HasField(w)):
            raise lc.error(f"{h} and {w} must be given together")
        if field == "kernel" and _listed(p, "kernel_size"):
            raise lc.error("give either kernel_size or kernel_h/kernel_w, not both")
        return int(getattr(p, h)), int(getattr(p, w))
    values = _listed(p, "kernel_size" if field == "kernel" else field)
    if not values:
        if default < 0:
            raise lc.error("kernel_size (or kernel_h/kernel_w) is required")
        return (default,) * sp
    if len(values) == 1:
        return (int(values[0]),) * sp
    if len(values) != sp:
        raise lc.error(f"{field} gives {len(values)} values for {sp} spatial axes")
    return tuple(int(v) for v in values)


def _listed(p, name: str) -> list[int]:
    """A field that is repeated in Convolution but single in Pooling, as a list."""
    v = getattr(p, name)
    if isinstance(v, int):
        return [v] if p.HasField(name) else []
    return list(v)


def _conv_like(lc: LayerContext, deconv: bool) -> None:
    (x,) = lc.bottoms(1)
    p = lc.layer.convolution_param
    shape = lc.shape(x)
    if p.axis != 1:
        raise lc.error(f"convolution over axis {p.axis} is not supported (channels must be axis 1)")
    if len(shape) < 3:
        raise lc.error(f"input '{lc.layer.bottom[0]}' has shape {shape}; convolution needs (N, C, spatial...)")
    if not p.HasField("num_output") or p.num_output < 1:
        raise lc.error("convolution_param.num_output is required")
    sp = len(shape) - 2
    kernel = _per_axis(lc, p, sp, "kernel", -1)
    stride = _per_axis(lc, p, sp, "stride", 1)
    pad = _per_axis(lc, p, sp, "pad", 0)
    dilation = tuple(int(d) for d in p.dilation) or (1,)
    dilation = dilation * sp if len(dilation) == 1 else dilation
    c, k, g = shape[1], int(p.num_output), int(p.group)
    if g < 1 or c % g or k % g:
        raise lc.error(f"group {g} must divide the input channels {c} and num_output {k}")
    kshape = (c, k // g, *kernel) if deconv else (k, c // g, *kernel)
    expected = [("kernel", kshape)] + ([("bias", (k,))] if p.bias_term else [])
    blobs = lc.weights(expected)
    weights = {"kernel": blobs[0]}
    if p.bias_term:
        weights["bias"] = blobs[1]
    cls = DeconvolutionParams if deconv else ConvolutionParams
    params = cls(num_output_maps=k, kernel=kernel, stride=stride, pre_padding=pad, post_padding=pad,
                 dilation=tuple(dilation), groups=g)
    lc.add1(params, [x], weights)


@converter("Convolution")
def convolution(lc: LayerContext) -> None:
    _conv_like(lc, deconv=False)


@converter("Deconvolution")
def deconvolution(lc: LayerContext) -> None:
    _conv_like(lc, deconv=True)


@converter("Pooling")
def pooling(lc: LayerContext) -> None:
    """Caffe rounds output sizes up (CEIL) unless round_mode is FLOOR; average windows count the
    padding but not the part past it (``count_include_pad`` with the padded extent)."""
    (x,) = lc.bottoms(1)
    p = lc.layer.pooling_param
    shape = lc.shape(x)
    if len(shape) != 4:
        raise lc.error(f"pooling input must be 4-D (N, C, H, W), got {shape}")
    kinds = {0: PoolingType.MAX, 1: PoolingType.AVERAGE}
    if p.pool not in kinds:
        raise lc.error("STOCHASTIC pooling is a training-time method; hetrt supports MAX and AVE")
    if p.global_pooling:
        if p.HasField("kernel_size") or p.HasField("kernel_h"):
            raise lc.error("global_pooling takes no kernel size")
        lc.add1(PoolingParams(kinds[p.pool], global_pool=True), [x])
        return
    window = _per_axis(lc, p, 2, "kernel", -1)
    stride = _per_axis(lc, p, 2, "stride", 1)
    pad = _per_axis(lc, p, 2, "pad", 0)
    params = PoolingParams(kinds[p.pool], window=window, stride=stride, pre_padding=pad, post_padding=pad,
                           dilation=(1, 1), ceil_mode=p.round_mode == 0, count_include_pad=True)
    lc.add1(params, [x])


@converter("InnerProduct")
def inner_product(lc: LayerContext) -> None:
    """y = x·W^T + b over the axes from ``axis`` on, flattened (a reshape first when needed)."""
    (x,) = lc.bottoms(1)
    p = lc.layer.inner_product_param
    shape = lc.shape(x)
    axis = p.axis % len(shape) if -len(shape) <= p.axis < len(shape) else None
    if axis is None:
        raise lc.error(f"axis {p.axis} is out of range for input shape {shape}")
    if not p.HasField("num_output") or p.num_output < 1:
        raise lc.error("inner_product_param.num_output is required")
    n_out, n_in = int(p.num_output), math.prod(shape[axis:])
    expected = [("kernel", (n_in, n_out) if p.transpose else (n_out, n_in))]
    expected += [("bias", (n_out,))] if p.bias_term else []
    blobs = lc.weights(expected)
    weights = {"kernel": np.ascontiguousarray(blobs[0].T) if p.transpose else blobs[0]}
    if p.bias_term:
        weights["bias"] = blobs[1]
    flat = (*shape[:axis], n_in)
    if flat != shape:
        x = lc.add1(ShuffleParams(reshape=flat), [x], final=False)
    lc.add1(FullyConnectedParams(num_outputs=n_out), [x], weights)


@converter("LRN")
def lrn(lc: LayerContext) -> None:
    (x,) = lc.bottoms(1)
    p = lc.layer.lrn_param
    if p.norm_region != 0:
        raise lc.error("LRN with norm_region WITHIN_CHANNEL is not supported (ACROSS_CHANNELS only)")
    if p.local_size % 2 == 0:
        raise lc.error(f"LRN local_size must be odd, got {p.local_size}")
    lc.add1(LRNParams(size=int(p.local_size), alpha=float(p.alpha), beta=float(p.beta), bias=float(p.k)), [x])


@converter("BatchNorm")
def batch_norm(lc: LayerContext) -> None:
    """Inference BatchNorm: blobs are mean and variance sums and the moving-average factor that
    divides them (0 means 0). y = (x - mean) / sqrt(var + eps), as one per-channel scale and shift."""
    (x,) = lc.bottoms(1)
    p = lc.layer.batch_norm_param
    if p.HasField("use_global_stats") and not p.use_global_stats:
        raise lc.error("use_global_stats: false normalises by batch statistics (training); hetrt needs the "
                       "stored statistics (use_global_stats: true, the TEST-phase default)")
    shape = lc.shape(x)
    if len(shape) < 2:
        raise lc.error(f"BatchNorm input must have a channel axis, got shape {shape}")
    c = shape[1]
    mean, var, factor = lc.weights([("mean", (c,)), ("variance", (c,)), ("moving-average factor", (1,))])
    f = float(factor.reshape(-1)[0])
    f = 0.0 if f == 0 else 1.0 / f
    mean64, var64 = mean.astype(np.float64) * f, var.astype(np.float64) * f
    if np.any(var64 + p.eps <= 0):
        raise lc.error("variance + eps must be positive for every channel")
    scale = 1.0 / np.sqrt(var64 + float(np.float32(p.eps)))
    weights = {"scale": scale.astype(np.float32), "shift": (-mean64 * scale).astype(np.float32)}
    lc.add1(ScaleParams(ScaleMode.CHANNEL, channel_axis=1), [x], weights)


@converter("Scale")
def scale(lc: LayerContext) -> None:
    """y = x * scale (+ bias); the learned blob spans ``num_axes`` axes from ``axis``."""
    xs = lc.bottoms(at_least=1)
    if len(xs) != 1:
        raise lc.error("Scale with a second bottom (a run-time scale blob) is not supported; only learned scales")
    x = xs[0]
    p = lc.layer.scale_param
    shape = lc.shape(x)
    axis = p.axis % len(shape) if -len(shape) <= p.axis < len(shape) else None
    if axis is None:
        raise lc.error(f"axis {p.axis} is out of range for input shape {shape}")
    end = len(shape) if p.num_axes == -1 else axis + p.num_axes
    if p.num_axes < -1 or end > len(shape):
        raise lc.error(f"num_axes {p.num_axes} from axis {axis} leaves input shape {shape}")
    span = tuple(shape[axis:end])
    if not span:
        mode, coeff = ScaleMode.UNIFORM, (1,)
    elif len(span) == 1:
        mode, coeff = ScaleMode.CHANNEL, span
    elif axis == 1 and end == len(shape):
        mode, coeff = ScaleMode.ELEMENTWISE, span
    else:
        raise lc.error(f"a scale over axes {axis}..{end - 1} of {shape} is not supported (one axis, all "
                       f"axes after the batch, or a scalar)")
    blobs = lc.weights([("scale", coeff)] + ([("bias", coeff)] if p.bias_term else []))
    weights = {"scale": blobs[0]}
    if p.bias_term:
        weights["shift"] = blobs[1]
    lc.add1(ScaleParams(mode, channel_axis=axis if mode is ScaleMode.CHANNEL else 1), [x], weights)


@converter("PReLU")
def prelu(lc: LayerContext) -> None:
    (x,) = lc.bottoms(1)
    shape = lc.shape(x)
    if len(shape) < 2:
        raise lc.error(f"PReLU input must have a channel axis, got shape {shape}")
    shared = lc.layer.prelu_param.channel_shared
    (slope,) = lc.weights([("slope", (1,) if shared else (shape[1],))])
    slope = slope.reshape((1,) if shared else (shape[1],) + (1,) * (len(shape) - 2))
    lc.add1(ParametricReLUParams(), [x], {"slope": np.ascontiguousarray(slope)})
