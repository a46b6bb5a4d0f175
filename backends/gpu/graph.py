"""A launch sequence captured once into a CUDA graph and replayed.

Steps are closures that enqueue kernels on the current stream over preallocated buffers (an
``Arena``); capture happens on a non-default stream because CUDA refuses to capture the legacy
default stream. Replays are timed with CUDA events.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_HOLD_S = 2.0  # a profiled pass whose host side takes longer is timed partly host-bound
FALLBACK_CLOCK_HZ = 2.0e9  # above the boost clock of data-centre GPUs, so a hold lasts at least as asked

_HOLD_SRC = r"""
extern "C" __global__ void hold_stream(long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) {
    }
}
"""


def hold_stream(stream: Any, seconds: float) -> None:
    """Enqueue one single-thread kernel that spins on the SM clock for at least ``seconds`` (at
    the device's peak clock; longer where it runs slower), so that work enqueued behind it
    starts only once the host has had that long to catch up."""
    import numpy as np

    kernel, clock_hz = _hold_kernel()
    kernel((1,), (1,), (np.int64(seconds * clock_hz),), stream=stream)


@functools.cache
def _hold_kernel() -> tuple[Any, float]:
    import cupy

    try:
        clock_hz = cupy.cuda.Device().attributes["ClockRate"] * 1e3
    except (KeyError, cupy.cuda.runtime.CUDARuntimeError):
        clock_hz = FALLBACK_CLOCK_HZ
    return cupy.RawKernel(_HOLD_SRC, "hold_stream"), clock_hz


@dataclass
class LaunchSequence:
    steps: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def add(self, label: str, step: Callable[[], None]) -> None:
        self.steps.append((label, step))

    def run(self, stream: Any) -> None:
        """Enqueue every step on ``stream`` without a graph (for checking and warm-up)."""
        with stream:
            for _, step in self.steps:
                step()

    def profile(self, stream: Any) -> list[tuple[str, float]]:
        """Run every step eagerly on ``stream`` between CUDA events; (label, ms) per step, in order.

        This is the per-layer view (trtexec's --dumpProfile). An untimed pass first measures how
        long the host takes to enqueue the steps; the timed pass then starts behind a kernel that
        holds the stream at least twice that long, so the host enqueues ahead of the device and
        each step's time is its device time, not its launch cost (a 6 us kernel otherwise reads
        as the 50-150 us the host spends launching it). The sum still exceeds a graph replay by
        the gaps between launches that the graph removes."""
        import cupy

        started = time.perf_counter()
        self.run(stream)
        host_s = time.perf_counter() - started
        stream.synchronize()
        events = [cupy.cuda.Event() for _ in range(len(self.steps) + 1)]
        with stream:
            hold_stream(stream, min(2.0 * host_s + 1e-3, MAX_HOLD_S))
            events[0].record(stream)
            for i, (_, step) in enumerate(self.steps):
                step()
                events[i + 1].record(stream)
        events[-1].synchronize()
        return [(label, cupy.cuda.get_elapsed_time(events[i], events[i + 1]))
                for i, (label, _) in enumerate(self.steps)]

    def capture(self, stream: Any | None = None) -> CapturedGraph:
        import cupy

        stream = stream or cupy.cuda.Stream(non_blocking=True)
        self.run(stream)  # compile and warm up every kernel outside the capture
        stream.synchronize()
        with stream:
            stream.begin_capture()
            try:
                for _, step in self.steps:
                    step()
            finally:
                graph = stream.end_capture()
        graph.upload(stream)
        return CapturedGraph(graph, stream, len(self.steps))


@dataclass
class CapturedGraph:
    graph: Any
    stream: Any
    n_steps: int

    def replay(self) -> None:
        self.graph.launch(self.stream)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def time_ms(self, replays: int = 50, groups: int = 20, warmup: int = 10) -> dict[str, float]:
        """Per-replay milliseconds over ``groups`` back-to-back batches: median, min, max."""
        import cupy

        for _ in range(warmup):
            self.replay()
        self.stream.synchronize()
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        samples = []
        for _ in range(groups):
            start.record(self.stream)
            for _ in range(replays):
                self.replay()
            end.record(self.stream)
            end.synchronize()
            samples.append(cupy.cuda.get_elapsed_time(start, end) / replays)
        return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}
