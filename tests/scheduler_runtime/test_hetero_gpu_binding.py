"""GPU partitions of a GPU+DLA plan run on the GPU backend's whole-partition executor when it is
available, one executor context per execution context (checked with a stand-in executor here;
tests/gpu runs the real one)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from scheduler_runtime_plans import mixed_plan

from backends.reference import run_layer
from engine import runtime


class _CountingPartition:
    """A whole-partition executor computing with the reference kernels, counting its contexts."""

    contexts: list = []
    lock = threading.Lock()

    def __init__(self, network, names, tactics, logger):
        inside = set(names)
        self.layers = [la for la in network.layers if la.name in inside]
        produced = {t for la in self.layers for t in la.outputs}
        self.inputs = list(dict.fromkeys(t for la in self.layers for t in la.inputs if t not in produced))
        consumed_outside = {t for la in network.layers if la.name not in inside for t in la.inputs}
        self.outputs = [t for la in self.layers for t in la.outputs if t in consumed_outside or t in network.outputs]

    def create_context(self):
        part = self

        class Ctx:
            calls = 0

            def execute(self, feeds):
                Ctx.calls += 1
                env = dict(feeds)
                for la in part.layers:
                    for t, v in zip(la.outputs, run_layer(la, [env[x] for x in la.inputs])):
                        env[t] = v
                return {t: env[t] for t in part.outputs}

        ctx = Ctx()
        with _CountingPartition.lock:
            _CountingPartition.contexts.append(ctx)
        return ctx


@pytest.fixture
def fake_gpu(monkeypatch):
    _CountingPartition.contexts = []
    monkeypatch.setitem(runtime.PARTITION_EXECUTORS, "gpu", lambda: _CountingPartition)
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
