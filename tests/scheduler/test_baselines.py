"""gpu-only, TensorRT's DLA-first default (with its 16-loadable rule), best single cut."""

from __future__ import annotations

import itertools

import pytest
from sched_cases import OBJECTIVES, close

from scheduler.costgraph import DEVICES, DLA0, GPU
from scheduler.objectives import Constraints, evaluate
from scheduler.placement import best_single_cut, dla_first, gpu_only
from scheduler.placement.synthetic import random_dag


@pytest.mark.parametrize("seed", range(10))
def test_dla_first_places_every_capable_layer_on_the_dla_and_logs_the_rest(seed: int) -> None:
    g = random_dag(seed, 20)
    p = dla_first(g, 0, max_loadables=1000)
    for n in g.nodes:
        if n.supports(DLA0):
            assert p.devices[n.name] == DLA0
        else:
            assert p.devices[n.name] == GPU
            assert any(n.name in m and n.why_not(DLA0) in m for m in p.messages)


@pytest.mark.parametrize("seed", range(10))
def test_dla_first_loadable_cap_falls_back_in_execution_order(seed: int) -> None:
    g = random_dag(seed, 60, unsupported_fraction=(0.3, 0.4))
    free = dla_first(g, 0, max_loadables=1000)
    runs = free.loadables[DLA0]
    cap = max(1, runs // 2)
    p = dla_first(g, 0, max_loadables=cap)
    assert p.loadables[DLA0] == min(runs, cap)
    moved = [n.name for n in g.nodes if free.devices[n.name] == DLA0 and p.devices[n.name] == GPU]
    assert len([m for m in p.messages if "subgraphs per DLA core" in m]) == len(moved)
    # the kept layers are exactly those of the first `cap` runs in execution order
    order = [g.index[name] for name in moved]
    kept = [i for i, n in enumerate(g.nodes) if p.devices[n.name] == DLA0]
    if order and kept:
        assert max(kept) < min(order)


@pytest.mark.parametrize("seed", range(15))
def test_best_single_cut_beats_every_single_switch_placement(seed: int) -> None:
    g = random_dag(seed, 9)
    for objective in OBJECTIVES:
        p = best_single_cut(g, objective, Constraints())
        devs = p.device_list(g)
        assert sum(devs[i] != devs[i - 1] for i in range(1, len(devs))) <= 1
        for cut in range(len(g) + 1):
            for a, b in itertools.product(DEVICES, repeat=2):
                cand = [a] * cut + [b] * (len(g) - cut)
                if all(n.supports(d) for n, d in zip(g.nodes, cand)):
                    m = evaluate(g, cand)
                    assert p.objective_value <= objective.value(m.latency, m.energy) * (1 + 1e-12)


def test_gpu_only_equals_sum_of_gpu_times() -> None:
    g = random_dag(3, 15)
    p = gpu_only(g)
    assert close(p.latency, sum(n.time[GPU] for n in g.nodes), 1e-12)
    assert p.transitions == 0 and all(d == GPU for d in p.devices.values())
