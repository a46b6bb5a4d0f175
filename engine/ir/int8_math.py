"""Scales and the integer arithmetic they imply: one convention for every INT8 backend.

* Symmetric quantization, zero point 0. Activations: one scale per tensor, ``amax / 127``.
  Weights: one scale per output channel, ``max|w_k| / 127`` (TensorRT's per-channel rule).
* Float → int8 (:func:`quantize`): ``saturate(round_half_even(x / scale))`` computed in float32,
  exactly as ONNX QuantizeLinear and TensorRT's IQuantizeLayer do. int8 → float
  (:func:`dequantize`): ``q * scale`` in float32.
* Integer requantization follows the DLA's SDP output converter
  ``y = sat(round((x - offset) * scale >> shift))`` (``dla_sim.formats.convert_int``): the real
  multiplier ``M = s_in * s_w[k] / s_out`` becomes an int16 ``scale`` and a ``shift`` in 0..63
  (:func:`requant_params`): ``shift = 14 - floor(log2 M)`` puts ``M * 2**shift`` in
  [2**14, 2**15), the most precision an int16 holds, and the rounding is half away from zero, the
  hardware's rule. The relative error of the multiplier is at most 2**-15.
* Biases are integers in the accumulator's unit ``s_in * s_w[k]`` and reach the SDP as an int16
  operand shifted left by one per-layer ``bias_shift`` (:func:`bias_params`): the smallest shift
  at which every channel's bias fits int16 (the SDP X1 ALU's operand width).
"""

from __future__ import annotations

import numpy as np

from engine.ir.errors import UnsupportedError

INT8_MIN, INT8_MAX = -128, 127
INT16_MAX = 32767
MAX_SHIFT = 63


def round_half_away(x: np.ndarray) -> np.ndarray:
    """Round to nearest, ties away from zero (the DLA's AC_RND_INF), as int64."""
    x = np.asarray(x, dtype=np.float64)
    return (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.int64)


def activation_scale(amax: float) -> np.float32:
    """Per-tensor scale for a symmetric range [-amax, amax]; a range of 0 (a tensor that is always
    zero) takes the scale of amax = 1, any scale represents zero exactly."""
    amax = float(amax)
    if not np.isfinite(amax) or amax < 0:
        raise ValueError(f"activation range must be finite and >= 0, got {amax}")
    return np.float32((amax if amax > 0 else 1.0) / INT8_MAX)


def weight_scales(w: np.ndarray, axis: int = 0) -> np.ndarray:
    """Per-channel symmetric scales ``max|w_k| / 127`` along ``axis`` (float32).

    An all-zero channel takes the largest scale of the layer, so that requantization multipliers
    stay in range; its weights quantize to 0 either way.
    """
    w = np.asarray(w, dtype=np.float64)
    red = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    amax = np.max(np.abs(w), axis=red) if red else np.abs(w)
    fill = amax.max() if amax.size and amax.max() > 0 else 1.0
    amax = np.where(amax > 0, amax, fill)
    return (amax / INT8_MAX).astype(np.float32)


def _broadcast(scale: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    s = np.asarray(scale, dtype=np.float32)
    if s.size == 1 or axis is None:
        return s.reshape(()) if s.size == 1 else s
    shape = [1] * ndim
    shape[axis % ndim] = s.size
    return s.reshape(shape)


def quantize(x: np.ndarray, scale: np.ndarray | float, axis: int | None = None) -> np.ndarray:
    """``saturate_int8(round_half_even(x / scale))`` in float32 (ONNX QuantizeLinear)."""
    x = np.asarray(x, dtype=np.float32)
    s = _broadcast(np.asarray(scale), x.ndim, axis)
    with np.errstate(invalid="ignore", over="ignore"):
        q = np.rint(x / s)
    return np.clip(np.nan_to_num(q, nan=0.0), INT8_MIN, INT8_MAX).astype(np.int8)


def dequantize(q: np.ndarray, scale: np.ndarray | float, axis: int | None = None) -> np.ndarray:
    """``q * scale`` in float32 (ONNX DequantizeLinear)."""
    q = np.asarray(q)
    s = _broadcast(np.asarray(scale), q.ndim, axis)
    return (q.astype(np.float32) * s).astype(np.float32)


def requant_params(multiplier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real multipliers → (int16 scale, shift) with ``scale * 2**-shift ≈ M`` (see module doc).

    Raises UnsupportedError when a multiplier needs a left shift (M ≥ 2**15 - 0.5): the
    converter's shift field is unsigned.
    """
    m = np.atleast_1d(np.asarray(multiplier, dtype=np.float64))
    if not np.all(np.isfinite(m)) or np.any(m <= 0):
        raise ValueError(f"requantization multipliers must be finite and > 0, got {m}")
    shift = 14 - np.floor(np.log2(m)).astype(np.int64)
    scale = round_half_away(np.ldexp(m, shift))
    over = scale > INT16_MAX
    shift = np.where(over, shift - 1, shift)
    scale = np.where(over, round_half_away(np.ldexp(m, shift)), scale)
    if np.any(shift < 0):
        worst = float(m.max())
        raise UnsupportedError(f"requantization multiplier {worst:.6g} is >= 2**15: the converter's int16 "
                               f"scale and unsigned shift cannot represent it")
    deep = shift > MAX_SHIFT
    if np.any(deep):
        shift = np.where(deep, MAX_SHIFT, shift)
        scale = scale.copy()
        scale[deep] = round_half_away(np.ldexp(m[deep], MAX_SHIFT))  # only there: elsewhere it overflows
    return scale.astype(np.int64), shift.astype(np.int64)


def bias_params(bias_q: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer bias → (int16 operand, per-layer left shift) as the SDP X1 ALU takes it."""
    b = np.asarray(bias_q, dtype=np.int64)
    shift = 0
    while b.size and np.max(np.abs(round_half_away(np.ldexp(b.astype(np.float64), -shift)))) > INT16_MAX:
        shift += 1
    return round_half_away(np.ldexp(b.astype(np.float64), -shift)), shift


def sqnr_db(reference: np.ndarray, value: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio 10·log10(Σref² / Σ(ref − value)²) in dB (inf when equal)."""
    r = np.asarray(reference, dtype=np.float64)
    e = np.asarray(value, dtype=np.float64) - r
    noise = float(np.sum(e * e))
    signal = float(np.sum(r * r))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * np.log10(signal / noise)
