"""Shared helpers for the placement tests: seeded graphs and exhaustive optima."""

from __future__ import annotations

import numpy as np

from scheduler.objectives import BatchMetrics, Constraints, Objective

OBJECTIVES = (
    Objective.parse("latency"),
    Objective.parse("energy"),
    Objective.parse("edp"),
    Objective.parse("latency+0.05*energy"),
    Objective.parse("latency+2*energy"),
)

NO_CAP = Constraints(max_loadables_per_core=None)


def best_value(bm: BatchMetrics, objective: Objective, constraints: Constraints) -> float:
    """Exhaustive optimum (inf when nothing is feasible)."""
    ok = bm.feasible(constraints)
    if not ok.any():
        return float("inf")
    return float(np.min(objective.value(bm.latency, bm.energy)[ok]))


def close(a: float, b: float, rtol: float = 1e-9) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-300)
