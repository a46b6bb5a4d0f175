"""Pipeline and concurrent placement against brute force on small instances."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sched_cases import close

from scheduler.costgraph import DEVICES
from scheduler.placement.concurrent import (
    NO_CONTENTION,
    ContentionModel,
    _best_schedule,
    _segment,
    concurrent,
    simulate,
)
from scheduler.placement.pipeline import pipeline, stage_times
from scheduler.placement.synthetic import random_dag


@pytest.mark.parametrize("seed", range(40))
def test_pipeline_equals_brute_force(seed: int) -> None:
    g = random_dag(seed, 5 + seed % 4)
    frames = 1 + seed % 7
    devs = DEVICES if seed % 4 else DEVICES[:2]
    best = np.inf
    n = len(g)
    for k in range(1, len(devs) + 1):
        for perm in itertools.permutations(devs, k):
            for cuts in itertools.combinations(range(1, n), k - 1):
                st = stage_times(g, list(cuts), perm)
                best = min(best, sum(st) + (frames - 1) * max(st))
    p = pipeline(g, devs, frames)
    assert close(p.makespan_ms, best)
    assert close(p.period_ms, max(s.time for s in p.stages))


def _brute_concurrent(graphs, contention, k, objective):
    per_net = []
    for i, g in enumerate(graphs):
        opts = []
        for labels in itertools.product(DEVICES, repeat=len(g)):
            switches = [j for j in range(1, len(g)) if labels[j] != labels[j - 1]]
            if len(switches) > k:
                continue
            bounds = [0, *switches, len(g)]
            segs = [
                _segment(g, i, bounds[s], bounds[s + 1], labels[bounds[s]], list(labels))
                for s in range(len(bounds) - 1)
            ]
            if all(s is not None for s in segs):
                opts.append(segs)
        per_net.append(opts)
    best = np.inf
    for combo in itertools.product(*per_net):
        best = min(best, _best_schedule(combo, contention, objective == "sum")[0])
    return best


@pytest.mark.parametrize("seed", range(12))
def test_concurrent_equals_brute_force(seed: int) -> None:
    graphs = [random_dag(100 * seed + j, 3 + (seed + j) % 2) for j in range(2)]
    contention = ContentionModel((0.5, 0.9), (1.0, 1.3, 1.8), (1.0, 1.2, 1.6))
    objective = "sum" if seed % 2 else "makespan"
    p = concurrent(graphs, contention, k=1, objective=objective, max_groups=10)
    assert close(p.objective_value, _brute_concurrent(graphs, contention, 1, objective))


@pytest.mark.parametrize("seed", range(5))
def test_simulation_without_contention_is_the_sum_of_segment_times(seed: int) -> None:
    g = random_dag(seed, 6)
    labels = [d if n.supports(d) else "gpu" for n, d in zip(g.nodes, ["dla0"] * 3 + ["gpu"] * 3)]
    cut = 3 if labels[:3] == ["dla0"] * 3 else None
    segs = (
        [_segment(g, 0, 0, 6, "gpu", ["gpu"] * 6)]
        if cut is None
        else [
            _segment(g, 0, 0, 3, "dla0", labels),
            _segment(g, 0, 3, 6, "gpu", labels),
        ]
    )
    order = {}
    for j, s in enumerate(segs):
        order.setdefault(s.device, []).append((0, j))
    lat = simulate([segs], order, NO_CONTENTION)
    assert close(lat[0], sum(s.work for s in segs))


def test_contention_slows_concurrent_segments() -> None:
    graphs = [random_dag(1, 6), random_dag(2, 6)]
    free = concurrent(graphs, NO_CONTENTION, objective="makespan")
    heavy = concurrent(graphs, ContentionModel((0.0,), (2.0, 2.0), (2.0, 2.0)), objective="makespan")
    assert heavy.objective_value >= free.objective_value - 1e-12
