"""Per-layer profiling: TensorRT's IProfiler protocol and a collecting profiler for the CLI.

An execution context calls ``report_layer_time(layer_name, ms)`` once per layer per execution on
the object set as ``context.profiler``. ``Profiler`` keeps every time and prints trtexec's
``--dumpProfile`` table (total, average, median, percent of total per layer).
"""

from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass
from typing import Protocol


class IProfiler(Protocol):
    def report_layer_time(self, layer_name: str, ms: float) -> None: ...


@dataclass(frozen=True)
class LayerTime:
    name: str
    count: int
    total_ms: float
    mean_ms: float
    median_ms: float
    percent: float


class Profiler:
    """Collects layer times; safe to share between contexts running on several threads."""

    def __init__(self) -> None:
        self._times: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def report_layer_time(self, layer_name: str, ms: float) -> None:
        with self._lock:
            self._times.setdefault(layer_name, []).append(float(ms))

    def reset(self) -> None:
        with self._lock:
            self._times.clear()

    @property
    def layer_names(self) -> list[str]:
        with self._lock:
            return list(self._times)

    def times(self, layer_name: str) -> list[float]:
        with self._lock:
            return list(self._times.get(layer_name, []))

    def summary(self) -> list[LayerTime]:
        """One row per layer, in the order layers first reported."""
        with self._lock:
            items = [(n, list(t)) for n, t in self._times.items()]
        grand = sum(sum(t) for _, t in items)
        return [LayerTime(n, len(t), sum(t), sum(t) / len(t), statistics.median(t),
                          100.0 * sum(t) / grand if grand else 0.0) for n, t in items]

    @property
    def total_ms(self) -> float:
        return sum(row.total_ms for row in self.summary())

    def to_dict(self) -> list[dict]:
        """trtexec's --exportProfile shape: name, timeMs, averageMs, medianMs, percentage."""
        return [{"name": r.name, "count": r.count, "timeMs": r.total_ms, "averageMs": r.mean_ms,
                 "medianMs": r.median_ms, "percentage": r.percent} for r in self.summary()]

    def report(self) -> str:
        rows = self.summary()
        runs = max((r.count for r in rows), default=0)
        lines = [f"=== Profile ({runs} iterations ) ===",
                 f"{'Time(ms)':>11} {'Avg.(ms)':>12} {'Median(ms)':>12} {'Time(%)':>9}   Layer"]
        for r in rows:
            lines.append(f"{r.total_ms:11.2f} {r.mean_ms:12.4f} {r.median_ms:12.4f} {r.percent:9.1f}   {r.name}")
        total = sum(r.total_ms for r in rows)
        per_run = total / runs if runs else 0.0
        lines.append(f"{total:11.2f} {per_run:12.4f} {per_run:12.4f} {100.0 if rows else 0.0:9.1f}   Total")
        return "\n".join(lines)
