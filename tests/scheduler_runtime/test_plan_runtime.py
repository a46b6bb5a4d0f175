import json
import threading

import numpy as np
import pytest
from scheduler_runtime_plans import QUIET, mixed_plan

from backends.reference.partition import ReferenceBackend
from engine import plan as plan_format
from engine.builder import Builder, BuilderConfig
from engine.ir.errors import BuildError, PlanError
from engine.models import build_model
from engine.onnx_parser import parse
from engine.runtime import BACKENDS, Event, Runtime, check_order


def test_optimal_placement_survives_the_plan_round_trip():
    cfg = BuilderConfig(fp16=True, platform="orin-agx-64gb", power_mode="30W", placement_policy="optimal",
                        objective="edp")
    contents = Builder(QUIET).build(parse(build_model("resnet18_small")), cfg)
    data = plan_format.serialize(contents)
    engine = Runtime(QUIET, platform="orin-agx-64gb").deserialize(data)
    p = engine.placement
    assert p == json.loads(json.dumps(contents.placement))
    assert p["power_mode"] == "30W" and p["policy"] == "optimal" and p["dla"] == {"config": "orin", "version": 2,
                                                                                    "cores": 2}
    assert set(p["devices"]) == {la.name for la in engine.network.layers}
    assert p["objective_values"]["latency_ms"] > 0
    n_dla = [r for r in p["partitions"] if r["device"] == "dla"]
    assert len(engine.loadables) == len(n_dla)
    assert [r["loadable"] for r in n_dla] == list(range(len(n_dla)))
    for r in p["partitions"]:
        assert set(r["formats"]) == set(r["inputs"]) | set(r["outputs"])


def test_dla_with_fp32_is_a_clear_error():
    with pytest.raises(BuildError, match="the DLA runs FP16 and INT8 only; add --fp16 or --int8"):
        BuilderConfig(default_device="dla").validate()
    with pytest.raises(BuildError, match="no power mode"):
        BuilderConfig(fp16=True, platform="orin-agx-64gb", power_mode="99W").validate()
    with pytest.raises(BuildError, match="unknown placement policy"):
        BuilderConfig(fp16=True, placement_policy="random").validate()


def test_plan_for_another_platform_is_refused():
    data = mixed_plan()
    with pytest.raises(PlanError, match="built for platform 'host'.*'xavier-agx'"):
        Runtime(QUIET, platform="xavier-agx").deserialize(data)
    contents = plan_format.deserialize(data)
    contents.placement["dla"] = {"config": "xavier", "version": 1, "cores": 2}
    with pytest.raises(PlanError, match="built for 2 DLA v1 core.*has 2 DLA v2"):
        Runtime(QUIET).deserialize(plan_format.serialize(contents))
    contents.placement["dla"] = {"config": "orin", "version": 2, "cores": 2}
    contents.placement["partitions"][1]["core"] = 5
    with pytest.raises(PlanError, match="DLA core 5"):
        Runtime(QUIET).deserialize(plan_format.serialize(contents))


class _ReferenceDla:
    """A DLA stand-in computing with the reference kernels: isolates synchronization from DLA
    numerics. ``wait()`` gives the seconds each partition run sleeps first."""

    name = "dla"

    def __init__(self, wait=lambda: 0.0):
        self.wait = wait

    def available(self):
        return True, "reference kernels"

    def supports(self, layer, network):
        return None

    def compile(self, partition, network, options):
        inner = ReferenceBackend().compile(partition, network, options)
        wait = self.wait

        class Slow:
            desc = partition

            def create_context(self):
                return self

            def describe(self):
                return {}

            def execute(self, store):
                threading.Event().wait(wait())
                return inner.execute(store)

        return Slow()


def _sleepy(seed):
    rng = np.random.default_rng(seed)
    lock = threading.Lock()

    def wait():
        with lock:
            return rng.uniform(0, 0.004)

    return lambda: _ReferenceDla(wait)


def test_random_delays_keep_outputs_bit_identical_and_events_ordered(monkeypatch, gpu_plan, feeds):
    ref_ctx = Runtime(QUIET).deserialize(gpu_plan).create_execution_context()
    expected = [ref_ctx.execute(f) for f in feeds]
    monkeypatch.setitem(BACKENDS, "dla", _sleepy(1))
    engine = Runtime(QUIET).deserialize(mixed_plan())
    ctx = engine.create_execution_context()
    assert set(engine.executor.lanes) == {"gpu", "dla0", "dla1"}
    for seed in range(3):
        outs = ctx.execute_frames(feeds, delays={"gpu": 0.003, "dla": 0.003}, seed=seed)
        for got, want in zip(outs, expected):
            for k in want:
                assert np.array_equal(got[k], want[k])
        assert check_order(ctx.last_events, engine.executor.producers) == []
        assert len(ctx.last_events) == len(feeds) * len(engine.partitions)


def test_check_order_detects_a_consumer_that_starts_early():
    log = [Event(0, 0, "gpu", 0.0, 2.0), Event(0, 1, "dla0", 1.0, 3.0)]
    assert check_order(log, {1: {0}})
    assert check_order(log[:1] + [Event(0, 1, "dla0", 2.0, 3.0)], {1: {0}}) == []


def test_pipelined_frames_overlap_devices(monkeypatch, feeds):
    # DLA partitions that take at least 0.25 s: long enough that a loaded machine still lets the GPU
    # lane start the next frame while the DLA works on this one
    monkeypatch.setitem(BACKENDS, "dla", lambda: _ReferenceDla(lambda: 0.25))
    engine = Runtime(QUIET).deserialize(mixed_plan(("gpu", "dla0"), every=12))
    ctx = engine.create_execution_context()
    ctx.execute_frames(feeds, delays={"gpu": 0.01, "dla": 0.01})
    ev = ctx.last_events
    overlap = any(a.lane != b.lane and a.frame != b.frame and a.start < b.end and b.start < a.end
                  for a in ev for b in ev)
    assert overlap


def test_real_dla_partitions_are_deterministic_under_four_threads_and_two_contexts(feeds):
    engine = Runtime(QUIET).deserialize(mixed_plan())
    assert engine.partitions[1].device == "dla"
    solo = engine.create_execution_context()
    expected = [solo.execute(f) for f in feeds]
    for want in expected:
        assert all(np.isfinite(v).all() for v in want.values())
    errors = []

    def worker(i):
        try:
            ctxs = [engine.create_execution_context() for _ in range(2)]
            for r in range(2):
                for j, f in enumerate(feeds):
                    got = ctxs[(r + j + i) % 2].execute(f)
                    for k in got:
                        if not np.array_equal(got[k], expected[j][k]):
                            errors.append((i, r, j, k))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_dla_first_build_runs_on_the_dla_backend(feeds, gpu_plan):
    cfg = BuilderConfig(fp16=True, default_device="dla")
    engine = Runtime(QUIET).deserialize(Builder(QUIET).build_serialized_network(parse(build_model("resnet18_small")),
                                                                               cfg))
    assert engine.placement["policy"] == "dla-first"
    out = engine.create_execution_context().execute(feeds[0])
    ref = Runtime(QUIET).deserialize(gpu_plan).create_execution_context().execute(feeds[0])
    for k in ref:  # FP16 DLA arithmetic vs the FP16 reference: close, not equal
        np.testing.assert_allclose(out[k], ref[k], atol=0.05 * np.abs(ref[k]).max())
