"""Lowering of an IR partition to dla_sim hardware operations (the names other modules use).

The implementation lives in :mod:`backends.dla.lowering` by layer family; the per-kind dispatch
is its one table, ``DLA_LOWERINGS`` (``backends.dla.lowering.table``).
"""

from __future__ import annotations

from .lowering.context import Assembly, Lowered, View, sdp_activation
from .lowering.pointwise import broadcast_mode
from .lowering.table import DLA_INT8_LOWERINGS, DLA_LOWERINGS, INT8_LOWERERS, LOWERERS, lower, op_count_by_layer

__all__ = ["DLA_INT8_LOWERINGS", "DLA_LOWERINGS", "INT8_LOWERERS", "LOWERERS", "Assembly", "Lowered", "View",
           "broadcast_mode", "lower", "op_count_by_layer", "sdp_activation"]
