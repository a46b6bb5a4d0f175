"""Exact integer emulation of INT8 layers: the reference for every INT8 backend.

Arithmetic (the DLA's, see ``engine.ir.int8_math``):

* inputs: int8 ``q = sat(round_half_even(x / s_in))`` with the layer's per-tensor input scale;
* convolution / fully connected: int8 per-output-channel weights, products summed exactly and
  saturated to int32 (the CACC hand-off), plus the integer bias as the SDP X1 ALU adds it
  (an int16 operand << bias_shift, saturating to int32);
* residual input (fused conv + add): converted into the accumulator's unit by the SDP's
  element-wise converter ``convert(e, scale, shift)`` (int16 scale, unsigned shift, round half
  away, saturate to 32 bits), added with int32 saturation;
* ReLU (and the lower bound 0 of a clip) on the int32 value; the clip's upper bound on the int8
  result;
* SiLU / hard-swish (non-linear epilogues): the exact function of the dequantized int32 value,
  correctly rounded to int8 (``engine.ir.int8_rules.quantize_nonlinear``);
* output: ``convert(v, scale_k, shift_k)`` to int8 with the per-channel requant pair derived from
  ``s_in * s_w[k] / s_out``; without an output scale the layer hands on ``v * s_in * s_w[k]`` in
  float32 (an INT8 layer with a float output);
* max pooling: the integer max; average pooling: the DLA PDP's sum and two reciprocal multiplies
  ``round(round(sum * RECIP_W >> 16) * RECIP_H >> 16)`` (divisor always the full window) — output
  scale = input scale for both.

Storage: between reference layers an INT8 result travels as the float32 value ``q * s_out``
(the convention ``engine.ir.memory.storage_dtype`` gives every non-FP16 layer). That value holds the
integer exactly: the next INT8 layer, which has the same scale for that tensor, recovers q bit
for bit when it quantizes its input, and a float consumer sees the dequantized value, i.e. the
explicit dequantize at an INT8 → float boundary.

QuantizeLinear/DequantizeLinear layers (``quantize``/``dequantize`` kinds) are ONNX's float ↔ int8
conversions with real int8 tensors; ``kernels.KERNELS`` runs them through these functions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from backends.table import Unsupported, check_complete, lookup
from engine.ir import int8_annotation as annotation
from engine.ir.dtypes import Precision
from engine.ir.errors import UnsupportedError
from engine.ir.int8_math import bias_params, dequantize, quantize, requant_params, round_half_away
from engine.ir.int8_rules import epilogue as int8_epilogue
from engine.ir.int8_rules import nonlinear_epilogue, quantize_nonlinear
from engine.ir.layers import LayerKind, PoolingType
from engine.ir.network import Layer

from .ops.conv import conv_nd, windows


def _sat(x: np.ndarray, bits: int) -> np.ndarray:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(x, lo, hi)


def rshift_round(x: np.ndarray, shift: np.ndarray | int) -> np.ndarray:
    """Arithmetic right shift rounding half away from zero, on int64."""
    x = np.asarray(x, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    half = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0)
    r = (np.abs(x) + half) >> s
    return np.where(x < 0, -r, r)


def convert(x: np.ndarray, scale: np.ndarray, shift: np.ndarray, bits: int) -> np.ndarray:
    """The SDP converter with offset 0: sat(round(x * scale >> shift)) on int64."""
    return _sat(rshift_round(np.asarray(x, dtype=np.int64) * scale, shift), bits)


# ------------------------------------------------------------------------------------------ Q / DQ


def _axis_scale(layer: Layer, x: np.ndarray) -> tuple[np.ndarray, int | None]:
    s = np.asarray(layer.weights["scale"], dtype=np.float32)
    return s, (layer.params.axis % x.ndim if s.size > 1 else None)


def run_quantize(layer: Layer, inputs: list[np.ndarray]) -> list[np.ndarray]:
    x = inputs[0]
    s, axis = _axis_scale(layer, x)
    return [quantize(x, s, axis)]


def run_dequantize(layer: Layer, inputs: list[np.ndarray]) -> list[np.ndarray]:
    q = inputs[0]
    s, axis = _axis_scale(layer, q)
    return [dequantize(q, s, axis)]


# ------------------------------------------------------------------------------------------ helpers


def _input_int8(x: np.ndarray, scale: float) -> np.ndarray:
    if x.dtype == np.int8:
        return x
    return quantize(x, np.float32(scale))


def _kernel_int8(layer: Layer, spec: annotation.Int8Spec) -> np.ndarray:
    w = layer.weights["kernel"]
    if w.dtype == np.int8:
        return w
    if spec.kernel_scales is None:
        raise UnsupportedError(f"layer {layer.describe()}: INT8 kernel without per-channel weight scales")
    return quantize(w, spec.kernel_scales, axis=0)


def _channel(a: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = a.size
    return np.asarray(a).reshape(shape)


def epilogue(acc: np.ndarray, layer: Layer, spec: annotation.Int8Spec, activation, channel_axis: int,
             residual: np.ndarray | None = None, residual_scale: float | None = None) -> np.ndarray:
    """int32 accumulator → bias, residual, activation, requant; returns the stored float32 value."""
    nd = acc.ndim
    s_acc = np.float64(spec.input_scales[0]) * spec.kernel_scales.astype(np.float64)  # (K,)
    v = _sat(np.asarray(acc, dtype=np.int64), 32)
    bias = layer.weights.get("bias")
    if bias is not None:
        b16, bshift = bias_params(round_half_away(np.asarray(bias, dtype=np.float64) / s_acc))
        v = _sat(v + _channel(np.left_shift(b16, bshift), nd, channel_axis), 32)
    if residual is not None:
        e = _input_int8(residual, residual_scale).astype(np.int64)
        sc, sh = requant_params(np.float64(residual_scale) / s_acc)
        v = _sat(v + convert(e, _channel(sc, nd, channel_axis), _channel(sh, nd, channel_axis), 32), 32)
    kind = nonlinear_epilogue(activation)
    if kind is not None:
        out = spec.output_scale
        y = quantize_nonlinear(kind, v, _channel(s_acc, nd, channel_axis), None if out is None else float(out))
        return y if out is None else dequantize(y.astype(np.int8), np.float32(out))
    try:
        relu, clip_hi = int8_epilogue(activation)
    except UnsupportedError as e:
        raise UnsupportedError(f"layer {layer.describe()}: {e}") from None
    if relu:
        v = np.maximum(v, 0)
    if spec.output_scale is None:
        y = (v.astype(np.float64) * _channel(s_acc, nd, channel_axis)).astype(np.float32)
        return np.minimum(y, np.float32(clip_hi)) if clip_hi is not None else y
    sc, sh = requant_params(s_acc / np.float64(spec.output_scale))
    q = convert(v, _channel(sc, nd, channel_axis), _channel(sh, nd, channel_axis), 8)
    if clip_hi is not None:
        q = np.minimum(q, int(round_half_away(clip_hi / spec.output_scale)))
    return dequantize(q.astype(np.int8), np.float32(spec.output_scale))


# ------------------------------------------------------------------------------------------ layers


def conv_accumulate(layer: Layer, xq: np.ndarray, wq: np.ndarray) -> np.ndarray:
    """Exact int8 x int8 convolution sums (float64 BLAS is exact below 2**53), saturated to int32."""
    p = layer.params
    acc = conv_nd(xq.astype(np.float64), wq.astype(np.float64), p.stride, p.pre_padding, p.post_padding,
                  p.dilation, p.groups)
    return _sat(np.rint(acc).astype(np.int64), 32)


def convolution(layer: Layer, inputs: list[np.ndarray]) -> list[np.ndarray]:
    spec = annotation.read(layer)
    p = layer.params
    if len(p.kernel) != 2:
        raise UnsupportedError(f"layer {layer.describe()}: INT8 convolution is 2-D only, got {len(p.kernel)}-D")
    xq = _input_int8(inputs[0], spec.input_scales[0])
    acc = conv_accumulate(layer, xq, _kernel_int8(layer, spec))
    res = inputs[1] if p.residual else None
    rs = spec.input_scales[1] if p.residual else None
    return [epilogue(acc, layer, spec, p.activation, 1, res, rs)]


def fully_connected(layer: Layer, inputs: list[np.ndarray]) -> list[np.ndarray]:
    spec = annotation.read(layer)
    xq = _input_int8(inputs[0], spec.input_scales[0])
    wq = _kernel_int8(layer, spec)
    acc = np.rint(xq.astype(np.float64) @ wq.astype(np.float64).T).astype(np.int64)
    return [epilogue(_sat(acc, 32), layer, spec, layer.params.activation, acc.ndim - 1)]


def recip(k: int) -> int:
    """The PDP's RECIP_KERNEL register: round(2**16 / k)."""
    return int(np.floor(65536 / k + 0.5))


