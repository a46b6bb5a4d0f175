"""Cost of hardware ops from dla_sim's timing-only simulation, one fused group at a time, cached.

dla_sim's simulator times a program as the sum of its fused hardware groups (ping-pong register
groups remove the gaps between them), and its energy is per-group dynamic energy plus static power
times time. Both are additive over groups, so timing each group once and summing reproduces the
whole-program simulation exactly. Groups are cached by their op signature — the op descriptors
with every tensor and op name stripped — so a network's repeated blocks, and every candidate
partition a scheduler tries, cost each distinct group once.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from dla_sim import simulator
from dla_sim.config import DlaConfig
from dla_sim.ops import CubeDesc, HwOp


@dataclass(frozen=True)
class GroupCost:
    """Timing-only simulation of one fused hardware group."""

    cycles: float
    energy_j: float
    dram_bytes: int
    sram_bytes: int
    busy: tuple[float, ...]  # each op's own busy cycles (attribution weights)
    bound: str


def signature(op: HwOp) -> HwOp:
    """``op`` without names: equal signatures time identically."""
    kw = {}
    for f in fields(op):
        v = getattr(op, f.name)
        if isinstance(v, CubeDesc) and v.name:
            kw[f.name] = v.with_(name="")
    return replace(op, name="", inputs=(), outputs=(), **kw)


class GroupCostCache:
    def __init__(self, cfg: DlaConfig) -> None:
        self.cfg = cfg
        self._cache: dict[tuple, GroupCost] = {}

    def group(self, ops: list[HwOp]) -> GroupCost:
        key = tuple(signature(op) for op in ops)
        hit = self._cache.get(key)
        if hit is None:
            res = simulator.simulate(list(key), self.cfg, timing_only=True)
            hit = GroupCost(res.cycles, res.energy.total_j, res.bytes.dram, res.bytes.sram,
                            tuple(r.busy for r in res.records), res.records[0].bound if res.records else "")
            self._cache[key] = hit
        return hit

    def program(self, ops: list[HwOp]) -> list[tuple[list[HwOp], GroupCost]]:
        """Every fused group of ``ops`` with its cost, in execution order."""
        return [(g, self.group(g)) for g in simulator.group_ops(ops)]

    def __len__(self) -> int:
        return len(self._cache)
