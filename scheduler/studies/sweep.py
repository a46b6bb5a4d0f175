"""``hetrt sweep``: the latency-energy Pareto front over objectives, lambda and power modes.

One task per power mode runs in its own process (``concurrent.futures.ProcessPoolExecutor``): it
builds the cost model once and solves the exact placement for every objective (latency, energy,
EDP, latency + lambda x energy for each lambda), plus gpu-only, dla-first and best-single-cut. The
front is the set of non-dominated (latency, energy) points over all modes; a point is a placement
at a power mode. Every point is the exact optimum of its objective under the sequential model.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from engine.ir.dtypes import Precision
from engine.ir.network import Network

from ..cost import build_cost_model, is_pseudo
from ..policies import parse_objective, run_policy


@dataclass(frozen=True)
class Point:
    power_mode: str
    policy: str
    objective: str
    latency_ms: float
    energy_mj: float
    transitions: int
    dla_layers: int
    devices: dict

    def to_dict(self) -> dict:
        return {"power_mode": self.power_mode, "policy": self.policy, "objective": self.objective,
                "latency_ms": self.latency_ms, "energy_mj": self.energy_mj, "edp": self.latency_ms * self.energy_mj,
                "transitions": self.transitions, "dla_layers": self.dla_layers, "devices": self.devices}


def _point(mode: str, policy: str, p) -> Point:
    devs = {k: v for k, v in p.devices.items() if not is_pseudo(k)}
    return Point(mode, policy, p.objective, p.latency, p.energy, p.transitions,
                 sum(1 for v in devs.values() if v != "gpu"), devs)


def sweep_mode(load_network: Callable[[str], Network], model_spec: str, platform: str, mode: str, precision: str,
               objectives: Sequence[str], lambdas: Sequence[float]) -> list[Point]:
    """All points of one power mode (runs in a worker process; ``load_network`` must be picklable)."""
    net = load_network(model_spec)
    model = build_cost_model(net, platform, mode, Precision(precision))
    pts = []
    for pol in ("gpu-only", "dla-first", "best-single-cut"):
        pts.append(_point(mode, pol, run_policy(pol, model, "latency")))
    specs = [o for o in objectives if o != "weighted"]
    if "weighted" in objectives:
        specs += [f"latency+{lam:g}*energy" for lam in lambdas]
    for spec in specs:
        pts.append(_point(mode, "optimal", run_policy("optimal", model, parse_objective(spec))))
    return pts


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """Non-dominated points (no other point has <= latency and <= energy with one strictly less)."""
    pts = sorted(points, key=lambda p: (p.latency_ms, p.energy_mj))
    front: list[Point] = []
    best_e = float("inf")
    for p in pts:
        if p.energy_mj < best_e - 1e-12:
            front.append(p)
            best_e = p.energy_mj
    return front


def dominated_or_on_front(p: Point, front: Sequence[Point]) -> bool:
    """True when some front point is at least as good as ``p`` in both latency and energy."""
    return any(q.latency_ms <= p.latency_ms * (1 + 1e-9) and q.energy_mj <= p.energy_mj * (1 + 1e-9) for q in front)


def run_sweep(load_network: Callable[[str], Network], model_spec: str, platform: str, modes: Sequence[str],
              precision: str,
              objectives: Sequence[str] = ("latency", "energy", "edp", "weighted"),
              lambdas: Sequence[float] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
              workers: int | None = None, map_tasks: Callable | None = None,
              progress: Callable[[], None] | None = None) -> dict:
    """Every point of every power mode. ``map_tasks(fn, list of argument tuples)`` runs the per-mode
    tasks elsewhere (e.g. on a Ray cluster) and returns their results in order; ``progress()`` is
    called once per finished power mode."""
    workers = workers or max(1, min(len(modes), os.cpu_count() or 1))
    args = {m: (load_network, model_spec, platform, m, precision, tuple(objectives), tuple(lambdas)) for m in modes}
    done: dict[str, list[Point]] = {}
    if map_tasks is not None:
        done.update(zip(modes, map_tasks(sweep_mode, [args[m] for m in modes])))
    elif workers == 1:
        for m in modes:
            done[m] = sweep_mode(*args[m])
            if progress:
                progress()
    else:
        # 'spawn': forking a process that has started threads (BLAS, JAX) can deadlock the child
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futs = {pool.submit(sweep_mode, *args[m]): m for m in modes}
            for f in as_completed(futs):
                done[futs[f]] = f.result()
                if progress:
                    progress()
    per_mode = [done[m] for m in modes]
    points = [p for group in per_mode for p in group]
    front = pareto_front(points)
    return {"model": model_spec, "platform": platform, "precision": precision, "power_modes": list(modes),
            "objectives": list(objectives), "lambdas": list(lambdas), "clock": "simulated target",
            "points": [p.to_dict() for p in points], "front": [p.to_dict() for p in front],
            "_points": points, "_front": front}
