"""Runs a placed network's partitions on their devices with cross-device synchronization.

One worker thread per lane (the GPU, each DLA core). Each lane executes its partitions in the
global order (frame, partition index); a partition waits on one ``threading.Event`` per input
tensor of its frame, runs, stores its outputs, then sets the events of its output tensors. The
global order is a topological order of the (frame x partition) jobs and every lane's queue is a
subsequence of it, so the executor cannot deadlock; frames pipeline: frame f+1's first partition
may start on its lane while frame f still runs on another.

Every execution records an event log (frame, partition, lane, start, end on ``time.perf_counter``)
and ``check_order`` proves from it that no consumer started before each of its producers finished.
``delays`` injects a random sleep per lane before each partition (tests use it to shake orders).
Frames have separate tensor stores, so pipelined frames never share buffers.

What computes a partition is a ``PartitionRunner``: the GPU backend (here the reference backend,
layer by layer) for GPU partitions, ``backends.dla`` on dla_sim for DLA loadables
(``scheduler.dla_exec``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from engine.ir.errors import ExecutionError

from .partitions import PartitionSpec

PartitionRunner = Callable[[PartitionSpec, dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Event:
    frame: int
    partition: int
    lane: str
    start: float
    end: float


class _Failure(Exception):
    pass


class PartitionExecutor:
    """Executes ``partitions`` (in order) with one runner per partition and one thread per lane."""

    def __init__(self, partitions: Sequence[PartitionSpec], runners: Mapping[int, PartitionRunner],
                 network_inputs: Sequence[str], network_outputs: Sequence[str],
                 delays: Mapping[str, float] | None = None, seed: int = 0) -> None:
        self.partitions = tuple(partitions)
        self.runners = dict(runners)
        self.inputs = tuple(network_inputs)
        self.outputs = tuple(network_outputs)
        self.delays = dict(delays or {})
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.lanes = tuple(dict.fromkeys(p.lane for p in self.partitions))
        produced = {t: p.index for p in self.partitions for t in p.outputs}
        self.producers: dict[int, set[int]] = {
            p.index: {produced[t] for t in p.inputs if t in produced} for p in self.partitions}
        for t in self.outputs:
            if t not in produced and t not in self.inputs:
                raise ExecutionError(f"network output '{t}' is produced by no partition")

    def _delay(self, lane: str) -> None:
        hi = self.delays.get(lane, self.delays.get("dla" if lane.startswith("dla") else lane, 0.0))
        if hi > 0:
            with self._rng_lock:
                d = self._rng.uniform(0.0, hi)
            time.sleep(d)

    def run(self, frames: Sequence[Mapping[str, np.ndarray]]) -> tuple[list[dict[str, np.ndarray]], list[Event]]:
        """Execute every frame; returns each frame's outputs and the event log."""
        stores: list[dict[str, np.ndarray]] = [dict(f) for f in frames]
        ready: list[dict[str, threading.Event]] = []
        for f in frames:
            evs = {t: threading.Event() for p in self.partitions for t in p.outputs}
            for t in self.inputs:
                evs[t] = threading.Event()
                if t in f:
                    evs[t].set()
            ready.append(evs)
        log: list[Event] = []
        log_lock = threading.Lock()
        errors: list[BaseException] = []
        abort = threading.Event()

        def wait(ev: threading.Event) -> None:
            while not ev.wait(0.05):
                if abort.is_set():
                    raise _Failure()

        def lane_worker(lane: str) -> None:
            try:
                for fi in range(len(frames)):
                    for p in self.partitions:
                        if p.lane != lane:
                            continue
                        for t in p.inputs:
                            wait(ready[fi][t])
                        self._delay(lane)
                        args = {t: stores[fi][t] for t in p.inputs}
                        t0 = time.perf_counter()
                        outs = self.runners[p.index](p, args)
                        t1 = time.perf_counter()
                        missing = [t for t in p.outputs if t not in outs]
                        if missing:
                            raise ExecutionError(f"partition {p.index} ({lane}) did not produce {missing}")
                        with log_lock:
                            log.append(Event(fi, p.index, lane, t0, t1))
                        for t in p.outputs:
                            stores[fi][t] = outs[t]
                            ready[fi][t].set()
            except _Failure:
                return
            except BaseException as e:  # surfaced on the caller's thread
                errors.append(e)
                abort.set()

        threads = [threading.Thread(target=lane_worker, args=(lane,), name=f"hetrt-{lane}", daemon=True)
                   for lane in self.lanes]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if errors:
            raise errors[0]
        bad = check_order(log, self.producers)
        if bad:
            raise ExecutionError("synchronization violated: " + "; ".join(bad[:3]))
        return [{t: s[t] for t in self.outputs} for s in stores], sorted(log, key=lambda e: e.start)


def check_order(log: Sequence[Event], producers: Mapping[int, set[int]]) -> list[str]:
    """Violations of 'every partition starts after each of its producers (same frame) ended'."""
    end = {(e.frame, e.partition): e.end for e in log}
    out = []
    for e in log:
        for q in producers.get(e.partition, ()):
            q_end = end.get((e.frame, q))
            if q_end is None or e.start < q_end:
                out.append(f"frame {e.frame}: partition {e.partition} on {e.lane} started before producer {q} ended")
    return out


def gpu_layer_runner(network, layer_executor: Callable) -> PartitionRunner:
    """Run a GPU partition layer by layer through ``layer_executor(layer, inputs) -> outputs``."""
    by_name = {layer.name: layer for layer in network.layers}

    def run(p: PartitionSpec, args: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env = dict(args)
        for name in p.layers:
            layer = by_name[name]
            outs = layer_executor(layer, [env[t] for t in layer.inputs])
            for t, v in zip(layer.outputs, outs):
                env[t] = v
        return {t: env[t] for t in p.outputs}

    return run
