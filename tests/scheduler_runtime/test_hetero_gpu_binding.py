"""GPU partitions of a GPU+DLA plan run on the GPU backend when it is available, one partition
context per execution context (checked with a stand-in backend here; tests/gpu runs the real one)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from scheduler_runtime_plans import mixed_plan

from backends.reference import run_layer
from engine import runtime


class _CountingPartition:
    """A compiled 'gpu' partition computing with the reference kernels, counting its contexts."""

    contexts: list = []
    lock = threading.Lock()

    def __init__(self, desc, network):
        self.desc = desc
        inside = set(desc.layers)
        self.layers = [la for la in network.layers if la.name in inside]

    def describe(self):
        return {"backend": "stand-in"}

    def create_context(self):
        part = self

        class Ctx:
            calls = 0

            def execute(self, store):
                Ctx.calls += 1
                for la in part.layers:
                    for t, v in zip(la.outputs, run_layer(la, [store.get(x) for x in la.inputs])):
                        store.put(t, v)
                return []

        ctx = Ctx()
        with _CountingPartition.lock:
            _CountingPartition.contexts.append(ctx)
        return ctx


class _FakeGpu:
    name = "gpu"

    def available(self):
        return True, "a stand-in"

    def supports(self, layer, network):
        return None

    def compile(self, partition, network, options):
        return _CountingPartition(partition, network)


@pytest.fixture
def fake_gpu(monkeypatch):
    _CountingPartition.contexts = []
    monkeypatch.setitem(runtime.BACKENDS, "gpu", _FakeGpu)
    return _CountingPartition


def test_gpu_partitions_use_the_partition_executor_per_context(fake_gpu, feeds):
    reference = runtime.Runtime().deserialize(mixed_plan(gpu_backend="reference"))
    engine = runtime.Runtime().deserialize(mixed_plan(gpu_backend="gpu"))
    n_gpu = sum(1 for p in engine.placement["partitions"] if p["device"] == "gpu")
    want = reference.create_execution_context().execute(feeds[0])
    assert fake_gpu.contexts == []  # the reference-recorded plan never asked for it
    a, b = engine.create_execution_context(), engine.create_execution_context()
    for ctx in (a, b, a):
        got = ctx.execute(feeds[0])
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    assert len(fake_gpu.contexts) == 2 * n_gpu  # one per GPU partition per execution context
    assert sorted(c.calls for c in fake_gpu.contexts) == [1] * n_gpu + [2] * n_gpu
