"""A launch sequence captured once into a CUDA graph and replayed.

Steps are closures that enqueue kernels on the current stream over preallocated buffers (an
``Arena``); capture happens on a non-default stream because CUDA refuses to capture the legacy
default stream. Replays are timed with CUDA events.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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

        This is the per-layer view (trtexec's --dumpProfile): each launch is timed on its own, so
        the sum exceeds a graph replay by the launch gaps the graph removes."""
        import cupy

        events = [cupy.cuda.Event() for _ in range(len(self.steps) + 1)]
        with stream:
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
