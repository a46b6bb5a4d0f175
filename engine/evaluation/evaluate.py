"""Evaluate plans over a dataset and compare them with a reference model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.ir.errors import HetrtError

from .dataset import DatasetSpec, load_samples
from .metrics import EvalResult, evaluate_logits
from .workers import Job, Progress, load_job, make_shards, run_local, timed


@dataclass(frozen=True)
class EvalOptions:
    top_k: tuple[int, ...] = (1, 5)
    workers: int = 1
    cluster: str | None = None  # 'local-ray' or 'ray://host:port'
    batches_per_shard: int = 4
    output: str | None = None
    confusion: bool = False
    worst: int = 0

    def validate(self) -> None:
        if self.workers < 1:
            raise HetrtError(f"--workers must be >= 1, got {self.workers}")
        if self.batches_per_shard < 1:
            raise HetrtError(f"--shard-batches must be >= 1, got {self.batches_per_shard}")
        if not self.top_k or any(k < 1 for k in self.top_k):
            raise HetrtError(f"--top-k values must be >= 1, got {list(self.top_k)}")
        if self.worst < 0:
            raise HetrtError(f"--worst must be >= 0, got {self.worst}")


def plan_logits(plan: bytes | Job, dataset: DatasetSpec, options: EvalOptions,
                progress: Progress | None = None, engine: Any = None) -> tuple[np.ndarray, float, str]:
    """(logits of every sample, seconds, how they were computed); ``plan`` as bytes or as the
    :class:`Job` ``load_job`` made of them; ``engine``: that plan already loaded in this process
    (a single local worker then runs it without deserializing it again)."""
    if isinstance(plan, Job):
        job = plan
    else:
        job, engine = load_job(plan, dataset, options.output, engine)
    shards = make_shards(dataset.size, job.batch, options.batches_per_shard)
    if options.cluster:
        from .ray_cluster import run_ray

        logits, secs = timed(lambda: run_ray(job, shards, options.cluster, options.workers, progress))
        how = f"Ray ({options.cluster}), {options.workers} worker(s)"
    else:
        logits, secs = timed(lambda: run_local(job, shards, options.workers, progress, engine))
        how = f"{options.workers} local worker process(es)" if options.workers > 1 else "1 process"
    return logits, secs, how


def reference_logits(model: str, dataset: DatasetSpec, batch: int = 64) -> tuple[np.ndarray, str]:
    """FP32 logits of an ONNX model: ONNX Runtime on the CPU when installed (an independent
    oracle), else hetrt's FP32 build on the numpy reference backend."""
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None:
        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
        step = fixed or batch
        rows = []
        for i in range(0, dataset.size, step):
            x = load_samples(dataset, i, min(i + step, dataset.size))
            n = len(x)
            if fixed and n < fixed:
                x = np.concatenate([x, np.zeros((fixed - n, *x.shape[1:]), x.dtype)])
            rows.append(np.asarray(sess.run(None, {inp.name: x})[0], np.float32).reshape(len(x), -1)[:n])
        return np.concatenate(rows), f"ONNX Runtime (CPU, FP32) on {model}"
    from engine.builder import BuilderConfig, build_from_onnx
    from engine.ir.logger import Logger, Severity

    plan = build_from_onnx(model, BuilderConfig(batch=batch), Logger(Severity.ERROR))
    logits, _, _ = plan_logits(plan, dataset, EvalOptions())
    return logits, f"hetrt FP32 (numpy reference backend) on {model}; onnxruntime is not installed"


def evaluate(plans: Sequence[tuple[str, bytes]], dataset: DatasetSpec, options: EvalOptions | None = None,
             reference: str | None = None, progress_for: Callable[[str], Progress | None] | None = None,
             engines: Sequence[Any] | None = None) -> list[EvalResult]:
    """One :class:`EvalResult` per (name, plan bytes). ``engines``: the plans already loaded by the
    caller, in the same order (each plan is deserialized once in this process)."""
    options = options or EvalOptions()
    options.validate()
    labels = np.asarray(dataset.labels) if dataset.labels is not None else None
    if labels is None and reference is None:
        raise HetrtError("nothing to measure: give --labels (or an image folder with class sub-folders) "
                         "or --reference MODEL.onnx")
    loaded = list(engines) if engines is not None else [None] * len(plans)
    if len(loaded) != len(plans):
        raise HetrtError(f"evaluate: {len(loaded)} engines given for {len(plans)} plans")
    # every plan fits, first
    jobs = [(name, *load_job(plan, dataset, options.output, eng)) for (name, plan), eng in zip(plans, loaded)]
    ref, ref_name = reference_logits(reference, dataset) if reference else (None, "")
    names = dataset.names() if options.worst else None
    results = []
    for name, job, engine in jobs:
        logits, secs, how = plan_logits(job, dataset, options, progress_for(name) if progress_for else None,
                                        engine)
        res = evaluate_logits(name, logits, labels, options.top_k, ref, ref_name, options.confusion,
                              options.worst, names)
        res.seconds, res.workers = secs, how
        results.append(res)
    return results
