"""Residual adds folded into the fully connected layer before them (the GPU lowering's form of
TensorRT's eltwise-sum fusion, for FC layers).

``y = FC(x) + r``, where the FC runs on the tensor cores (the 1x1-convolution kernels, whose
epilogue adds a residual: ``act(x·Wᵀ + b + r)``) without an activation of its own, writes ``y``
directly: one pass over the activation instead of a write, a read and a second write. Transformer
blocks end both their attention and their MLP that way. ``r`` must already be computed when the
FC runs (it comes earlier in the segment's order) and have the output's shape; the FC's own
output must be read by the add alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backends.gpu.lowering.conv import tensor_core_fc
from backends.gpu.lowering.slots import prec
from engine.ir.dtypes import Precision
from engine.ir.layers import ElementWiseOp, LayerKind
from engine.ir.network import Layer

if TYPE_CHECKING:
    from backends.gpu.lowering.lowerer import Lowerer


def find_fc_residuals(lw: Lowerer) -> dict[str, tuple[Layer, str]]:
    """{FC layer name: (the add, the residual tensor)} for the adds the FCs absorb."""
    order = {la.name: i for i, la in enumerate(lw.layers)}
    producers = lw.net.producers()
    found: dict[str, tuple[Layer, str]] = {}
    for add in lw.layers:
        if (add.kind is not LayerKind.ELEMENTWISE or add.params.op is not ElementWiseOp.SUM
                or prec(add) is not Precision.FP16 or add.inputs[0] == add.inputs[1]):
            continue
        shape = lw.net.tensors[add.outputs[0]].shape
        for y, r in (add.inputs, add.inputs[::-1]):
            fc = producers.get(y)
            if (fc is None or fc.name not in order or fc.name in found or not tensor_core_fc(fc)
                    or fc.params.activation is not None or lw.sole_reader(y) is not add
                    or lw.net.tensors[y].shape != shape
                    or lw.net.tensors[r].shape != shape or lw.dtypes.get(r) != "float16"
                    or lw.dtypes.get(add.outputs[0]) != "float16"):
                continue
            made_by = producers.get(r)
            if made_by is not None and order.get(made_by.name, len(order)) > order[fc.name]:
                continue  # r is computed after the FC (or outside the segment, later)
            found[fc.name] = (add, r)
            break
    return found
