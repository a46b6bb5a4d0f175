"""Every optimizer pass, alone and in the full pipeline, keeps the outputs of seeded random
networks (residual, concat and multi-branch DAGs) equal to fp32 rel 1e-5."""

from __future__ import annotations

from collections import Counter
from functools import cache

import pytest
from netgen import assert_equivalent, random_network

from engine.ir.network import Network
from engine.optimizer import DEFAULT_PIPELINE, optimize

SEEDS = range(24)
STAGES = [s.name for s in DEFAULT_PIPELINE if s.name != "final_dead_layer_removal"]  # same pass as dead_layer_removal


@cache
def network(seed: int) -> Network:
    return random_network(seed)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("stage", STAGES)
def test_single_pass_keeps_outputs(stage: str, seed: int) -> None:
    net = network(seed)
    report = optimize(net, passes=[stage], debug=True)
    assert_equivalent(net, report.network, seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_full_pipeline_keeps_outputs(seed: int) -> None:
    net = network(seed)
    report = optimize(net, debug=True)
    assert report.rewrites, "the pipeline found nothing to do on a network full of fusable patterns"
    assert len(report.network.layers) < len(net.layers)
    assert_equivalent(net, report.network, seed)


@pytest.mark.parametrize("seed", range(8))
def test_pipeline_reruns_exactly(seed: int) -> None:
    """Optimizing an optimized network (fused layers, in-place concats, merged convs) stays exact
    and never undoes or repeats work: no layer comes back and no in-place concat is spoiled."""
    once = optimize(network(seed)).network
    twice = optimize(once, debug=True)
    assert len(twice.network.layers) <= len(once.layers)
    assert not [r for r in twice.rewrites if r.action in ("merge", "restore")]
    assert_equivalent(once, twice.network, seed)


def test_random_networks_exercise_every_pass() -> None:
    """The equivalence tests above are only meaningful if the passes actually rewrite these networks."""
    fired: Counter[str] = Counter()
    for seed in SEEDS:
        for stage in STAGES:
            if optimize(network(seed), passes=[stage]).rewrites:
                fired[stage] += 1
    assert set(fired) == set(STAGES), f"passes never exercised: {set(STAGES) - set(fired)}"
    assert all(n >= 3 for n in fired.values()), fired


def test_input_network_is_not_modified() -> None:
    net = network(0)
    before = [(la.name, la.kind, tuple(la.inputs), tuple(la.outputs)) for la in net.layers]
    tensors = dict(net.tensors)
    optimize(net)
    assert [(la.name, la.kind, tuple(la.inputs), tuple(la.outputs)) for la in net.layers] == before
    assert set(net.tensors) == set(tensors)
    net.validate()
