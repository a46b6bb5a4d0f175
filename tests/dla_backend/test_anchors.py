"""The two measured anchors of the reference notes §3 through the path users' networks take: the
bundled ResNet-50 ONNX model -> parser -> optimizer -> DLA lowering -> dla_sim. Only these anchors
calibrate the model (``dla_sim.config.CALIBRATION``: DRAM share per core)."""

from __future__ import annotations

import pytest

from backends.dla.throughput import network_throughput
from dla_sim.config import ORIN, XAVIER
from engine.model_loading import load_network


@pytest.fixture(scope="module")
def resnet50_b2():
    return load_network("resnet50", 2)


def test_orin_two_cores_batch2_maxn_within_5_percent(resnet50_b2):
    r = network_throughput(resnet50_b2, "int8", ORIN, cores=2)
    assert r.fps == pytest.approx(2037, rel=0.05)


def test_xavier_one_core_batch32_within_5_percent():
    r = network_throughput(load_network("resnet50", 32), "int8", XAVIER, cores=1)
    assert r.fps == pytest.approx(396, rel=0.05)


def test_first_convolution_reads_the_image_input(resnet50_b2):
    """kDLA_HWC4 image input for the 3-channel stem, not direct mode at 3/64 of the atom; it stays a
    small share of the network's DLA time."""
    from backends.dla.lower import lower
    from dla_sim.ops import ConvOp

    ops = lower(resnet50_b2, [la.name for la in resnet50_b2.layers], "int8", ORIN, with_weights=False).ops
    convs = [op for op in ops if isinstance(op, ConvOp)]
    assert convs[0].mode == "image" and all(op.mode != "image" for op in convs[1:])
    r = network_throughput(resnet50_b2, "int8", ORIN, cores=2)
    stem = next(rec for rec in r.result.records if rec.name == convs[0].name)
    assert stem.duration < 0.1 * r.result.cycles


def test_lower_power_modes_are_slower(resnet50_b2):
    fast = network_throughput(resnet50_b2, "int8", ORIN, cores=2).fps
    slow = network_throughput(resnet50_b2, "int8", ORIN.with_mode("15W"), cores=2).fps
    assert slow < fast


def test_two_cores_beat_one(resnet50_b2):
    one = network_throughput(resnet50_b2, "int8", ORIN, cores=1).fps
    two = network_throughput(resnet50_b2, "int8", ORIN, cores=2).fps
    assert two > 1.5 * one
