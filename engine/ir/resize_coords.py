"""Resize coordinate maths (ONNX Resize): where each output index samples the input, per axis.

One definition for every backend: the reference resize kernel computes with it and the GPU
lowering builds its per-axis index and weight tables from it. Source coordinates are computed
exactly, in rational arithmetic, so that the rounding of nearest mode follows the ONNX formulas
rather than the float error of one implementation (16 -> 7 at asymmetric puts output 8 exactly on
3.5). When the layer carries ``scales`` they drive the mapping, taken exactly as the IR holds
them (the parser stores the model's float32 values); otherwise the scale of an axis is
output_len / input_len.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction

import numpy as np

from engine.ir.errors import UnsupportedError

HALF = Fraction(1, 2)


def axis_scales(scales: Sequence[float] | None, output_shape: Sequence[int], input_shape: Sequence[int]
                ) -> list[Fraction]:
    """The scale of every axis: the layer's ``scales`` exactly, else output_len / input_len."""
    if scales is not None:
        return [Fraction(float(s)) for s in scales]
    return [Fraction(o, i) for o, i in zip(output_shape, input_shape)]


def is_identity(out_len: int, in_len: int, scale: Fraction) -> bool:
    """An axis every coordinate transformation maps onto itself (same length, scale 1)."""
    return out_len == in_len and scale == 1


def source_coordinates(out_len: int, in_len: int, scale: Fraction, mode: str) -> list[Fraction]:
    """x_original for every output index along one axis, exactly (ONNX coordinate_transformation_mode)."""
    xs = [Fraction(i) for i in range(out_len)]
    if mode == "half_pixel":
        return [(x + HALF) / scale - HALF for x in xs]
    if mode == "pytorch_half_pixel":
        return [(x + HALF) / scale - HALF if out_len > 1 else Fraction(0) for x in xs]
    if mode == "align_corners":
        # ONNX divides by the unrounded resized length in_len * scale (== out_len for sizes)
        resized = in_len * scale
        return [x * (in_len - 1) / (resized - 1) if out_len > 1 and resized != 1 else Fraction(0) for x in xs]
    if mode == "asymmetric":
        return [x / scale for x in xs]
    if mode == "half_pixel_symmetric":
        adjustment = Fraction(out_len) / (scale * in_len)
        offset = Fraction(in_len, 2) * (1 - adjustment)
        return [offset + (x + HALF) / scale - HALF for x in xs]
    raise UnsupportedError(f"resize coordinate transformation '{mode}' is not implemented")


ROUNDING: dict[str, Callable[[Fraction], int]] = {
    "round_prefer_floor": lambda c: math.ceil(c - HALF),
    "round_prefer_ceil": lambda c: math.floor(c + HALF),
    "floor": math.floor,
    "ceil": math.ceil,
}


def nearest_indices(coords: Sequence[Fraction], mode: str, in_len: int) -> np.ndarray:
    """The input index nearest mode reads for each source coordinate (ONNX nearest_mode), clamped."""
    if mode not in ROUNDING:
        raise UnsupportedError(f"resize nearest_mode '{mode}' is not implemented")
    idx = np.array([ROUNDING[mode](c) for c in coords], dtype=np.int64)
    return np.clip(idx, 0, in_len - 1)


def linear_taps(coords: Sequence[Fraction], in_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear mode's two input indices and the weight of the upper one, per source coordinate.

    Coordinates clamp to [0, in_len - 1] (ONNX's edge behaviour); the result is
    ``x[lo] + (x[hi] - x[lo]) * frac``. ``frac`` is float64: callers round it to their compute type.
    """
    c = np.clip(np.array([float(v) for v in coords], dtype=np.float64), 0.0, in_len - 1.0)
    lo = np.floor(c).astype(np.int64)
    hi = np.minimum(lo + 1, in_len - 1)
    return lo, hi, c - lo


__all__ = ["ROUNDING", "axis_scales", "is_identity", "linear_taps", "nearest_indices", "source_coordinates"]
