"""Run one plan over a dataset: in this process, in local worker processes, or on Ray.

The dataset is cut into shards of whole batches of the plan's batch size; only the very last batch
is padded (with zeros, its extra rows dropped). Every batch therefore has the same contents and
shape whoever runs it, so the logits — and every metric — are bit-identical for 1 worker, N local
workers and a Ray cluster. Workers receive the plan's bytes (never a pickled engine) and the
dataset's description, load the plan once, and return logits per shard.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.ir.errors import ExecutionError, HetrtError

from .dataset import DatasetSpec, load_samples

Progress = Callable[[int, int], None]  # (shards done, shards in all)


@dataclass(frozen=True)
class Job:
    """Everything a worker needs: the plan, which tensors to feed and read, and the data."""

    plan: bytes
    dataset: DatasetSpec
    input_name: str
    output_name: str
    batch: int


@dataclass(frozen=True)
class Shard:
    index: int
    start: int
    stop: int


def make_shards(samples: int, batch: int, batches_per_shard: int) -> list[Shard]:
    """Contiguous sample ranges made of whole batches (the last one may end early)."""
    if samples <= 0:
        raise HetrtError("the dataset has no samples")
    step = batch * max(1, batches_per_shard)
    return [Shard(i, s, min(s + step, samples)) for i, s in enumerate(range(0, samples, step))]


class ShardRunner:
    """Holds one engine and one execution context; runs shards of a job."""

    def __init__(self, job: Job, engine: Any = None) -> None:
        """``engine``: the job's plan already loaded in this process (not deserialized again)."""
        self.job = job
        self.engine = engine if engine is not None else _load(job.plan)
        self.context = self.engine.create_execution_context()

    def run(self, shard: Shard) -> np.ndarray:
        x = load_samples(self.job.dataset, shard.start, shard.stop)
        b = self.job.batch
        rows = []
        for i in range(0, len(x), b):
            chunk = x[i:i + b]
            n = len(chunk)
            if n < b:
                chunk = np.concatenate([chunk, np.zeros((b - n, *chunk.shape[1:]), chunk.dtype)])
            out = self.context.execute({self.job.input_name: np.ascontiguousarray(chunk)})[self.job.output_name]
            rows.append(np.asarray(out, dtype=np.float32).reshape(b, -1)[:n])
        return np.concatenate(rows)

    def pid(self) -> int:
        import os

        return os.getpid()


def _load(plan: bytes) -> Any:
    from engine.ir.logger import Logger, Severity
    from engine.runtime import Runtime

    return Runtime(Logger(Severity.ERROR)).deserialize(plan)


def job_for(plan: bytes, dataset: DatasetSpec, output: str | None = None) -> Job:
    """Check that the plan fits the dataset (one input of the samples' shape) and pick its output."""
    return load_job(plan, dataset, output)[0]


def load_job(plan: bytes, dataset: DatasetSpec, output: str | None = None, engine: Any = None) -> tuple[Job, Any]:
    """``job_for`` that also returns the loaded engine, so this process runs the plan without
    deserializing it again; ``engine``: the plan already loaded by the caller."""
    engine = engine if engine is not None else _load(plan)
    if len(engine.input_names) != 1:
        raise ExecutionError(f"hetrt eval feeds one input; the plan has {len(engine.input_names)}: "
                             f"{', '.join(engine.input_names)}")
    name = engine.input_names[0]
    shape = engine.get_tensor_shape(name)
    outputs = engine.output_names
    if output is None:
        output = outputs[0]
    elif output not in outputs:
        raise ExecutionError(f"--output {output}: the plan's outputs are {', '.join(outputs)}")
    sample = load_samples(dataset, 0, 1)
    if tuple(sample.shape[1:]) != tuple(shape[1:]):
        raise ExecutionError(f"dataset samples have shape {tuple(sample.shape[1:])}, plan input '{name}' takes "
                             f"{tuple(shape[1:])} per sample (batch {shape[0]})")
    return Job(plan, dataset, name, output, int(shape[0])), engine


_RUNNER: ShardRunner | None = None


def _init_process(job: Job) -> None:
    global _RUNNER
    _RUNNER = ShardRunner(job)


def _run_in_process(shard: Shard) -> tuple[int, np.ndarray]:
    assert _RUNNER is not None
    return shard.index, _RUNNER.run(shard)


def run_local(job: Job, shards: list[Shard], workers: int = 1, progress: Progress | None = None,
              engine: Any = None) -> np.ndarray:
    """Logits of every sample, from this process (1 worker; ``engine``: the plan already loaded
    here) or ``workers`` spawned processes (each loads the plan once)."""
    results: dict[int, np.ndarray] = {}
    if workers <= 1:
        runner = ShardRunner(job, engine)
        for s in shards:
            results[s.index] = runner.run(s)
            if progress:
                progress(len(results), len(shards))
    else:
        ctx = multiprocessing.get_context("spawn")  # forking a process with BLAS threads can deadlock
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_process, initargs=(job,)) as pool:
            for index, logits in pool.map(_run_in_process, shards):
                results[index] = logits
                if progress:
                    progress(len(results), len(shards))
    return np.concatenate([results[s.index] for s in shards])


def timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0
