"""A normalization whose only reader adds a residual to it: one launch, the add in the norm's store.

Why: post-norm blocks (Swin V2: x + LayerNorm(attention(x)), then x + LayerNorm(MLP(x))) lowered
as they come write the normalized tensor and read it back in an element-wise add. The norm's
kernel already holds each normalized value when it stores it; adding the residual there saves
a launch and one write and one read of the block's activations.

The fused store rounds the normalized value to the norm's output type first (fp16 for an FP16
layer), so the sum is the one the separate add computes, bit for bit. Matching is apart from
lowering (``find_norm_residuals``, before the concatenations read in place claim their readers);
``reduce.lower_normalization`` asks for the match.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backends.gpu.lowering.slots import FLOAT, prec
from engine.ir.layers import ElementWiseOp, LayerKind
from engine.ir.network import Layer

if TYPE_CHECKING:
    from backends.gpu.lowering.lowerer import Lowerer


def find_norm_residuals(lw: Lowerer, absorbed: set[str]) -> dict[str, tuple[Layer, str]]:
    """{normalization name: (the add, the residual tensor)} where the norm's output is read only
    by a two-input sum of its own shape and type in this segment, the residual another tensor
    of that shape, nothing of it INT8 or claimed by another fusion."""
    from backends.gpu.lower_int8 import is_int8

    segment = {la.name for la in lw.layers}
    producers = lw.net.producers()
    found: dict[str, tuple[Layer, str]] = {}
    for la in lw.layers:
        if la.kind is not LayerKind.NORMALIZATION or la.name in absorbed or is_int8(la):
            continue
        y = la.outputs[0]
        add = lw.sole_reader(y)
        if (add is None or add.kind is not LayerKind.ELEMENTWISE or add.params.op is not ElementWiseOp.SUM
                or add.name not in segment or add.name in absorbed or is_int8(add) or len(add.inputs) != 2
                or prec(add) is not prec(la)):
            continue
        res = add.inputs[1] if add.inputs[0] == y else add.inputs[0]
        shape = lw.net.tensors[y].shape
        if (res == y or lw.net.tensors[res].shape != shape or lw.net.tensors[add.outputs[0]].shape != shape
                or lw.dtypes.get(y) not in FLOAT or lw.dtypes.get(add.outputs[0]) != lw.dtypes[y]
                or lw.dtypes.get(res) not in FLOAT or (res in producers and is_int8(producers[res]))):
            continue
        found[la.name] = (add, res)
    return found
