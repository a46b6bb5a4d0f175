"""The one executor: a plan's partitions on their lanes, with every cross-device hand-off here.

A lane is the worker that runs partitions in order: ``gpu`` (GPU partitions and the reference
backend's host partitions, one after another as a CUDA stream would) and one ``dla<core>`` per
DLA core. Each lane executes its partitions in the global order (frame, partition index); a
partition waits on one ``threading.Event`` per input tensor of its frame, runs, stores its outputs
in the frame's ``TensorStore``, then sets the events of its output tensors. The global order is a
topological order of the (frame x partition) jobs and every lane's queue is a subsequence of it,
so the executor cannot deadlock; frames pipeline: frame f+1's first partition may start on its
lane while frame f still runs on another.

A plan with one lane (every GPU-only or host plan) is the same executor without threads: the lane
runs on the caller's thread, partitions in order.

Every run records an event log (frame, partition, lane, start, end on ``time.perf_counter``, the
host clock; DLA partitions additionally have dla_sim's simulated clock, see docs/architecture.md)
and ``check_order`` proves from it that no consumer started before each of its producers finished.
``delays`` injects a random sleep per lane before each partition (tests use it to shake orders).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from backends.contract import PartitionContext, PartitionDesc, ProfileRecord, TensorStore
from engine.ir.errors import ExecutionError, HetrtError


@dataclass(frozen=True)
class Event:
    """One partition run of one frame on its lane (host clock, seconds)."""

    frame: int
    partition: int
    lane: str
    start: float
    end: float


class _Abort(Exception):
    pass


def producers_of(partitions: Sequence[PartitionDesc]) -> dict[int, set[int]]:
    """Partition index -> the partitions that produce its inputs."""
    produced = {t: p.index for p in partitions for t in p.outputs}
    return {p.index: {produced[t] for t in p.inputs if t in produced} for p in partitions}


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


@dataclass
class RunResult:
    events: list[Event]
    profile: list[tuple[int, int, list[ProfileRecord]]]  # (frame, partition, records)


class Executor:
    """Runs ``partitions`` (execution order) with one context per partition, one worker per lane."""

    def __init__(self, partitions: Sequence[PartitionDesc], network_inputs: Sequence[str],
                 network_outputs: Sequence[str]) -> None:
        self.partitions = tuple(partitions)
        self.inputs = tuple(network_inputs)
        self.lanes = tuple(dict.fromkeys(p.lane for p in self.partitions))
        self.producers = producers_of(self.partitions)
        produced = {t for p in self.partitions for t in p.outputs}
        for t in network_outputs:
            if t not in produced and t not in self.inputs:
                raise ExecutionError(f"network output '{t}' is produced by no partition")

    def run(self, stores: Sequence[TensorStore], contexts: Mapping[int, PartitionContext],
            delays: Mapping[str, float] | None = None, seed: int = 0) -> RunResult:
        """Execute every frame (its inputs already in its store); returns the event log."""
        job = _Job(self, stores, contexts, dict(delays or {}), seed)
        if len(self.lanes) == 1 and not job.delays:
            job.lane(self.lanes[0], inline=True)  # one lane: the caller's thread, no events to wait on
        else:
            job.threaded()
        bad = check_order(job.log, self.producers)
        if bad:
            raise ExecutionError("synchronization violated: " + "; ".join(bad[:3]))
        job.log.sort(key=lambda e: e.start)
        job.profile.sort(key=lambda r: (r[0], r[1]))
        return RunResult(job.log, job.profile)


class _Job:
    """One ``Executor.run``: the frames' stores, readiness events, event log and errors."""

    def __init__(self, ex: Executor, stores: Sequence[TensorStore], contexts: Mapping[int, PartitionContext],
                 delays: dict[str, float], seed: int) -> None:
        self.ex = ex
        self.stores = stores
        self.contexts = contexts
        self.delays = delays
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.log: list[Event] = []
        self.profile: list[tuple[int, int, list[ProfileRecord]]] = []
        self.errors: list[BaseException] = []
        self.abort = threading.Event()
        self.ready: list[dict[str, threading.Event]] = []
        for store in stores:
            evs = {t: threading.Event() for p in ex.partitions for t in p.outputs}
            for t in ex.inputs:
                evs[t] = threading.Event()
                if t in store:
                    evs[t].set()
            self.ready.append(evs)

    def threaded(self) -> None:
        threads = [threading.Thread(target=self.lane, args=(lane,), name=f"hetrt-{lane}", daemon=True)
                   for lane in self.ex.lanes]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if self.errors:
            raise self.errors[0]

    def _wait(self, ev: threading.Event) -> None:
        while not ev.wait(0.05):
            if self.abort.is_set():
                raise _Abort()

    def _delay(self, lane: str) -> None:
        hi = self.delays.get(lane, self.delays.get("dla" if lane.startswith("dla") else lane, 0.0))
        if hi > 0:
            with self.lock:
                d = self.rng.uniform(0.0, hi)
            time.sleep(d)

    def lane(self, lane: str, inline: bool = False) -> None:
        """Run ``lane``'s partitions for every frame in order (a worker thread or the caller)."""
        try:
            for fi, store in enumerate(self.stores):
                for p in self.ex.partitions:
                    if p.lane == lane:
                        self._run_one(fi, store, p)
        except _Abort:
            return
        except BaseException as e:
            if inline:
                raise
            self.errors.append(e)  # surfaced on the caller's thread
            self.abort.set()

    def _run_one(self, fi: int, store: TensorStore, p: PartitionDesc) -> None:
        for t in p.inputs:
            self._wait(self.ready[fi][t])
        self._delay(p.lane)
        t0 = time.perf_counter()
        try:
            records = self.contexts[p.index].execute(store)
        except HetrtError:
            raise
        except Exception as e:
            raise ExecutionError(f"partition {p.name} failed on backend '{p.backend}': {type(e).__name__}: {e}") from e
        t1 = time.perf_counter()
        missing = [t for t in p.outputs if t not in store]
        if missing:
            raise ExecutionError(f"partition {p.name} ({p.lane}) did not produce {missing}")
        with self.lock:
            self.log.append(Event(fi, p.index, p.lane, t0, t1))
            self.profile.append((fi, p.index, records))
        for t in p.outputs:
            self.ready[fi][t].set()
