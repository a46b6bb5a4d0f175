"""Resize: nearest (with ONNX nearest_mode) and N-linear, with the ONNX coordinate transformations.

Source coordinates are computed exactly, in rational arithmetic, so that the rounding of nearest
mode follows the ONNX formulas rather than the float error of one implementation (16 -> 7 at
asymmetric puts output 8 exactly on 3.5). When the layer carries ``scales`` they drive the
mapping, taken exactly as the IR holds them (the parser stores the model's float32 values);
otherwise the scale of an axis is output_len / input_len.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from engine.ir.errors import UnsupportedError
from engine.ir.layers import ResizeMode

HALF = Fraction(1, 2)


def source_coordinates(out_len: int, in_len: int, scale: Fraction, mode: str) -> list[Fraction]:
    """x_original for every output index along one axis, exactly."""
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


_ROUND = {
    "round_prefer_floor": lambda c: math.ceil(c - HALF),
    "round_prefer_ceil": lambda c: math.floor(c + HALF),
    "floor": math.floor,
    "ceil": math.ceil,
}


def _nearest_index(coords: list[Fraction], mode: str, in_len: int) -> np.ndarray:
    if mode not in _ROUND:
        raise UnsupportedError(f"resize nearest_mode '{mode}' is not implemented")
    idx = np.array([_ROUND[mode](c) for c in coords], dtype=np.int64)
    return np.clip(idx, 0, in_len - 1)


def _scales(p, shape) -> list[Fraction]:
    if p.scales is not None:
        return [Fraction(float(s)) for s in p.scales]
    return [Fraction(o, i) for o, i in zip(p.output_shape, shape)]


def resize(layer, inputs, weights):
    p = layer.params
    x = inputs[0]
    if x.dtype.kind != "f":
        raise UnsupportedError(f"{layer.describe()}: resize of {x.dtype} tensors is not supported")
    scales = _scales(p, x.shape)
    if any(s <= 0 for s in scales):
        raise UnsupportedError(f"{layer.describe()}: resize scales {scales} must be positive")
    mode = ResizeMode(p.mode)
    y = x
    for ax, (out_len, in_len, s) in enumerate(zip(p.output_shape, x.shape, scales)):
        if out_len == in_len and s == 1:
            continue  # identity mapping under every coordinate transformation
        c = source_coordinates(out_len, in_len, s, p.coordinate_transformation)
        if mode is ResizeMode.NEAREST:
            y = np.take(y, _nearest_index(c, p.nearest_mode, in_len), axis=ax)
            continue
        c = np.clip(np.array([float(v) for v in c]), 0.0, in_len - 1.0)
        lo = np.floor(c).astype(np.int64)
        hi = np.minimum(lo + 1, in_len - 1)
        frac = (c - lo).astype(x.dtype)
        shape = [1] * x.ndim
        shape[ax] = out_len
        frac = frac.reshape(shape)
        a = np.take(y, lo, axis=ax)
        b = np.take(y, hi, axis=ax)
        y = a + (b - a) * frac
    return [np.ascontiguousarray(y, dtype=x.dtype)]
