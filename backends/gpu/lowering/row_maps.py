"""A reduction over rows whose only reader maps each row with its result: one launch.

Why: Swin V2's cosine attention normalizes each head's query and key rows as
``x / max(||x||_2, eps)``; exported, that is a ReduceL2 (keep_dims) and an element-wise chain
that reads both the norm and x. Lowered as they come, x is read twice and the norms are written
and read back, in two launches. The reduction's group kernel holds each row (in registers where
it fits) when the reduced value is known, so it maps the row there: one read of x, one write.

The reduced value is rounded to the reduction's output type before the map reads it, as the
separate launches store it and load it back. Matching is apart from lowering
(``find_row_maps``); ``reduce.lower_reduce`` asks for the match.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backends.gpu.kernels.gen_group import REDUCE_OPS
from backends.gpu.lowering.concat_reads import substitute
from backends.gpu.lowering.pointwise import map_body
from backends.gpu.lowering.slots import FLOAT, prec
from engine.ir.layers import LayerKind
from engine.ir.network import Layer

if TYPE_CHECKING:
    from backends.gpu.lowering.lowerer import Lowerer

ROW_OPS = frozenset(REDUCE_OPS)  # reductions whose result the group kernel computes


def find_row_maps(lw: Lowerer, absorbed: set[str]) -> dict[str, Layer]:
    """{reduction name: its reader} where a float reduction with kept dims is read only by an
    element-wise or pointwise layer of this segment whose inputs are the reduction's output and
    input and whose output has the input's shape and precision, nothing of it INT8 or claimed."""
    from backends.gpu.lower_int8 import is_int8

    segment = {la.name for la in lw.layers}
    found: dict[str, Layer] = {}
    for la in lw.layers:
        if la.kind is not LayerKind.REDUCE or la.name in absorbed or is_int8(la):
            continue
        reader = lw.sole_reader(la.outputs[0])
        if (reader is None or reader.name not in segment or reader.name in absorbed or is_int8(reader)
                or reader.outputs[0] in lw.se_scales or not maps_rows(lw, la, reader)):
            continue
        found[la.name] = reader
    return found


def maps_rows(lw: Lowerer, reduction: Layer, reader: Layer) -> bool:
    """Whether ``reader`` maps each row of ``reduction``'s input with its result: a float reduction
    with kept dims that the group kernel computes, read only by ``reader``, an element-wise or
    pointwise layer of its precision whose inputs are the reduction's output and input and whose
    output has the input's shape."""
    r, x, y = reduction.outputs[0], reduction.inputs[0], reader.outputs[0]
    return (reduction.kind is LayerKind.REDUCE and reduction.params.keep_dims and reduction.params.op.value in ROW_OPS
            and lw.sole_reader(r) is reader and prec(reader) is prec(reduction) and map_body(reader) is not None
            and set(reader.inputs) == {r, x} and lw.net.tensors[y].shape == lw.net.tensors[x].shape
            and all(lw.dtypes.get(t) in FLOAT for t in (r, x, y)))


def row_body(reduction: Layer, reader: Layer) -> tuple[str, list[tuple[str, object]]]:
    """The reader's map body for ``gen_group.group_kernel``'s 'rowmap' (``RV``: the reduced value, ``XE``:
    the element, ``EW<k>``: weight k) and its weights as (key, value), in ``EW`` order."""
    ops, body = map_body(reader)
    weights: list[tuple[str, object]] = []
    for i, (key, w) in enumerate(ops):
        if w is None:
            expr = "RV" if key == reduction.outputs[0] else "XE"
        else:
            expr = f"EW{len(weights)}"
            weights.append((key, w))
        body = substitute(body, i, expr)
    return body, weights
