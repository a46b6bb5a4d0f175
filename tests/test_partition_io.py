"""Partition boundaries (``engine.ir.partition_io``) on random DAGs, and the users that share the rule."""

from __future__ import annotations

import numpy as np
import pytest
from test_memory import random_network

from backends.gpu.lower import lower, supports
from engine.ir.partition_io import partition_io
from scheduler.partitions import split_partitions


def _oracle(net, members: set[str]) -> tuple[set[str], set[str]]:
    """The boundary by definition, tensor by tensor."""
    producer = {t: la.name for la in net.layers for t in la.outputs}
    readers: dict[str, set[str]] = {}
    for la in net.layers:
        for t in la.inputs:
            readers.setdefault(t, set()).add(la.name)
    ins = {t for la in net.layers if la.name in members for t in la.inputs if producer.get(t) not in members}
    outs = {t for t, p in producer.items() if p in members and (t in net.outputs or readers.get(t, set()) - members)}
    return ins, outs


@pytest.mark.parametrize("seed", range(40))
def test_random_groups_match_the_definition(seed):
    rng = np.random.default_rng(seed)
    net = random_network(seed, max_layers=20)
    names = [la.name for la in net.layers]
    for _ in range(6):
        if rng.random() < 0.5:
            lo = int(rng.integers(len(names)))
            members = set(names[lo:int(rng.integers(lo, len(names))) + 1])
        else:
            members = {n for n in names if rng.random() < 0.5}
        io = partition_io(net, sorted(members))
        ins, outs = _oracle(net, members)
        assert set(io.inputs) == ins and set(io.outputs) == outs
        assert len(io.inputs) == len(ins) and len(io.outputs) == len(outs)
        # inputs in first-read order, outputs in production order
        order = [t for la in net.layers if la.name in members for t in la.inputs]
        assert list(io.inputs) == sorted(ins, key=order.index)
        made = [t for la in net.layers if la.name in members for t in la.outputs]
        assert list(io.outputs) == sorted(outs, key=made.index)


def test_whole_network_and_layer_objects():
    net = random_network(3)
    io = partition_io(net, net.layers)
    used = {t for la in net.layers for t in la.inputs}
    assert set(io.inputs) == {t for t in net.inputs if t in used}
    assert set(io.outputs) == set(net.outputs) - set(net.inputs)


@pytest.mark.parametrize("seed", range(20))
def test_scheduler_partitions_use_the_rule(seed):
    rng = np.random.default_rng(seed)
    net = random_network(seed, max_layers=20)
    devices = {la.name: str(rng.choice(["gpu", "dla0", "dla1"])) for la in net.layers}
    available = set(net.inputs)
    for spec in split_partitions(net, devices, "fp16"):
        io = partition_io(net, spec.layers)
        assert (spec.inputs, spec.outputs) == (io.inputs, io.outputs)
        assert set(spec.inputs) <= available  # produced by an earlier partition or fed by the caller
        available |= set(spec.outputs)
    assert set(net.outputs) <= available


def test_gpu_segment_inputs_use_the_rule():
    net = random_network(11, max_layers=20)
    layers = [la for la in net.layers if supports(la, net)[0]]
    run = layers[:len(layers) // 2 + 1]
    run = [la for la in net.layers if la in run]
    low = lower(net, run, list(partition_io(net, run).outputs))
    assert low.inputs == list(partition_io(net, run).inputs)
