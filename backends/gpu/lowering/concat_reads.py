"""Concatenations read in place by their one element-wise reader (no launch, no tensor of their own).

Why: DenseNet-style blocks concatenate every earlier feature map and then normalize the result
(batch norm + ReLU, one pointwise chain) before a 1x1 convolution. Lowered as they come, the
concatenation copies all of its inputs into a new tensor and the chain reads that copy and writes
another: the block's largest tensor crosses memory four times. When the concatenation's only reader
is an element-wise layer of the same shape, that layer's map kernel reads each element straight
from the input it came from (a select on the concatenation axis): two crossings instead of four,
and one launch fewer.

Matching is apart from lowering (``find_concat_reads``, after the other fusions claimed their
layers); the element-wise lowering asks ``concat_operand`` for the operands and the select
expression that stand for the concatenation.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from backends.gpu.kernels import gen
from backends.gpu.lowering.slots import FLOAT
from engine.ir.layers import LayerKind
from engine.ir.network import Layer

if TYPE_CHECKING:
    from backends.gpu.lowering.lowerer import Lowerer

# readers lowered through ``pointwise._pointwise`` (one map kernel, operands loaded as X0, X1, ...)
ELEMENTWISE_READERS = (LayerKind.ACTIVATION, LayerKind.PARAMETRIC_RELU, LayerKind.UNARY, LayerKind.ELEMENTWISE,
                       LayerKind.SCALE, LayerKind.POINTWISE)


def find_concat_reads(lw: Lowerer, absorbed: set[str]) -> dict[str, Layer]:
    """{concatenation output: the concatenation} for each one whose only reader is an FP16/FP32
    element-wise layer of this segment with the same output shape, none of it INT8 and none of
    its layers claimed by another fusion (``absorbed``) or a squeeze-excitation scale."""
    from backends.gpu.lower_int8 import is_int8

    segment = {la.name for la in lw.layers}
    producers = lw.net.producers()
    found: dict[str, Layer] = {}
    for la in lw.layers:
        if la.kind is not LayerKind.CONCATENATION or la.name in absorbed or is_int8(la):
            continue
        y = la.outputs[0]
        reader = lw.sole_reader(y)
        if (reader is None or reader.kind not in ELEMENTWISE_READERS or reader.name not in segment
                or reader.name in absorbed or is_int8(reader) or reader.outputs[0] in lw.se_scales
                or any(t in producers and is_int8(producers[t]) for t in reader.inputs)):
            continue  # (an element-wise layer beside an INT8 result may be an int8 bridge, which reads slots)
        shape = lw.net.tensors[y].shape
        if lw.net.tensors[reader.outputs[0]].shape != shape or len(la.inputs) < 2:
            continue
        if lw.dtypes.get(y) not in FLOAT or any(lw.dtypes.get(t) != lw.dtypes[y] for t in la.inputs):
            continue  # a copy that converts (fp32 inputs into an fp16 concatenation) rounds on the way
        found[y] = la
    return found


def concat_layout(lw: Lowerer, concat: Layer) -> str:
    """The layout the concatenation's copy would have had (``movement.lower_concatenation``)."""
    ins = [lw.slots[t] for t in concat.inputs]
    return "nhwc" if all(s.layout == "nhwc" for s in ins) and concat.params.axis % len(ins[0].shape) == 1 else "linear"


def concat_operand(lw: Lowerer, concat: Layer, out_shape: tuple[int, ...], fp16: bool,
                   first_index: int, next_index: int) -> tuple[list[tuple[str, gen.Operand]], str]:
    """The operands standing for the concatenation in a map kernel over ``out_shape`` (its own
    shape), the first to be loaded as X{first_index} and the others as X{next_index}, ..., and the
    C expression that selects the element of output coordinate l: each input's operand is based at
    minus its offset along the axis, so that its default offset at l is its own element's."""
    from backends.gpu.lowering.movement import input_view

    ax = concat.params.axis % len(out_shape)
    operands, at, picks = [], 0, []
    for i, t in enumerate(concat.inputs):  # through its view: a slice reads its root
        v = input_view(lw, t)
        root = lw.slots[v.root]
        strides = gen.broadcast_strides(v.shape, v.strides, out_shape)
        op = gen.Operand(root.operand(None, fp16).dtype, strides, v.base - at * strides[ax])
        operands.append((root.name, op))
        index = first_index if i == 0 else next_index + i - 1
        at += v.shape[ax]
        picks.append((at, f"X{index}"))
    expr = picks[-1][1]
    for end, x in reversed(picks[:-1]):
        expr = f"(l{ax} < {end} ? {x} : {expr})"
    return operands, expr


def substitute(body: str, index: int, expr: str) -> str:
    """``body`` with every load of operand ``index`` (the token X{index}) replaced by ``expr``."""
    return re.sub(rf"\bX{index}\b", lambda _: expr, body)
