"""Chrome trace (``chrome://tracing`` / Perfetto) export of a simulation's per-operation records.

One complete event ("ph": "X") per op: the op occupies its hardware layer's time slot; its own busy
time, bytes and MACs go in ``args``.  Time unit: microseconds at the configured DLA clock.  Each unit
is a thread of one process per simulated core (all cores run the same schedule).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .simulator import SimResult

_TIDS = {"conv": 1, "sdp": 2, "pdp": 3, "cdp": 4, "rubik": 5, "bdma": 6}


def chrome_trace(res: SimResult) -> dict:
    us_per_cycle = 1.0 / res.clock_mhz
    events: list[dict] = []
    for core in range(res.cores):
        pid = core + 1
        events.append({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": f"DLA core {core}"}})
        for unit, tid in _TIDS.items():
            events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": unit}})
        for r in res.records:
            events.append({
                "name": r.name, "cat": r.unit, "ph": "X", "pid": pid, "tid": _TIDS.get(r.unit, 9),
                "ts": r.start * us_per_cycle, "dur": r.duration * us_per_cycle,
                "args": {"group": r.group, "busy_cycles": r.busy, "dram_bytes": r.dram_bytes,
                         "sram_bytes": r.sram_bytes, "macs": r.macs, "bound": r.bound},
            })
    return {"traceEvents": events, "displayTimeUnit": "ns",
            "otherData": {"config": res.config, "clock_mhz": res.clock_mhz, "cycles": res.cycles}}


def write_chrome_trace(res: SimResult, path: str) -> None:
    with open(path, "w") as f:
        json.dump(chrome_trace(res), f)
