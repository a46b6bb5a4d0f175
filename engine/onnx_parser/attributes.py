"""Attribute ranges per ONNX op, checked before a node is converted.

``onnx.checker`` checks attribute types, not values: ``transB = -2**40`` is a valid INT, and a
converter that reads it with ``bool()`` would silently transpose. Flags must be 0 or 1, sizes and
strides positive, pads and dilations in range; a value outside is a ParserError naming the node and
attribute, as ONNX Runtime would refuse the model.
"""

from __future__ import annotations

import math
from typing import Any

import onnx

from engine.ir.errors import ParserError

INT_LIMIT = 2**31  # |value| of any integer attribute hetrt converts

FLAGS: dict[str, tuple[str, ...]] = {
    "Gemm": ("transA", "transB"),
    "MaxPool": ("ceil_mode",),
    "AveragePool": ("ceil_mode", "count_include_pad"),
    "LpPool": ("ceil_mode",),
    "ReduceMean": ("keepdims", "noop_with_empty_axes"),
    "ReduceSum": ("keepdims", "noop_with_empty_axes"),
    "ReduceMax": ("keepdims", "noop_with_empty_axes"),
    "ReduceMin": ("keepdims", "noop_with_empty_axes"),
    "ReduceProd": ("keepdims", "noop_with_empty_axes"),
    "ReduceL1": ("keepdims", "noop_with_empty_axes"),
    "ReduceL2": ("keepdims", "noop_with_empty_axes"),
    "ReduceLogSumExp": ("keepdims", "noop_with_empty_axes"),
    "ReduceSumSquare": ("keepdims", "noop_with_empty_axes"),
    "ArgMax": ("keepdims", "select_last_index"),
    "ArgMin": ("keepdims", "select_last_index"),
    "Reshape": ("allowzero",),
    "Resize": ("exclude_outside",),
    "CumSum": ("exclusive", "reverse"),
    "TopK": ("largest", "sorted"),
}
POSITIVE = ("kernel_shape", "strides", "dilations", "group", "size", "blocksize")
NON_NEGATIVE = ("pads", "output_padding")


def _fail(where: str, key: str, value: Any, rule: str) -> ParserError:
    return ParserError(f"{where}: attribute '{key}' = {value!r} {rule}")


def check_attributes(node: onnx.NodeProto, where: str) -> None:
    flags = FLAGS.get(node.op_type, ())
    for a in node.attribute:
        if a.type == onnx.AttributeProto.INT:
            values = [a.i]
        elif a.type == onnx.AttributeProto.INTS:
            values = list(a.ints)
        elif a.type in (onnx.AttributeProto.STRING, onnx.AttributeProto.STRINGS):
            for raw in [a.s] if a.type == onnx.AttributeProto.STRING else list(a.strings):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise _fail(where, a.name, raw[:20], "is not UTF-8 text") from None
            continue
        elif a.type == onnx.AttributeProto.FLOAT:
            if not math.isfinite(a.f) and a.name != "value_float":
                raise _fail(where, a.name, a.f, "must be finite")
            continue
        else:
            continue
        for v in values:
            if not -INT_LIMIT < v < INT_LIMIT:
                raise _fail(where, a.name, v, "is out of range (|value| < 2^31)")
        if a.name in flags and (a.type != onnx.AttributeProto.INT or a.i not in (0, 1)):
            raise _fail(where, a.name, a.i if a.type == onnx.AttributeProto.INT else values, "must be 0 or 1")
        if a.name in POSITIVE and any(v < 1 for v in values):
            raise _fail(where, a.name, values if len(values) > 1 else values[0], "must be positive")
        if a.name in NON_NEGATIVE and any(v < 0 for v in values) and node.op_type != "Pad":
            raise _fail(where, a.name, values, "must be >= 0")
