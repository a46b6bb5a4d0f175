"""trtexec-style measurement: warm-up, timed iterations, latency statistics.

Semantics follow trtexec: warm up for ``warmup_ms``, then run at least ``iterations`` inferences
AND at least ``duration_s`` seconds. Every latency is host wall-clock time of one synchronous
``execute`` (the measured clock); the summary says which backend produced it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LatencyStats:
    count: int
    min: float
    max: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float

    @classmethod
    def from_ms(cls, values_ms: list[float]) -> LatencyStats:
        a = np.asarray(values_ms, dtype=np.float64)
        if a.size == 0:
            raise ValueError("no timings to summarise")
        p = np.percentile(a, [50, 90, 95, 99])
        return cls(int(a.size), float(a.min()), float(a.max()), float(a.mean()), float(p[0]), float(p[1]),
                   float(p[2]), float(p[3]))

    def line(self) -> str:
        return (f"min = {self.min:.5g} ms, max = {self.max:.5g} ms, mean = {self.mean:.5g} ms, "
                f"median = {self.median:.5g} ms, percentile(90%) = {self.p90:.5g} ms, "
                f"percentile(95%) = {self.p95:.5g} ms, percentile(99%) = {self.p99:.5g} ms")


@dataclass
class PerfResult:
    latencies_ms: list[float]
    wall_s: float
    warmup_iterations: int
    stats: LatencyStats = field(init=False)

    def __post_init__(self) -> None:
        self.stats = LatencyStats.from_ms(self.latencies_ms)

    @property
    def throughput_qps(self) -> float:
        return len(self.latencies_ms) / self.wall_s if self.wall_s > 0 else float("nan")

    def summary(self, backend: str, batch: int) -> str:
        s = self.stats
        return "\n".join([
            "=== Performance summary ===",
            f"Throughput: {self.throughput_qps:.5g} qps ({self.throughput_qps * batch:.5g} images/s at batch {batch})",
            f"Latency: {s.line()}",
            f"Compute Time ({backend} backend, host clock): {s.line()}",
            f"Total Host Walltime: {self.wall_s:.5g} s",
            f"Total Compute Time: {sum(self.latencies_ms) / 1e3:.5g} s",
            f"Iterations: {s.count} timed after {self.warmup_iterations} warm-up",
            "Explanations of the performance metrics are printed in the verbose logs.",
        ])

    def to_dict(self) -> dict:
        return {"throughput_qps": self.throughput_qps, "wall_s": self.wall_s, "iterations": len(self.latencies_ms),
                "warmup_iterations": self.warmup_iterations, "latency_ms": vars(self.stats)}


def measure(run, warmup_ms: float = 200.0, iterations: int = 10, duration_s: float = 3.0,
            max_iterations: int | None = None) -> PerfResult:
    """Time ``run()`` trtexec-style; ``max_iterations`` caps very long runs (None: no cap)."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if warmup_ms < 0 or duration_s < 0:
        raise ValueError("warm-up and duration must be >= 0")
    warm = 0
    t_end = time.perf_counter() + warmup_ms / 1e3
    while True:
        run()
        warm += 1
        if time.perf_counter() >= t_end:
            break
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + duration_s
    while len(latencies) < iterations or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        run()
        latencies.append((time.perf_counter() - t0) * 1e3)
        if max_iterations is not None and len(latencies) >= max_iterations:
            break
    return PerfResult(latencies, time.perf_counter() - start, warm)
