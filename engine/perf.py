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


# ----------------------------------------------------------------------------- per-iteration phases


def device_resident(context) -> bool:
    """True when every partition of the context's engine enqueues on a CUDA stream (GPU backend)."""
    return all(hasattr(context.partition_context(p.name), "execute_async") for p in context.engine.partition_descs)


class IterationTimer:
    """One inference split into trtexec's phases -- H2D, compute, D2H -- with per-iteration times
    (trtexec's --exportTimes records, milliseconds from the first iteration's start).

    On the GPU backend, inputs are copied into device buffers (H2D), the engine is enqueued with
    ``execute_async`` into device output buffers (compute; the host time of that call is the
    enqueue time) and the outputs are copied back (D2H), each timed by CUDA events on one stream;
    ``no_data_transfers`` stages the inputs once and skips both copies (trtexec's
    --noDataTransfers). Engines with host partitions have no device: H2D and D2H are empty and
    compute is one synchronous ``execute`` on the host clock.
    """

    def __init__(self, context, feeds: dict[str, np.ndarray], no_data_transfers: bool = False) -> None:
        self.context = context
        self.feeds = feeds
        self.no_data_transfers = no_data_transfers
        self.device = device_resident(context)
        self.records: list[dict[str, float]] = []
        self._origin: float | None = None
        if self.device:
            import cupy

            self._cp = cupy
            self.stream = cupy.cuda.Stream(non_blocking=True)
            self.inputs = {n: cupy.asarray(a) for n, a in feeds.items()}
            self.outputs = {n: cupy.empty(context.get_tensor_shape(n), context.engine.get_tensor_dtype(n).numpy)
                            for n in context.engine.output_names}
            self.host_out = {n: np.empty(a.shape, a.dtype) for n, a in self.outputs.items()}

    def __call__(self) -> None:
        now = time.perf_counter()
        if self._origin is None:
            self._origin = now
        rec = self._device() if self.device else self._host()
        self.records.append({k: (v - self._origin) * 1e3 if k.startswith(("start", "end")) else v
                             for k, v in rec.items()})

    def _host(self) -> dict[str, float]:
        t0 = time.perf_counter()
        self.context.execute(self.feeds)
        t1 = time.perf_counter()
        return {"startEnqMs": t0, "endEnqMs": t1, "startH2DMs": t0, "endH2DMs": t0, "startComputeMs": t0,
                "endComputeMs": t1, "startD2HMs": t1, "endD2HMs": t1, "h2dMs": 0.0, "computeMs": (t1 - t0) * 1e3,
                "d2hMs": 0.0, "latencyMs": (t1 - t0) * 1e3, "enqueueMs": (t1 - t0) * 1e3}

    def _device(self) -> dict[str, float]:
        cp, s = self._cp, self.stream
        ev = [cp.cuda.Event() for _ in range(4)]
        t0 = time.perf_counter()
        ev[0].record(s)
        if not self.no_data_transfers:
            for n, a in self.feeds.items():
                self.inputs[n].set(a, stream=s)
        ev[1].record(s)
        e0 = time.perf_counter()
        self.context.execute_async(self.inputs, s, outputs=self.outputs)
        e1 = time.perf_counter()
        ev[2].record(s)
        if not self.no_data_transfers:
            for n, a in self.outputs.items():
                a.get(stream=s, out=self.host_out[n])
        ev[3].record(s)
        ev[3].synchronize()
        h2d, comp, d2h = (cp.cuda.get_elapsed_time(ev[i], ev[i + 1]) for i in range(3))
        c0 = t0 + h2d / 1e3
        return {"startEnqMs": e0, "endEnqMs": e1, "startH2DMs": t0, "endH2DMs": c0, "startComputeMs": c0,
                "endComputeMs": c0 + comp / 1e3, "startD2HMs": c0 + comp / 1e3,
                "endD2HMs": c0 + (comp + d2h) / 1e3, "h2dMs": h2d, "computeMs": comp, "d2hMs": d2h,
                "latencyMs": h2d + comp + d2h, "enqueueMs": (e1 - e0) * 1e3}
