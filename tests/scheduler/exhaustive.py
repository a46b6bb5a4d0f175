"""Exhaustive search over every device assignment (small graphs only; the tests' oracle).

Enumerates the Cartesian product of each layer's usable devices and evaluates all of them with
``scheduler.objectives.evaluate_many`` (the vectorised form of the objective code), in chunks.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np

from scheduler.costgraph import DEVICE_INDEX, DEVICES, CostGraph
from scheduler.objectives import BatchMetrics, Constraints, Objective, evaluate_many
from scheduler.placement.result import Placement, PlacementError, make_placement

MAX_ASSIGNMENTS = 6_000_000
_CHUNK = 200_000


def all_assignments(choices: list[list[int]], start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of the Cartesian product of ``choices`` (mixed-radix counting)."""
    k = np.arange(start, stop, dtype=np.int64)
    out = np.empty((len(k), len(choices)), dtype=np.int8)
    for j in range(len(choices) - 1, -1, -1):
        r = len(choices[j])
        out[:, j] = np.asarray(choices[j], dtype=np.int8)[k % r]
        k //= r
    return out


def enumerate_metrics(g: CostGraph, devices: Iterable[str] = DEVICES) -> tuple[np.ndarray, BatchMetrics]:
    """Every assignment of ``g`` over ``devices`` and its metrics (for tests that ask many questions)."""
    allowed = set(devices)
    choices = [[DEVICE_INDEX[d] for d in n.allowed if d in allowed] for n in g.nodes]
    total = int(np.prod([len(c) for c in choices], dtype=np.int64))
    if total > MAX_ASSIGNMENTS:
        raise ValueError(f"{total} assignments are too many for exhaustive search")
    rows = all_assignments(choices, 0, total)
    return rows, evaluate_many(g, rows)


def exhaustive(
    g: CostGraph,
    objective: Objective | str = "latency",
    constraints: Constraints | None = None,
    devices: Iterable[str] = DEVICES,
) -> Placement:
    """Best assignment by enumeration; raises PlacementError when none is feasible."""
    objective = Objective.parse(objective)
    constraints = constraints or Constraints()
    allowed = set(devices)
    t0 = time.perf_counter()
    choices = [[DEVICE_INDEX[d] for d in n.allowed if d in allowed] for n in g.nodes]
    total = int(np.prod([len(c) for c in choices], dtype=np.int64))
    if total == 0:
        raise PlacementError("some layer cannot run on any allowed device")
    if total > MAX_ASSIGNMENTS:
        raise ValueError(f"{total} assignments are too many for exhaustive search")
    best_val = np.inf
    best_row: np.ndarray | None = None
    for start in range(0, total, _CHUNK):
        rows = all_assignments(choices, start, min(total, start + _CHUNK))
        bm = evaluate_many(g, rows)
        val = np.where(bm.feasible(constraints), objective.value(bm.latency, bm.energy), np.inf)
        i = int(np.argmin(val))
        if val[i] < best_val:
            best_val, best_row = float(val[i]), rows[i].copy()
    if best_row is None:
        raise PlacementError(f"no placement meets {constraints}")
    devs = [DEVICES[i] for i in best_row]
    return make_placement(g, devs, objective, "exhaustive", time.perf_counter() - t0, constraints=constraints)
