"""One device allocation per partition, with buffer offsets planned from tensor lifetimes.

``plan_offsets`` is pure Python (tested without CUDA): buffers whose lifetimes overlap never
share bytes, and buffers that are never live together reuse the same space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


def plan_offsets(uses: list[BufferUse]) -> tuple[dict[str, int], int]:
    """Greedy first-fit by decreasing size: returns ({name: offset}, total bytes)."""
    placed: list[tuple[int, int, BufferUse]] = []  # (offset, size, use)
    offsets: dict[str, int] = {}
    for u in sorted(uses, key=lambda u: (-u.nbytes, u.first, u.name)):
        size = _align(max(u.nbytes, 1))
        busy = sorted((o, o + s) for o, s, v in placed if v.first <= u.last and u.first <= v.last)
        off = 0
        for lo, hi in busy:
            if off + size <= lo:
                break
            off = max(off, hi)
        placed.append((off, size, u))
        offsets[u.name] = off
    total = max((o + s for o, s, _ in placed), default=0)
    return offsets, total


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