def pooling(layer: Layer, inputs: list[np.ndarray]) -> list[np.ndarray]:
    spec = annotation.read(layer)
    x = inputs[0]
    if x.ndim != 4:
        raise UnsupportedError(f"layer {layer.describe()}: INT8 pooling is 2-D only")
    p = layer.params.resolved(x.shape[2:])
    if spec.output_scale is not None and np.float32(spec.output_scale) != np.float32(spec.input_scales[0]):
        raise UnsupportedError(f"layer {layer.describe()}: INT8 pooling needs equal input and output scales")
    if any(d != 1 for d in p.dilation) or p.ceil_mode:
        raise UnsupportedError(f"layer {layer.describe()}: INT8 pooling without dilation or ceil_mode only")
    q = _input_int8(x, spec.input_scales[0]).astype(np.int64)
    out = tuple((x.shape[2 + i] + p.pre_padding[i] + p.post_padding[i] - p.window[i]) // p.stride[i] + 1
                for i in range(2))
    pads = [(0, 0), (0, 0), *zip(p.pre_padding, p.post_padding)]
    if p.type is PoolingType.MAX:
        qp = np.pad(q, pads, constant_values=np.iinfo(np.int64).min)
        y = windows(qp, p.window, p.stride, (1, 1), out).max(axis=(-2, -1))
    elif p.type is PoolingType.AVERAGE:
        if any(p.pre_padding + p.post_padding) and not p.count_include_pad:
            raise UnsupportedError(f"layer {layer.describe()}: INT8 average pooling divides by the full window; "
                                   f"padding that is excluded from the count is not supported")
        s = windows(np.pad(q, pads), p.window, p.stride, (1, 1), out).sum(axis=(-2, -1))
        t = rshift_round(s * recip(p.window[1]), 16)
        y = _sat(rshift_round(t * recip(p.window[0]), 16), 8)
    else:
        raise UnsupportedError(f"layer {layer.describe()}: {p.type.value} pooling has no INT8 kernel")
    return [dequantize(y.astype(np.int8), np.float32(spec.input_scales[0]))]


Int8Kernel = Callable[[Layer, list[np.ndarray]], list[np.ndarray]]
_INT8_KINDS = {LayerKind.CONVOLUTION: convolution, LayerKind.FULLY_CONNECTED: fully_connected,
               LayerKind.POOLING: pooling, LayerKind.QUANTIZE: run_quantize, LayerKind.DEQUANTIZE: run_dequantize}
# The INT8 layer table (``backends.table``): Q/DQ layers in INT8 are their own conversions.
INT8_KERNELS: dict[LayerKind, Int8Kernel | Unsupported] = {
    k: _INT8_KINDS.get(k) or Unsupported(f"kind '{k.value}' has no INT8 kernel in the reference backend "
                                         f"(INT8 runs convolution, fully connected and pooling)")
    for k in LayerKind}
check_complete(INT8_KERNELS, "reference INT8")


def run_layer(layer: Layer, inputs: list[np.ndarray], precision: Precision) -> list[np.ndarray]:
    """INT8 layers by exact integer emulation."""
    return lookup(INT8_KERNELS, layer, "reference INT8")(layer, [np.asarray(x) for x in inputs])
