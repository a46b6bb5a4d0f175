"""Placement policies by name, over a cost model: what the builder, ``hetrt place`` and sweeps call.

``gpu-only``; ``dla-first`` (TensorRT's default with GPU fallback and the 16-loadables-per-core cap);
``best-single-cut`` (AxoNN/HaX-CoNN style); ``optimal`` (exact: min-cut / MILP, see
``scheduler.placement``); the solver functions live in ``scheduler.placement``. The throughput
schedules are elsewhere: ``pipeline`` (stages for a stream of frames; the builder takes it, see
``scheduler.plan_placement``) and ``concurrent`` (several networks; ``hetrt place A B --policy
concurrent``), both reported by ``scheduler.studies.throughput_report``.
"""

from __future__ import annotations

from engine.ir.errors import BuildError

from .cost import CostModel
from .objectives import Constraints, Objective
from .placement import PlacementError, best_single_cut, dla_first, gpu_only, optimal
from .placement.result import Placement

POLICIES = ("gpu-only", "dla-first", "best-single-cut", "optimal")


def parse_objective(objective: str, lam: float | None = None) -> Objective:
    spec = str(objective).strip().lower()
    try:
        if spec == "weighted":
            return Objective("weighted", lam if lam is not None else 1.0)
        return Objective.parse(spec)
    except ValueError:
        raise BuildError(f"unknown objective '{objective}'; use latency, energy, edp or weighted (with --lambda)") \
            from None


def run_policy(policy: str, model: CostModel, objective: str | Objective = "latency",
               constraints: Constraints | None = None, core: int = 0, lam: float | None = None) -> Placement:
    obj = objective if isinstance(objective, Objective) else parse_objective(objective, lam)
    g = model.graph
    try:
        if policy == "gpu-only":
            return gpu_only(g, obj)
        if policy == "dla-first":
            return dla_first(g, core=core, objective=obj)
        if policy == "best-single-cut":
            return best_single_cut(g, obj, constraints)
        if policy == "optimal":
            return optimal(g, obj, constraints)
    except PlacementError as e:
        raise BuildError(f"placement '{policy}' failed: {e}") from None
    raise BuildError(f"unknown placement policy '{policy}'; known: {', '.join(POLICIES)}")
