"""One device allocation per partition, with buffer offsets planned from tensor lifetimes.

The planning is the engine's lifetime planner (``engine.ir.memory``: ``step_lifetimes`` over the
segment's launches, ``place_buffers`` best fit by decreasing size) at the device's 256-byte
alignment; ``buffer_uses`` and ``plan_offsets`` are pure Python (tested without CUDA): buffers
whose lifetimes overlap never share bytes, and buffers that are never live together reuse the
same space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.ir.memory import Buffer, place_buffers, step_lifetimes

if TYPE_CHECKING:
    from backends.gpu.lowering.slots import Lowered

ALIGN = 256


@dataclass(frozen=True)
class BufferUse:
    """A buffer of ``nbytes`` live from step ``first`` to step ``last`` (inclusive)."""

    name: str
    nbytes: int
    first: int
    last: int


def _align(v: int) -> int:
    return -(-v // ALIGN) * ALIGN


def buffer_uses(low: Lowered) -> list[BufferUse]:
    """The arena buffers of a lowered segment with the launches that use them.

    Staged inputs are live from before the first launch to after the last (a replay may reuse
    them), the caller's outputs until after the last; uploaded constants live outside the arena;
    each launch's split-K workspace lives during that launch only. A slot that aliases another
    has no buffer: its uses count as uses of the slot whose bytes it is.
    """
    def arena(names: list[str]) -> list[str]:
        roots = (low.slots[n].alias or n for n in names if n in low.slots and low.slots[n].const is None)
        return list(dict.fromkeys(roots))

    # staged inputs stay live to the end: a replay without new inputs (execute_async(None)) reads them again
    live = step_lifetimes(((arena(op.reads), arena(op.writes)) for op in low.ops), arena(low.inputs),
                          arena(list(low.outputs.values()) + list(low.inputs)))
    uses = [BufferUse(n, low.slots[n].nbytes, first, last) for n, (first, last) in live.items()]
    uses += [BufferUse(f"@ws{i}", op.workspace, i, i) for i, op in enumerate(low.ops) if op.workspace]
    return uses


def plan_offsets(uses: list[BufferUse]) -> tuple[dict[str, int], int]:
    """Offsets at ``ALIGN`` boundaries (every buffer takes at least one aligned block): ({name: offset}, bytes)."""
    return place_buffers((Buffer(u.name, u.nbytes, u.first, u.last) for u in uses), ALIGN, min_bytes=1)


class Arena:
    """A single ``cupy`` byte buffer; ``view`` hands out typed arrays at planned offsets."""

    def __init__(self, nbytes: int) -> None:
        import cupy

        self._cupy = cupy
        self.nbytes = _align(max(nbytes, 1))
        self.buffer = cupy.empty(self.nbytes, dtype=cupy.uint8)

    def view(self, offset: int, shape: tuple[int, ...], dtype: Any) -> Any:
        cp = self._cupy
        dtype = cp.dtype(dtype)
        size = dtype.itemsize
        for d in shape:
            size *= d
        if offset % ALIGN or offset + size > self.nbytes:
            raise ValueError(f"view [{offset}, {offset + size}) is misaligned or outside the {self.nbytes}-byte arena")
        return cp.ndarray(shape, dtype=dtype, memptr=self.buffer.data + offset)
