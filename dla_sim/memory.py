"""DRAM and on-chip SRAM model: bandwidth, latency and byte counters.

Assumptions (hardware timing model):

* The primary interface (DBBIF) moves at most ``dbb_bits/8`` bytes per DLA cycle; the SoC DRAM
  delivers ``dram_gbps * dram_share`` to one DLA core.  Reads and writes share that bandwidth
  ([PERF] readme: "Primary Memory Bandwidth is combined for both read and write").
* The secondary interface (SRAMIF) has separate read and write limits ([PERF]); without limits it
  moves ``sram_bits/8`` bytes per cycle each way.
* Transfers of one hardware layer overlap with its compute (CDMA prefetch, WDMA write-behind); the
  layer pays the access latency once, for its first fetch, because it cannot prefetch data that the
  previous layer is still writing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .config import DlaConfig
from .ops import UnitTiming


def dram_cycles(cfg: DlaConfig, nbytes: float) -> float:
    bpc = cfg.dram_bytes_per_cycle()
    return nbytes / bpc if nbytes else 0.0


def sram_cycles(cfg: DlaConfig, nbytes: float, write: bool = False) -> float:
    if not nbytes:
        return 0.0
    bpc = cfg.sram_bytes_per_cycle(write)
    if bpc <= 0:
        raise ValueError(f"{cfg.name} has no on-chip SRAM interface, yet {nbytes} B were routed to SRAM")
    return nbytes / bpc


def transfer_cycles(cfg: DlaConfig, dram_bytes: float, sram_read: float, sram_write: float) -> float:
    """Cycles the memory interfaces need for one layer's traffic (the slowest interface)."""
    return max(dram_cycles(cfg, dram_bytes), sram_cycles(cfg, sram_read), sram_cycles(cfg, sram_write, True))


def access_latency(cfg: DlaConfig, uses_dram: bool, uses_sram: bool) -> int:
    lat = 0
    if uses_dram:
        lat = max(lat, cfg.mem.dram_latency)
    if uses_sram:
        lat = max(lat, cfg.mem.sram_latency)
    return lat


def spreadsheet_cycles(cfg: DlaConfig, nbytes: float, gbps: float) -> int:
    """[PERF]'s conversion: CEILING(KB / (GB/s) * MHz) with KB = bytes/1024."""
    return math.ceil(nbytes / 1024 / gbps * cfg.clock_mhz - 1e-9) if nbytes else 0


@dataclass
class ByteCounter:
    """Counts bytes moved per memory and direction (never estimated: summed from op traffic)."""

    dram_read: int = 0
    dram_write: int = 0
    sram_read: int = 0
    sram_write: int = 0
    per_unit: dict[str, int] = field(default_factory=dict)

    def add(self, t: UnitTiming) -> None:
        self.dram_read += t.dram_read_bytes
        self.dram_write += t.dram_write_bytes
        self.sram_read += t.sram_read_bytes
        self.sram_write += t.sram_write_bytes
        self.per_unit[t.unit] = self.per_unit.get(t.unit, 0) + t.dram_bytes + t.sram_bytes

    @property
    def dram(self) -> int:
        return self.dram_read + self.dram_write

    @property
    def sram(self) -> int:
        return self.sram_read + self.sram_write
