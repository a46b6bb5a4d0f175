"""Data movement kernels: Concatenation, Shuffle, Slice, Split, Padding, Constant, Gather, Cast, Identity."""

from __future__ import annotations

import numpy as np

from engine.ir.dtypes import DataType
from engine.ir.errors import UnsupportedError
from engine.ir.layers import PaddingMode


def concatenation(layer, inputs, weights):
    # ``in_place`` is a memory-planning hint; the values are those of a plain concatenation.
    return [np.concatenate(inputs, axis=layer.params.axis)]


def shuffle(layer, inputs, weights):
    p = layer.params
    y = inputs[0]
    if p.first_perm is not None:
        y = np.transpose(y, p.first_perm)
    if p.reshape is not None:
        y = np.reshape(y, p.reshape)
    if p.second_perm is not None:
        y = np.transpose(y, p.second_perm)
    return [np.ascontiguousarray(y).reshape(y.shape)]  # ascontiguousarray makes a 0-d array 1-d


def _axis_slice(start: int, size: int, step: int) -> slice:
    if size == 0:
        return slice(0, 0)
    stop = start + size * step
    return slice(start, stop if stop >= 0 else None, step)


def slice_(layer, inputs, weights):
    p = layer.params
    idx = tuple(_axis_slice(a, n, s) for a, n, s in zip(p.start, p.size, p.step))
    return [np.ascontiguousarray(inputs[0][idx])]


def split(layer, inputs, weights):
    p = layer.params
    cuts = np.cumsum(p.sizes)[:-1]
    return [np.ascontiguousarray(part) for part in np.split(inputs[0], cuts, axis=p.axis)]


_NP_MODE = {PaddingMode.REFLECT: "reflect", PaddingMode.EDGE: "edge", PaddingMode.WRAP: "wrap"}


def padding(layer, inputs, weights):
    """Negative pads crop first; the remaining (positive) pads are then applied to the cropped tensor."""
    p = layer.params
    x = inputs[0]
    crop = tuple(slice(max(0, -a), d - max(0, -b)) for a, b, d in zip(p.pre, p.post, x.shape))
    x = x[crop]
    pads = [(max(0, a), max(0, b)) for a, b in zip(p.pre, p.post)]
    mode = PaddingMode(p.mode)
    if mode is PaddingMode.CONSTANT:
        value = np.array(p.value).astype(x.dtype)
        return [np.pad(x, pads, constant_values=value)]
    for (a, b), d in zip(pads, x.shape):
        if (a or b) and d == 0:
            raise UnsupportedError(f"{layer.describe()}: {mode.value} padding of an empty axis")
        if mode is PaddingMode.REFLECT and max(a, b) >= d:
            raise UnsupportedError(f"{layer.describe()}: reflect pads {a}/{b} need an axis longer than {d}")
    return [np.pad(x, pads, mode=_NP_MODE[mode])]


def constant(layer, inputs, weights):
    return [np.array(weights["value"], copy=True)]


def gather(layer, inputs, weights):
    idx = weights["indices"].astype(np.int64, copy=False)
    return [np.take(inputs[0], idx, axis=layer.params.axis)]


def cast_array(x: np.ndarray, to: DataType) -> np.ndarray:
    """ONNX Cast: float -> int truncates toward zero; out-of-range values (undefined in ONNX) saturate, NaN -> 0."""
    target = DataType(to).numpy
    if x.dtype.kind == "f" and target.kind in "iu":
        info = np.iinfo(target)
        with np.errstate(invalid="ignore"):
            t = np.trunc(x.astype(np.float64))
            t = np.nan_to_num(t, nan=0.0, posinf=float(info.max), neginf=float(info.min))
            t = np.clip(t, float(info.min), float(info.max))
        # float64 cannot hold every int64: clip through the exact boundary handling below.
        out = t.astype(target)
        if target == np.int64:
            out[t >= 2.0**63] = info.max
        return out
    if target == np.bool_:
        return x != 0
    with np.errstate(over="ignore"):
        return x.astype(target)


def cast(layer, inputs, weights):
    return [cast_array(inputs[0], layer.params.to)]


def identity(layer, inputs, weights):
    return [inputs[0]]
