"""The objective code: scalar and vectorised evaluation agree; transfers are per destination device."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.costgraph import (
    DEVICE_INDEX,
    DEVICES,
    DLA0,
    DLA1,
    GPU,
    CostGraph,
    LinkCost,
    Node,
    Tensor,
    TransitionTable,
)
from scheduler.objectives import Constraints, Objective, count_runs, evaluate, evaluate_many
from scheduler.placement.synthetic import random_dag


@pytest.mark.parametrize("seed", range(20))
def test_scalar_and_vectorised_evaluation_agree(seed: int) -> None:
    g = random_dag(seed, 12, identical_cores=seed % 2 == 0)
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(50):
        rows.append([DEVICE_INDEX[n.allowed[rng.integers(len(n.allowed))]] for n in g.nodes])
    rows = np.array(rows, dtype=np.int8)
    bm = evaluate_many(g, rows)
    for r, row in enumerate(rows):
        m = evaluate(g, [DEVICES[i] for i in row])
        assert m.latency == pytest.approx(bm.latency[r], rel=1e-12)
        assert m.energy == pytest.approx(bm.energy[r], rel=1e-12)
        assert m.transitions == bm.transitions[r]
        assert [m.loadables[DLA0], m.loadables[DLA1]] == list(bm.loadables[r])
        assert m.loadables[DLA0] == count_runs(list(row), DEVICE_INDEX[DLA0])


def _fanout_graph(seed: int) -> CostGraph:
    rng = np.random.default_rng(seed)
    nodes = [
        Node(
            f"n{i}", {d: float(rng.uniform(0.1, 1)) for d in DEVICES}, {d: float(rng.uniform(0.1, 1)) for d in DEVICES}
        )
        for i in range(4)
    ]
    tensors = [Tensor("x", "n0", ("n1", "n2", "n3"), int(rng.integers(1000, 100000)))]
    link = LinkCost(float(rng.uniform(0.01, 0.1)), 1e-6, 0.02, 1e-6)
    link2 = LinkCost(float(rng.uniform(0.01, 0.1)), 2e-6, 0.03, 2e-6)
    return CostGraph(nodes, tensors, TransitionTable(link, link2), {GPU: 1.0})


@pytest.mark.parametrize("seed", range(5))
def test_fanout_tensor_is_moved_once_per_destination(seed: int) -> None:
    g = _fanout_graph(seed)
    b = g.tensors[0].nbytes
    base = evaluate(g, [GPU, GPU, GPU, GPU])
    two_on_dla = evaluate(g, [GPU, DLA0, DLA0, GPU])
    both_cores = evaluate(g, [GPU, DLA0, DLA1, GPU])
    node_delta = sum(g.nodes[i].time[DLA0] - g.nodes[i].time[GPU] for i in (1, 2))
    assert two_on_dla.latency - base.latency == pytest.approx(node_delta + g.transfer(b, GPU, DLA0)[0])
    assert two_on_dla.transitions == 1
    node_delta2 = g.nodes[1].time[DLA0] + g.nodes[2].time[DLA1] - g.nodes[1].time[GPU] - g.nodes[2].time[GPU]
    assert both_cores.latency - base.latency == pytest.approx(
        node_delta2 + g.transfer(b, GPU, DLA0)[0] + g.transfer(b, GPU, DLA1)[0]
    )
    assert both_cores.transitions == 2
    # energy = dynamic + static power x latency
    assert base.energy == pytest.approx(base.dynamic_energy + g.static_power * base.latency)


def test_dla_to_dla_costs_a_round_trip_through_dram() -> None:
    a, b = LinkCost(0.01, 1e-6, 0.02, 2e-6), LinkCost(0.03, 3e-6, 0.05, 5e-6)
    tab = TransitionTable(gpu_to_dla=a, dla_to_gpu=b)
    nbytes = 4096
    assert tab(nbytes, DLA0, DLA1)[0] == pytest.approx(tab(nbytes, DLA0, GPU)[0] + tab(nbytes, GPU, DLA1)[0])
    assert tab(nbytes, DLA1, DLA1) == (0.0, 0.0)
    assert tab(nbytes, GPU, DLA0) != tab(nbytes, DLA0, GPU)


def test_objective_parsing_and_constraint_validation() -> None:
    o = Objective.parse("latency + 0.25*energy")
    assert o.linear_weights() == (1.0, 0.25)
    assert Objective.parse("edp").linear_weights() is None
    with pytest.raises(ValueError):
        Constraints(max_transitions=-1)
    with pytest.raises(ValueError):
        Constraints(deadline_ms=0.0)
