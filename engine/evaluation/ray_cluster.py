"""Shard a dataset over Ray workers (``hetrt eval --cluster ray://HOST:PORT`` or ``local-ray``).

Each Ray actor deserializes the plan once from the bytes in Ray's object store (plans are data:
nothing but bytes and a dataset description is shipped). Shards go to actors round-robin as they
free up; a shard whose actor dies (killed worker, lost node) is resubmitted to another live actor,
up to ``retries`` times, and a dead actor is replaced. Results are keyed by shard, so the logits
equal those of a single-process run bit for bit. Ray is an optional extra (``hetrt[cluster]``),
imported only here.
"""

from __future__ import annotations

import numpy as np

from engine.ir.errors import HetrtError

from .workers import Job, Progress, Shard, ShardRunner


def _ray():
    try:
        import ray
    except ImportError:
        raise HetrtError("--cluster needs Ray: pip install 'hetrt[cluster]'") from None
    return ray


def connect(address: str, workers: int) -> bool:
    """Join the cluster at ``address`` ('local-ray' starts one here); True when this call started Ray."""
    ray = _ray()
    if ray.is_initialized():
        return False
    try:
        if address == "local-ray":
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError ... for a bad address
        raise HetrtError(f"--cluster {address}: cannot connect to Ray: {e}") from None
    return True


def run_ray(job: Job, shards: list[Shard], address: str, workers: int, progress: Progress | None = None,
            retries: int = 3) -> np.ndarray:
    """Logits of every sample computed by ``workers`` Ray actors."""
    ray = _ray()
    started = connect(address, workers)
    try:
        actor_cls = ray.remote(num_cpus=1, max_restarts=0)(ShardRunner)
        job_ref = ray.put(job)
        actors = [actor_cls.remote(job_ref) for _ in range(max(1, workers))]
        results: dict[int, np.ndarray] = {}
        attempts = {s.index: 0 for s in shards}
        queue = list(shards)
        running: dict = {}  # object ref -> (shard, actor)
        idle = list(actors)
        while queue or running:
            while queue and idle:
                shard, actor = queue.pop(0), idle.pop(0)
                running[actor.run.remote(shard)] = (shard, actor)
            done, _ = ray.wait(list(running), num_returns=1)
            ref = done[0]
            shard, actor = running.pop(ref)
            try:
                results[shard.index] = ray.get(ref)
                idle.append(actor)
                if progress:
                    progress(len(results), len(shards))
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                    ray.exceptions.ObjectLostError) as e:
                attempts[shard.index] += 1
                if attempts[shard.index] > retries:
                    raise HetrtError(f"shard {shard.index} (samples {shard.start}..{shard.stop - 1}) failed "
                                     f"{attempts[shard.index]} times on Ray; last error: {type(e).__name__}") from None
                queue.insert(0, shard)
                idle.append(actor_cls.remote(job_ref))  # replace the dead actor
            except ray.exceptions.RayTaskError as e:  # the shard itself failed: not a lost worker
                cause = e.cause if isinstance(getattr(e, "cause", None), HetrtError) else None
                raise (cause or HetrtError(f"shard {shard.index} failed on Ray: {e}")) from None
        return np.concatenate([results[s.index] for s in shards])
    finally:
        if started:
            ray.shutdown()


def ray_map(address: str, workers: int):
    """A ``map_tasks(fn, argument tuples)`` that runs each call as a Ray task (with Ray's own
    retries of lost tasks) and returns the results in order; for ``hetrt sweep --cluster``."""

    def map_tasks(fn, arg_tuples):
        ray = _ray()
        started = connect(address, workers)
        try:
            remote = ray.remote(num_cpus=1, max_retries=3)(fn)
            return ray.get([remote.remote(*args) for args in arg_tuples])
        finally:
            if started:
                ray.shutdown()

    return map_tasks
