"""``optimal`` equals exhaustive search on seeded random DAGs, with and without constraints."""

from __future__ import annotations

import numpy as np
import pytest
from exhaustive import enumerate_metrics
from sched_cases import NO_CAP, OBJECTIVES, best_value, close

from scheduler.costgraph import DEVICES, DLA0, GPU, CostGraph, Node
from scheduler.objectives import Constraints, Objective
from scheduler.placement import PlacementError, best_single_cut, dla_first, gpu_only, optimal
from scheduler.placement.synthetic import random_dag

UNCONSTRAINED_SEEDS = range(200)


def _graph(seed: int):
    n = 5 + seed % 5  # 5..9 layers, 3 devices
    return random_dag(seed, n, identical_cores=seed % 3 != 0)


@pytest.mark.parametrize("seed", UNCONSTRAINED_SEEDS)
def test_optimal_equals_exhaustive(seed: int) -> None:
    g = _graph(seed)
    _, bm = enumerate_metrics(g)
    cons = (NO_CAP, Constraints())  # default = TensorRT's 16 loadables per core
    for objective in OBJECTIVES:
        for c in cons:
            p = optimal(g, objective, c)
            assert close(p.objective_value, best_value(bm, objective, c)), (objective, c, p.summary())


def _constraint_cases(g, bm, rng: np.random.Generator) -> list[Constraints]:
    ok = bm.valid
    lat = np.sort(bm.latency[ok])
    en = np.sort(bm.energy[ok])
    q = float(rng.uniform(0.02, 0.4))
    return [
        Constraints(max_loadables_per_core=1),
        Constraints(max_loadables_per_core=2, max_transitions=2),
        Constraints(max_loadables_per_core=None, max_transitions=1),
        Constraints(max_loadables_per_core=None, energy_budget_mj=float(en[int(q * (len(en) - 1))])),
        Constraints(max_loadables_per_core=2, deadline_ms=float(lat[int(q * (len(lat) - 1))])),
        Constraints(
            max_loadables_per_core=None,
            deadline_ms=float(lat[int(0.5 * (len(lat) - 1))]),
            energy_budget_mj=float(en[int(0.5 * (len(en) - 1))]),
        ),
        Constraints(max_transitions=0),
    ]


@pytest.mark.parametrize("seed", range(1000, 1060))
def test_constrained_optimal_equals_filtered_exhaustive(seed: int) -> None:
    rng = np.random.default_rng(seed)
    g = random_dag(seed, 5 + seed % 4, identical_cores=seed % 2 == 0)
    _, bm = enumerate_metrics(g)
    for c in _constraint_cases(g, bm, rng):
        for objective in (OBJECTIVES[0], OBJECTIVES[1], OBJECTIVES[2], OBJECTIVES[3]):
            want = best_value(bm, objective, c)
            if np.isinf(want):
                with pytest.raises(PlacementError):
                    optimal(g, objective, c)
                continue
            p = optimal(g, objective, c)
            assert close(p.objective_value, want), (objective, c, p.summary())


@pytest.mark.parametrize("seed", range(2000, 2008))
def test_larger_graphs_two_devices(seed: int) -> None:
    """12-14 layers on {gpu, dla0}: 2^14 assignments, vectorised."""
    g = random_dag(seed, 12 + seed % 3)
    _, bm = enumerate_metrics(g, (GPU, DLA0))
    for objective in OBJECTIVES:
        for c in (NO_CAP, Constraints(max_loadables_per_core=2), Constraints(max_transitions=2)):
            p = optimal(g, objective, c, devices=(GPU, DLA0))
            assert close(p.objective_value, best_value(bm, objective, c)), (objective, c)


@pytest.mark.parametrize("seed", range(3000, 3003))
def test_larger_graphs_three_devices(seed: int) -> None:
    """11-12 layers on three devices (up to 3^12 assignments) with different DLA cores."""
    g = random_dag(seed, 11 + seed % 2, identical_cores=False)
    _, bm = enumerate_metrics(g)
    for objective in (OBJECTIVES[0], OBJECTIVES[2]):
        c = Constraints(max_loadables_per_core=1)
        p = optimal(g, objective, c)
        assert close(p.objective_value, best_value(bm, objective, c))


@pytest.mark.parametrize("seed", range(4000, 4040))
def test_never_worse_than_baselines(seed: int) -> None:
    g = random_dag(seed, 10 + seed % 30)
    for objective in OBJECTIVES:
        c = Constraints()
        best = optimal(g, objective, c).objective_value
        rivals = [gpu_only(g, objective), dla_first(g, 0, objective), best_single_cut(g, objective, c)]
        for r in rivals:
            assert best <= r.objective_value * (1 + 1e-9), (objective, r.solver)


@pytest.mark.parametrize("seed", range(5000, 5010))
def test_mincut_and_milp_agree_on_40_layers(seed: int) -> None:
    """The min-cut path (identical cores, no cap) against the MILP path (forced by an inactive limit)."""
    g = random_dag(seed, 40)
    for objective in (OBJECTIVES[0], OBJECTIVES[1], OBJECTIVES[3], OBJECTIVES[2]):
        a = optimal(g, objective, NO_CAP)
        b = optimal(g, objective, Constraints(max_loadables_per_core=None, max_transitions=10_000))
        assert "min-cut" in a.solver and b.solver == "optimal[milp]"
        assert close(a.objective_value, b.objective_value, 1e-7)


def test_infeasible_requests_have_precise_errors() -> None:
    g = random_dag(7, 8)
    fastest = optimal(g, "latency", NO_CAP).latency
    with pytest.raises(PlacementError, match=r"deadline .* ms is below the fastest placement's .* ms"):
        optimal(g, "energy", Constraints(deadline_ms=fastest * 0.9))
    least = optimal(g, "energy", NO_CAP).energy
    with pytest.raises(PlacementError, match=r"energy budget .* mJ is below the minimum achievable energy"):
        optimal(g, "latency", Constraints(energy_budget_mj=least * 0.99))
    nodes = list(g.nodes)
    nodes[3] = Node(nodes[3].name, {d: None for d in DEVICES}, {}, {d: f"no {d} kernel" for d in DEVICES})
    dead = CostGraph(nodes, g.tensors, g.transition, g.static_power_w)
    with pytest.raises(PlacementError, match="cannot run on any device"):
        optimal(dead, "latency")
    only_dla = random_dag(8, 6, gpu_unsupported_prob=1.0, unsupported_fraction=(0.0, 0.0))
    with pytest.raises(PlacementError, match="structural limits"):
        optimal(only_dla, "latency", Constraints(max_loadables_per_core=0))
    with pytest.raises(PlacementError, match="gpu-only"):
        gpu_only(only_dla)


def test_deadline_error_reports_the_true_fastest_value() -> None:
    g = random_dag(11, 9)
    fastest = optimal(g, "latency", NO_CAP).latency
    with pytest.raises(PlacementError) as err:
        optimal(g, Objective.parse("edp"), Constraints(max_loadables_per_core=None, deadline_ms=fastest / 2))
    assert f"{fastest:.6g}" in str(err.value)
