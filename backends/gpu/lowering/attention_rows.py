"""Row maps of an attention block's Q and K, done by the fused kernel as their tiles land.

Swin V2's cosine attention normalizes each head's query and key rows before the product:
``x / max(||x||_2, eps)``, exported as a ReduceL2 over the head's channels and an element-wise
chain reading the norm and x (``row_maps`` makes that one launch of its own). Inside the attention
kernel the rows are already in shared memory, so the map costs no launch and no pass over Q or K.

Matching only (the kernel's side is ``attention_src.RowMap``): an operand of the first product is
row-mapped where its tensor (possibly through a transpose of its last two dims, which the kernel's
operand orientation absorbs) is made by a float element-wise or pointwise layer without weights
whose inputs are x and a reduction of x over its last axis (kept dims), both private to the block,
and whose weights are scalars (the eps of ``max(||x||, eps)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from backends.gpu.kernels import attention_src as att
from backends.gpu.kernels.gen_group import REDUCE_OPS
from backends.gpu.lowering.concat_reads import substitute
from backends.gpu.lowering.pointwise import map_body
from engine.ir.layers import LayerKind
from engine.ir.network import Layer

if TYPE_CHECKING:
    from backends.gpu.lowering.attention import Operand, _Walk


@dataclass(frozen=True)
class RowMapped:
    """An operand read as the rows of ``source`` mapped by ``row_map``; ``layers``: those the kernel
    replaces (the reduction, its reader and a transpose between)."""

    source: str
    swap: bool
    row_map: att.RowMap
    layers: tuple[str, ...]


def _last_two_swapped(la: Layer, w: _Walk, reader: Layer) -> bool:
    """A private FP16 shuffle that only exchanges the last two dims."""
    p = la.params
    if la.kind is not LayerKind.SHUFFLE or not w.fp16_layer(la) or not w.private(la.outputs[0], reader):
        return False
    rank = len(w.lw.net.tensors[la.inputs[0]].shape)
    swap = (*range(rank - 2), rank - 1, rank - 2)
    return (rank >= 2 and p.reshape is None and p.first_perm is not None and tuple(p.first_perm) == swap
            and (p.second_perm is None or tuple(p.second_perm) == tuple(range(rank))))


def row_mapped(w: _Walk, op: Operand, reader: Layer) -> RowMapped | None:
    """``op`` (read by ``reader``) as a row map of another tensor, or None. The map runs in FP16
    here (every layer of an attention block does), so its scalar weights are rounded to fp16."""
    tensor, swap, peeled = op.tensor, op.swap, ()
    la = w.producers.get(tensor)
    if la is not None and _last_two_swapped(la, w, reader):
        tensor, swap, peeled, reader = la.inputs[0], not swap, (la.name,), la
        la = w.producers.get(tensor)
    if swap or not w.fp16_layer(la) or not w.private(tensor, reader) or map_body(la) is None:
        return None
    ins = set(la.inputs)
    red = next((w.producers.get(t) for t in la.inputs if getattr(w.producers.get(t), "kind", None)
                is LayerKind.REDUCE), None)
    if red is None or len(ins) != 2 or red.inputs[0] not in ins or red.outputs[0] not in ins:
        return None
    x, r = red.inputs[0], red.outputs[0]
    rank = len(w.lw.net.tensors[x].shape)
    p = red.params
    if (red.name not in w.segment or red.precision is not la.precision or not p.keep_dims
            or p.op.value not in REDUCE_OPS or {a % rank for a in p.axes} != {rank - 1}
            or w.lw.sole_reader(r) is not la or w.lw.dtypes.get(r) not in ("float16", "float32")
            or not w.plain(x)):
        return None
    operands, body = map_body(la)
    for i, (key, weight) in enumerate(operands):
        if weight is None:
            expr = "RV" if key == r else "XE"
        elif np.size(weight) == 1:  # a constant such as the norm's eps, rounded as an FP16 layer's weight
            expr = f"{float(np.asarray(weight, np.float16).astype(np.float32).reshape(()))!r}f"
        else:
            return None
        body = substitute(body, i, expr)
    return RowMapped(x, False, att.RowMap(p.op.value, body, w.lw.dtypes[r]), (*peeled, la.name, red.name))
