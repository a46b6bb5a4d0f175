"""The run-penalty min-cut and the Lagrangian certificate for loadable caps, against enumeration."""

from __future__ import annotations

import numpy as np
import pytest
from exhaustive import enumerate_metrics
from sched_cases import close

from scheduler.costgraph import DLA0, DLA1, GPU
from scheduler.objectives import Constraints, evaluate
from scheduler.placement import optimal
from scheduler.placement.lagrange import CappedLagrangian, free_split
from scheduler.placement.mincut import min_cut_placement
from scheduler.placement.synthetic import random_dag, resnet_like


@pytest.mark.parametrize("seed", range(20))
def test_run_penalty_min_cut_equals_enumeration(seed: int) -> None:
    """min f + mu * (DLA runs) over {gpu, dla0}: the extra arcs price every run start exactly."""
    g = random_dag(600 + seed, 8 + seed % 4)
    rows, bm = enumerate_metrics(g, (GPU, DLA0))
    w_time, w_energy = (1.0, 0.0) if seed % 2 else (0.3, 1.0)
    mu = float(np.random.default_rng(seed).uniform(0.05, 3.0))
    f_all = w_time * bm.latency + w_energy * bm.energy + mu * bm.loadables[:, 0]
    devs = min_cut_placement(g, GPU, DLA0, w_time, w_energy, mu)
    m = evaluate(g, devs)
    assert close(w_time * m.latency + w_energy * m.energy + mu * m.loadables[DLA0], float(np.min(f_all[bm.valid])))


def test_free_split_keeps_the_cost_and_meets_the_cap() -> None:
    checked = 0
    for seed in range(10):
        g = resnet_like(seed, 80)
        devs = min_cut_placement(g, GPU, DLA0, 0.0, 1.0)
        runs = evaluate(g, devs).loadables[DLA0]
        cap = (runs + 1) // 2
        split = free_split(g, devs, cap)
        if split is None:
            continue  # the groups cannot be packed; the MILP handles such cases
        a, b = evaluate(g, devs), evaluate(g, split)
        assert close(a.latency, b.latency) and close(a.energy, b.energy)
        assert b.loadables[DLA0] <= cap and b.loadables[DLA1] <= cap and b.transitions == a.transitions
        checked += 1
    assert checked >= 5


def test_lagrangian_certificates_are_used_and_exact() -> None:
    """On capped 60-layer networks the certified answers equal the MILP's (forced by an inactive limit)."""
    certified = 0
    for seed in range(6):
        g = resnet_like(20 + seed, 60)
        for objective in ("energy", "latency+0.1*energy"):
            for cap in (2, 4):
                c = Constraints(max_loadables_per_core=cap)
                p = optimal(g, objective, c)
                ref = optimal(g, objective, Constraints(max_loadables_per_core=cap, max_transitions=10_000))
                assert ref.solver == "optimal[milp]"
                assert close(p.objective_value, ref.objective_value, 1e-7), (seed, objective, cap, p.solver)
                certified += p.solver == "optimal[lagrangian]"
    assert certified >= 6  # the certificate, not the MILP, settles most of these


@pytest.mark.parametrize("seed", range(8))
def test_one_core_budget_is_the_cap(seed: int) -> None:
    """Two usable devices: the run budget is the cap itself; answers equal enumeration."""
    g = random_dag(700 + seed, 12).subgraph_devices((GPU, DLA0))
    _, bm = enumerate_metrics(g, (GPU, DLA0))
    for cap in (1, 2):
        c = Constraints(max_loadables_per_core=cap)
        ok = bm.feasible(c)
        want = float(np.min(bm.energy[ok]))
        assert close(optimal(g, "energy", c).objective_value, want)
    lag = CappedLagrangian(g, (GPU, DLA0), 1, two_cores=False)
    devs = lag.solve(0.0, 1.0)
    if devs is not None:  # a certificate is an optimum
        assert close(evaluate(g, devs).energy, float(np.min(bm.energy[bm.feasible(Constraints(1))])))
