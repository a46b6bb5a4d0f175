"""Concatenations read in place by their one element-wise reader (no launch, no tensor of their own).

Why: DenseNet-style blocks concatenate every earlier feature map and then normalize the result
(batch norm + ReLU, one pointwise chain) before a 1x1 convolution. Lowered as they come, the
concatenation copies all of its inputs into a new tensor and the chain reads that copy and writes
another: the block's largest tensor crosses memory four times. When the concatenation's only reader
is an element-wise layer of the same shape, that layer's map kernel reads each element straight
from the input it came from (a select on the concatenation axis): two crossings instead of four,
and one launch fewer.

A shuffle that is the concatenation's only reader (ShuffleNetV2's channel shuffle: reshape to
(N, 2, C, H, W), swap the two channel dims) copies straight from the inputs in the same way when
each of its output dims walks a single dim of the concatenation (``views.root_digits``): the
select then tests the concatenated coordinate that the shuffle's output coordinates add up to.

Matching is apart from lowering (``find_concat_reads``, after the other fusions claimed their
layers); the element-wise lowering asks ``movement.concat_select`` (the concatenation's own copy
uses it too) for the operands and the select expression that stand for the concatenation.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

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
    element-wise layer of this segment with the same output shape, or a shuffle that walks it
    dim by dim, none of it INT8 and none of its layers claimed by another fusion (``absorbed``)
    or a squeeze-excitation scale."""
    from backends.gpu.lower_int8 import is_int8
    from backends.gpu.lowering.movement import shuffle_digits

    segment = {la.name for la in lw.layers}
    producers = lw.net.producers()
    found: dict[str, Layer] = {}
    for la in lw.layers:
        if la.kind is not LayerKind.CONCATENATION or la.name in absorbed or is_int8(la):
            continue
        y = la.outputs[0]
        reader = lw.sole_reader(y)
        if (reader is None or reader.name not in segment or reader.name in absorbed or is_int8(reader)
                or reader.outputs[0] in lw.se_scales
                or any(t in producers and is_int8(producers[t]) for t in reader.inputs)):
            continue  # (an element-wise layer beside an INT8 result may be an int8 bridge, which reads slots)
        shape = lw.net.tensors[y].shape
        if reader.kind is LayerKind.SHUFFLE:
            if shuffle_digits(reader, shape) is None or lw.dtypes.get(reader.outputs[0]) != lw.dtypes.get(y):
                continue
        elif reader.kind not in ELEMENTWISE_READERS or lw.net.tensors[reader.outputs[0]].shape != shape:
            continue
        if (len(la.inputs) < 2 or lw.dtypes.get(y) not in FLOAT
                or any(lw.dtypes.get(t) != lw.dtypes[y] for t in la.inputs)):
            continue  # a copy that converts (fp32 inputs into an fp16 concatenation) rounds on the way
        found[y] = la
    return found


def substitute(body: str, index: int, expr: str) -> str:
    """``body`` with every load of operand ``index`` (the token X{index}) replaced by ``expr``."""
    return re.sub(rf"\bX{index}\b", lambda _: expr, body)
