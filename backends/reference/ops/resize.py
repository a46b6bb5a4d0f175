"""Resize: nearest (with ONNX nearest_mode) and N-linear, with the ONNX coordinate transformations.

The coordinate maths (exact source coordinates, nearest rounding, linear taps) is
``engine.ir.resize_coords``, shared with the GPU lowering; this kernel gathers and blends.
"""

from __future__ import annotations

import numpy as np

from engine.ir.errors import UnsupportedError
from engine.ir.layers import ResizeMode
from engine.ir.resize_coords import axis_scales, is_identity, linear_taps, nearest_indices, source_coordinates


def resize(layer, inputs, weights):
    p = layer.params
    x = inputs[0]
    if x.dtype.kind != "f":
        raise UnsupportedError(f"{layer.describe()}: resize of {x.dtype} tensors is not supported")
    scales = axis_scales(p.scales, p.output_shape, x.shape)
    if any(s <= 0 for s in scales):
        raise UnsupportedError(f"{layer.describe()}: resize scales {scales} must be positive")
    mode = ResizeMode(p.mode)
    y = x
    for ax, (out_len, in_len, s) in enumerate(zip(p.output_shape, x.shape, scales)):
        if is_identity(out_len, in_len, s):
            continue  # identity mapping under every coordinate transformation
        c = source_coordinates(out_len, in_len, s, p.coordinate_transformation)
        if mode is ResizeMode.NEAREST:
            y = np.take(y, nearest_indices(c, p.nearest_mode, in_len), axis=ax)
            continue
        lo, hi, frac = linear_taps(c, in_len)
        shape = [1] * x.ndim
        shape[ax] = out_len
        frac = frac.astype(x.dtype).reshape(shape)
        a = np.take(y, lo, axis=ax)
        b = np.take(y, hi, axis=ax)
        y = a + (b - a) * frac
    return [np.ascontiguousarray(y, dtype=x.dtype)]
