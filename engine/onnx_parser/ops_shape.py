"""Build-time values: Constant, ConstantOfShape, Shape, Size, and Range/Where over constants.

All shapes are static, so these ops always (or, for Range/Where, only) produce known values;
they never add layers themselves. A known value that a layer reads becomes a Constant layer then.
"""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from engine.onnx_parser.context import Ref
from engine.onnx_parser.registry import converter


@converter("Constant")
def constant(nc):
    a = nc.attrs
    if "value" in a:
        return [Ref(const=numpy_helper.to_array(a["value"]))]
    if "value_float" in a:
        return [Ref(const=np.array(a["value_float"], np.float32))]
    if "value_floats" in a:
        return [Ref(const=np.array(list(a["value_floats"]), np.float32))]
    if "value_int" in a:
        return [Ref(const=np.array(a["value_int"], np.int64))]
    if "value_ints" in a:
        return [Ref(const=np.array(list(a["value_ints"]), np.int64))]
    which = next(iter(a), "none")
    raise nc.unsupported(f"Constant with attribute '{which}' is not supported (hetrt: numeric tensors)")


@converter("ConstantOfShape")
def constant_of_shape(nc):
    shape = [int(d) for d in np.asarray(nc.const(0, "shape")).reshape(-1)]
    if any(d < 0 for d in shape):
        raise nc.error(f"shape {shape} has a negative dim")
    value = nc.attr("value")
    fill = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    if fill.size != 1:
        raise nc.error(f"value must hold one element, got {fill.size}")
    return [Ref(const=np.full(shape, fill[0], dtype=fill.dtype))]


@converter("Shape")
def shape(nc):
    dims = list(nc.shape(0))
    rank = len(dims)
    start = int(nc.attr("start", 0))
    end = nc.attr("end")
    end = rank if end is None else int(end)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return [Ref(const=np.array(dims[start:end], dtype=np.int64))]


@converter("Size")
def size(nc):
    return [Ref(const=np.array(int(np.prod(nc.shape(0), dtype=np.int64)), dtype=np.int64))]


def _scalar(nc, i: int, what: str) -> np.ndarray:
    v = np.asarray(nc.const(i, what))
    if v.size != 1:
        raise nc.error(f"{what} must be a scalar, got shape {v.shape}")
    return v.reshape(())


@converter("Range")
def range_(nc):
    start, limit, delta = _scalar(nc, 0, "start"), _scalar(nc, 1, "limit"), _scalar(nc, 2, "delta")
    if delta == 0:
        raise nc.error("delta is 0")
    count = max(int(np.ceil((limit - start) / delta)), 0)
    return [Ref(const=(start + np.arange(count) * delta).astype(start.dtype))]


@converter("Where")
def where(nc):
    cond = nc.const(0, "condition")
    a = nc.const(1, "X")
    b = nc.const(2, "Y")
    return [Ref(const=np.where(cond, a, b))]
