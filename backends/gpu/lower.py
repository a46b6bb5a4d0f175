"""Lowering: IR layers of one GPU segment → device tensors (slots) and a launch list (ops).

Pure Python and numpy: nothing here touches CUDA, so lowering (and the support decisions the
builder logs) runs and is tested on any machine. ``backends.gpu.backend`` turns the result into
an arena, compiled kernels and a CUDA graph. The implementation lives in ``backends.gpu.lowering``
(one module per layer family, dispatched through the GPU layer table); this module keeps the
public names.
"""

from __future__ import annotations

from backends.gpu.lowering.conv import parse_tactic
from backends.gpu.lowering.lowerer import Lowerer, lower
from backends.gpu.lowering.slots import Lowered, Op, Slot
from backends.gpu.lowering.table import GPU_LOWERINGS, GpuLowering, supports

__all__ = ["GPU_LOWERINGS", "GpuLowering", "Lowered", "Lowerer", "Op", "Slot", "lower", "parse_tactic", "supports"]
