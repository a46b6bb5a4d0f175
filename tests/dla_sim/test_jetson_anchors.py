"""Full hardware model on the Jetson configurations against the two measured anchors (reference
notes §3).  Only these anchors calibrate the model (``config.CALIBRATION``: DRAM share per core)."""

from __future__ import annotations

import pytest

from dla_sim import networks, simulator
from dla_sim.config import ORIN, XAVIER


def test_orin_two_cores_batch2_maxn_within_15_percent():
    r = simulator.simulate(networks.resnet50(batch=2), ORIN, timing_only=True, cores=2)
    assert r.fps == pytest.approx(2037, rel=0.15)


def test_xavier_one_core_batch32_within_15_percent():
    r = simulator.simulate(networks.resnet50(batch=32), XAVIER, timing_only=True, cores=1)
    assert r.fps == pytest.approx(396, rel=0.15)


def test_lower_power_modes_are_slower():
    net = networks.resnet50(batch=2)
    fast = simulator.simulate(net, ORIN, timing_only=True, cores=2).fps
    slow = simulator.simulate(net, ORIN.with_mode("15W"), timing_only=True, cores=2).fps
    assert slow < fast


def test_two_cores_beat_one():
    net = networks.resnet50(batch=2)
    one = simulator.simulate(net, ORIN, timing_only=True, cores=1).fps
    two = simulator.simulate(net, ORIN, timing_only=True, cores=2).fps
    assert two > 1.5 * one
