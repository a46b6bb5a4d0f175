"""Row maps of an attention block's Q and K, done by the fused kernel as their tiles land.

Swin V2's cosine attention normalizes each head's query and key rows before the product:
``x / max(||x||_2, eps)``, exported as a ReduceL2 over the head's channels and an element-wise
chain reading the norm and x (``row_maps`` makes that one launch of its own). Inside the attention
kernel the rows are already in shared memory, so the map costs no launch and no pass over Q or K.

Matching only (the kernel's side is ``attention_src.RowMap``): an operand of the first product is
row-mapped where its tensor (possibly through a transpose of its last two dims, which the kernel's
operand orientation absorbs) is made by the reader of a row map (``row_maps.maps_rows``) of x over
its last axis, private to the block, whose weights are scalars (the eps of ``max(||x||, eps)``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from backends.gpu.kernels import attention_src as att
from backends.gpu.lowering.row_maps import maps_rows, row_body
from engine.ir.layers import LayerKind
from engine.ir.network import Layer

if TYPE_CHECKING:
    from backends.gpu.lowering.attention import Operand, _Walk


@dataclass(frozen=True)
class RowMapped:
    """An operand read as the rows of ``source`` mapped by ``row_map``; ``layers``: those the kernel
    replaces (the reduction and its reader)."""

    source: str
    row_map: att.RowMap
    layers: tuple[str, ...]


def row_mapped(w: _Walk, op: Operand, reader: Layer) -> RowMapped | None:
    """``op`` (read by ``reader``; transposes of the last two dims already passed by
    ``_Walk.operand_source``) as a row map of another tensor, or None. The map runs in FP16
    here (every layer of an attention block does), so its scalar weights are rounded to fp16."""
    tensor, swap = op.tensor, op.swap
    la = w.producers.get(tensor)
    if swap or not w.fp16_layer(la) or not w.private(tensor, reader):
        return None
    red = next((w.producers[t] for t in la.inputs if getattr(w.producers.get(t), "kind", None) is LayerKind.REDUCE),
               None)
    if red is None or red.name not in w.segment or not maps_rows(w.lw, red, la):
        return None
    x = red.inputs[0]
    rank = len(w.lw.net.tensors[x].shape)
    if {a % rank for a in red.params.axes} != {rank - 1} or not w.plain(x):
        return None
    body, weights = row_body(red, la)
    for k, (_, weight) in enumerate(weights):
        if np.size(weight) != 1:
            return None
        # a constant such as the norm's eps, inlined and rounded as an FP16 layer's weight
        value = float(np.asarray(weight, np.float16).astype(np.float32).reshape(()))
        body = re.sub(rf"\bEW{k}\b", f"{value!r}f", body)
    return RowMapped(x, att.RowMap(red.params.op.value, body, w.lw.dtypes[red.outputs[0]]),
                     (la.name, red.name))
