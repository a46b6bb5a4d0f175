"""On every bundled model, `optimal` is never worse than gpu-only, dla-first or the best single cut.

The cost graphs are the real ones: DLA costs from dla_sim through backends.dla, GPU costs from the
platform's roofline model, hand-offs from the transition model.
"""

from __future__ import annotations

import pytest

from engine.model_loading import load_network
from engine.models import model_names
from scheduler.cost import build_cost_model
from scheduler.policies import run_policy

CASES = [("orin-agx-64gb", "30W", "int8"), ("orin-agx-64gb", "MAXN", "fp16"), ("xavier-agx", "MAXN", "int8")]


@pytest.fixture(scope="module", params=model_names())
def network(request):
    return load_network(request.param)


@pytest.mark.parametrize("platform,mode,precision", CASES)
def test_optimal_never_worse_than_the_baselines(network, platform, mode, precision):
    model = build_cost_model(network, platform, mode, precision)
    for objective in ("latency", "energy", "edp"):
        best = run_policy("optimal", model, objective).objective_value
        for baseline in ("gpu-only", "dla-first", "best-single-cut"):
            other = run_policy(baseline, model, objective).objective_value
            assert best <= other * (1 + 1e-9), (network.name, platform, mode, precision, objective, baseline)
