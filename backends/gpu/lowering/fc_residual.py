"""Residual adds folded into the fully connected layer before them (the GPU lowering's form of
TensorRT's eltwise-sum fusion, for FC layers).

``y = FC(x) + r``, where the FC runs on the tensor cores (the 1x1-convolution kernels, whose
epilogue adds a residual: ``act(x·Wᵀ + b + r)``) without an activation of its own, writes ``y``
directly: one pass over the activation instead of a write, a read and a second write. Transformer
blocks end both their attention and their MLP that way. ``r`` must already be computed when the
FC runs (it comes earlier in the segment's order) and have the output's shape; the FC's own
output must be read by the add alone.

ConvNeXt's blocks add the residual after permuting the MLP's (N, H, W, C) output back to
(N, C, H, W): with C a multiple of 8 that permute moves no byte (the linear (N, H, W, C) rows are
the NHWC slot of (N, C, H, W)), so the FC writes the add's output as an NHWC slot and reads the
residual as one; the permute is absorbed with the add.
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


def _permuted_back(lw: Lowerer, y: str, producers: dict[str, Layer]) -> tuple[Layer, Layer] | None:
    """(shuffle, FC) where ``y`` is the (0, 3, 1, 2) permute of an FC's (N, H, W, C) output that
    only the permute reads, with C % 8 = 0 (the permute's output is then the FC's bytes as NHWC)."""
    sh = producers.get(y)
    if sh is None or sh.kind is not LayerKind.SHUFFLE:
        return None
    p = sh.params
    if (p.reshape is not None or p.first_perm is None or tuple(p.first_perm) != (0, 3, 1, 2)
            or (p.second_perm is not None and tuple(p.second_perm) != (0, 1, 2, 3))):
        return None
    t = sh.inputs[0]
    fc = producers.get(t)
    if (fc is None or lw.sole_reader(t) is not sh or lw.net.tensors[t].shape[-1] % 8
            or lw.dtypes.get(t) != "float16"):
        return None
    return sh, fc


def find_fc_residuals(lw: Lowerer) -> dict[str, tuple[Layer, str, Layer | None]]:
    """{FC layer name: (the add, the residual tensor, the permute between or None)} for the adds
    the FCs absorb."""
    order = {la.name: i for i, la in enumerate(lw.layers)}
    producers = lw.net.producers()
    found: dict[str, tuple[Layer, str, Layer | None]] = {}
    for add in lw.layers:
        if (add.kind is not LayerKind.ELEMENTWISE or add.params.op is not ElementWiseOp.SUM
                or prec(add) is not Precision.FP16 or add.inputs[0] == add.inputs[1]):
            continue
        shape = lw.net.tensors[add.outputs[0]].shape
        for y, r in (add.inputs, add.inputs[::-1]):
            shuffle, fc = _permuted_back(lw, y, producers) or (None, producers.get(y))
            if (fc is None or fc.name not in order or fc.name in found or not tensor_core_fc(fc)
                    or fc.params.activation is not None or lw.sole_reader(y) is not add
                    or (shuffle is not None and shuffle.name not in order) or lw.net.tensors[y].shape != shape
                    or lw.net.tensors[r].shape != shape or lw.dtypes.get(r) != "float16"
                    or lw.dtypes.get(add.outputs[0]) != "float16"):
                continue
            made_by = producers.get(r)
            if made_by is not None and order.get(made_by.name, len(order)) > order[fc.name]:
                continue  # r is computed after the FC (or outside the segment, later)
            found[fc.name] = (add, r, shuffle)
            break
    return found
