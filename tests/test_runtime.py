"""The runtime: engines from plans, execution contexts, errors naming tensors, threads, profiling."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_memory import random_network

from backends.reference import execute as reference_execute
from backends.reference.partition import ReferenceBackend
from engine import plan as P
from engine import runtime
from engine.ir.dtypes import DataType, Precision
from engine.ir.errors import ExecutionError, PlanError, UnsupportedError
from engine.ir.layers import ConcatenationParams
from engine.ir.network import Network
from engine.profiler import Profiler
from engine.runtime import Engine, IOTensor, Runtime


def net() -> Network:
    """Two branches joined by an in-place concat; one FP16 layer whose output is a network output."""
    rng = np.random.default_rng(3)
    n = Network("branches")
    x = n.add_input("image", (1, 3, 10, 10))
    a = n.add_convolution(x, rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
                          rng.standard_normal(8).astype(np.float32), padding=(1, 1), name="conv1")
    a = n.add_activation(a, "relu", name="relu1")
    b = n.add_convolution(a, rng.standard_normal((8, 8, 3, 3)).astype(np.float32), padding=(1, 1), name="conv2")
    c = n.add_pooling(a, "max", (3, 3), stride=(1, 1), padding=(1, 1), name="pool")
    cat = n.add_layer(ConcatenationParams(axis=1, in_place=True), [b, c], name="cat")
    y = n.add_convolution(cat.outputs[0], rng.standard_normal((4, 16, 1, 1)).astype(np.float32), name="head")
    n.mark_output(n.add_activation(y, "sigmoid", name="probs"))
    side = n.add_activation(b, "tanh", name="side")
    n.layer("side").precision = Precision.FP16
    n.mark_output(side)
    n.validate()
    return n


def plan_bytes(network: Network | None = None, **kwargs) -> bytes:
    return P.serialize(P.PlanContents(network or net(), **kwargs))


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Runtime().deserialize(plan_bytes())


def feeds(seed: int = 0) -> dict[str, np.ndarray]:
    return {"image": np.random.default_rng(seed).standard_normal((1, 3, 10, 10)).astype(np.float32)}


# ------------------------------------------------------------------------------- engine


def test_engine_io(engine):
    assert engine.name == "branches" and engine.num_io_tensors == 3
    assert engine.io_tensors == [IOTensor("image", "input", (1, 3, 10, 10), DataType.FLOAT),
                                 IOTensor("probs", "output", (1, 4, 10, 10), DataType.FLOAT),
                                 IOTensor("side", "output", (1, 8, 10, 10), DataType.FLOAT)]
    assert engine.get_tensor_shape("probs") == (1, 4, 10, 10)
    # computed and stored in FP16, returned in the dtype the network declares (an I/O reformat)
    assert engine.get_tensor_dtype("side") is DataType.FLOAT
    assert engine.get_tensor_mode("image") == "input"
    with pytest.raises(ExecutionError, match="no I/O tensor 'relu1'"):
        engine.get_tensor_shape("relu1")


def test_device_memory_is_the_arena_peak(engine):
    mem = engine.memory_plan
    assert engine.device_memory_size == mem.peak_bytes < mem.sum_of_tensor_bytes
    assert mem.concats["cat"].in_place
    ctx = engine.create_execution_context()
    assert ctx.arena.nbytes == engine.device_memory_size


def test_weights_are_read_only(engine):
    w = engine.network.layer("conv1").weights["kernel"]
    with pytest.raises(ValueError):
        w[0, 0, 0, 0] = 1.0


def test_layer_information_json(engine):
    info = json.loads(engine.layer_information("json"))
    assert [la["Name"] for la in info["Layers"]] == [la.name for la in engine.network.layers]
    assert info["Bindings"] == ["image", "probs", "side"]
    conv = info["Layers"][0]
    assert conv["LayerType"] == "convolution" and conv["Precision"] == "FP32" and conv["Device"] == "GPU"
    assert conv["Inputs"][0] == {"Name": "image", "Dimensions": [1, 3, 10, 10],
                                 "Format/Datatype": "Row major linear FP32", "Location": "Binding"}
    assert conv["Outputs"][0]["Location"] == "Arena" and "Offset" in conv["Outputs"][0]
    assert conv["Weights"]["kernel"] == {"Dimensions": [8, 3, 3, 3], "Datatype": "float32"}
    assert conv["Parameters"]["kernel"] == [3, 3]
    side = next(la for la in info["Layers"] if la["Name"] == "side")
    assert side["Precision"] == "FP16" and side["Outputs"][0]["Format/Datatype"].endswith("FP16")
    cat = next(la for la in info["Layers"] if la["Name"] == "cat")
    assert cat["ConcatElimination"]["InPlace"] is True


def test_layer_and_engine_information_other_formats(engine):
    lines = engine.layer_information("oneline").splitlines()
    assert len(lines) == engine.num_layers and lines[0].startswith("conv1: convolution [FP32")
    assert "eliminated (in place)" in next(li for li in lines if li.startswith("cat:"))
    info = json.loads(engine.engine_information())
    assert info["DeviceMemorySize"] == engine.device_memory_size and info["Platform"] == "host"
    assert info["Partitions"][0]["Backend"] == "reference"
    assert "DeviceMemorySize" in engine.engine_information("oneline")
    with pytest.raises(ExecutionError, match="unknown layer information format 'xml'"):
        engine.layer_information("xml")


class _NoGpu:
    name = "gpu"

    def available(self):
        return False, "no GPU in this test"


def test_partition_seam_falls_back_to_reference(monkeypatch):
    monkeypatch.setitem(runtime.BACKENDS, "gpu", _NoGpu)
    n = net()
    placement = {"partitions": [{"device": "gpu", "backend": "gpu", "layers": [la.name for la in n.layers]}]}
    engine = Runtime().deserialize(plan_bytes(n, placement=placement))
    (part,) = engine.partitions
    assert (part.planned_backend, part.backend) == ("gpu", "reference")
    assert [d.backend for d in engine.partition_descs] == ["reference"]
    assert engine.compiled_partitions[0].describe() == {"backend": "reference", "layers": len(n.layers)}
    out = engine.create_execution_context().execute(feeds())
    np.testing.assert_array_equal(out["probs"], reference_execute(net(), feeds())["probs"])


@pytest.mark.parametrize("placement, message", [
    ({"partitions": {}}, "'partitions' must be a list"),
    ({"partitions": [{"layers": ["nope"]}]}, "unknown layer 'nope'"),
    ({"partitions": [{"layers": ["conv1"]}, {"layers": ["conv1"]}]}, "layer 'conv1' is in partitions 0 and 1"),
])
def test_bad_placement_is_a_plan_error(placement, message):
    with pytest.raises(PlanError, match=message):
        Runtime().deserialize(plan_bytes(placement=placement))


def test_runtime_errors():
    with pytest.raises(PlanError, match="unknown runtime platform 'mars'"):
        Runtime(platform="mars")
    with pytest.raises(PlanError, match="a plan is bytes"):
        Runtime().deserialize(None)  # type: ignore[arg-type]


def test_deserialize_file(tmp_path):
    path = tmp_path / "model.plan"
    path.write_bytes(plan_bytes())
    assert Runtime().deserialize_file(path).name == "branches"
    with pytest.raises(PlanError, match="cannot read plan file"):
        Runtime().deserialize_file(tmp_path / "missing.plan")
    path.write_bytes(plan_bytes()[:100])
    with pytest.raises(PlanError, match="truncated: 100 bytes"):
        Runtime().deserialize_file(path)


# ------------------------------------------------------------------------------- execution


def test_outputs_match_the_reference_bit_for_bit(engine):
    ctx = engine.create_execution_context()
    for seed in range(3):
        got = ctx.execute(feeds(seed))
        want = reference_execute(net(), feeds(seed))
        assert set(got) == {"probs", "side"}
        for k in want:
            assert got[k].dtype == np.float32  # declared dtype; fp16 values widen exactly
            np.testing.assert_array_equal(got[k], want[k].astype(got[k].dtype))


def test_outputs_are_fresh_and_inputs_untouched(engine):
    ctx = engine.create_execution_context()
    f = feeds(1)
    before = f["image"].copy()
    first = ctx.execute(f)
    np.testing.assert_array_equal(f["image"], before)
    assert not any(np.shares_memory(v, ctx.arena) for v in first.values())
    kept = {k: v.copy() for k, v in first.items()}
    first["probs"][...] = 0
    ctx.execute(feeds(2))
    again = ctx.execute(f)
    for k in kept:
        np.testing.assert_array_equal(again[k], kept[k])


@pytest.mark.parametrize("bad, message", [
    ({"image": np.zeros((1, 3, 10, 10), np.float32), "extra": np.zeros(1)}, "'extra' is not an input"),
    ({"image": np.zeros((1, 3, 10, 10), np.float32), "probs": np.zeros(1)}, "'probs' is an output, not an input"),
    ({}, r"missing input 'image' \(shape \(1, 3, 10, 10\), dtype float32\)"),
    ({"image": np.zeros((1, 3, 10, 11), np.float32)},
     r"input 'image': expected shape \(1, 3, 10, 10\), got \(1, 3, 10, 11\)"),
    ({"image": np.zeros((1, 3, 10, 10), np.float64)}, r"input 'image': expected dtype float32, got float64"),
    ({"image": np.zeros((1, 3, 10, 10), ">f4")}, r"input 'image': expected dtype float32, got >f4"),
    ({"image": [[0.0]]}, r"input 'image': expected a numpy.ndarray .* got list"),
])
def test_bad_inputs_name_the_tensor(engine, bad, message):
    with pytest.raises(ExecutionError, match=message):
        engine.create_execution_context().execute(bad)


def test_non_mapping_feeds(engine):
    with pytest.raises(ExecutionError, match="dict of input name"):
        engine.create_execution_context().execute([np.zeros(3)])  # type: ignore[arg-type]


def test_kernel_failures(monkeypatch):
    n = Network("int8")
    x = n.add_input("x", (2,), DataType.FLOAT)
    n.mark_output(n.add_activation(x, "relu", name="r"))
    n.layer("r").precision = Precision.INT8  # the reference backend cannot run INT8 yet
    ctx = Runtime().deserialize(plan_bytes(n)).create_execution_context()
    with pytest.raises(UnsupportedError, match="INT8"):
        ctx.execute({"x": np.ones(2, np.float32)})

    def broken(layer, inputs):
        raise ZeroDivisionError("boom")

    def wrong_dtype(layer, inputs):
        return [inputs[0].astype(np.float64)]

    n.layer("r").precision = None
    for fn, message in ((broken, r"layer 'r' \(activation\) failed on backend 'reference': ZeroDivisionError: boom"),
                        (wrong_dtype, r"layer 'r' .* produced output 'r' as float64 \(2,\), expected float32")):
        monkeypatch.setitem(runtime.BACKENDS, "reference", lambda fn=fn: ReferenceBackend(fn))
        ctx = Runtime().deserialize(plan_bytes(n)).create_execution_context()
        with pytest.raises(ExecutionError, match=message):
            ctx.execute({"x": np.ones(2, np.float32)})


def test_network_output_that_is_also_consumed_and_input_passthrough():
    n = Network("pass")
    x = n.add_input("x", (4,))
    a = n.add_activation(x, "relu", name="a")
    b = n.add_activation(a, "sigmoid", name="b")
    n.mark_output(a)
    n.mark_output(b)
    n.mark_output(x)
    ctx = Runtime().deserialize(plan_bytes(n)).create_execution_context()
    f = {"x": np.array([-1, 0, 1, 2], np.float32)}
    out = ctx.execute(f)
    want = reference_execute(n, f)
    for k in ("a", "b", "x"):
        np.testing.assert_array_equal(out[k], want[k])
    assert not np.shares_memory(out["x"], f["x"])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1))
def test_random_dags_match_the_reference(seed):
    """Buffer reuse and concat elimination never change a value: bit-identical to the reference."""
    n = random_network(seed)
    engine = Runtime().deserialize(P.serialize(P.PlanContents(n)))
    rng = np.random.default_rng(seed)
    f = {t: rng.standard_normal(n.tensors[t].shape).astype(np.float32) for t in n.inputs}
    ctx = engine.create_execution_context()
    ctx.arena[...] = 0xA5  # stale bytes must never leak into results
    got = ctx.execute(f)
    want = reference_execute(n, f)
    for k in want:
        assert got[k].dtype == n.tensors[k].dtype.numpy
        np.testing.assert_array_equal(got[k], want[k].astype(got[k].dtype))


# ------------------------------------------------------------------------------- threads


def test_four_threads_two_contexts_each_match_single_threaded(engine):
    iterations = 12
    inputs = [feeds(100 + i) for i in range(iterations)]
    single = engine.create_execution_context()
    expected = [single.execute(f) for f in inputs]
    results: dict[tuple[int, int], dict] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker(tid: int) -> None:
        try:
            contexts = [engine.create_execution_context() for _ in range(2)]
            start.wait()
            for rep in range(3):
                for i in range(iterations):
                    ctx = contexts[(i + rep + tid) % 2]
                    results[(tid, rep * iterations + i)] = (i, ctx.execute(inputs[(i + tid) % iterations]))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(results) == 4 * 3 * iterations
    for (tid, _), (i, out) in results.items():
        want = expected[(i + tid) % iterations]
        for k in want:
            np.testing.assert_array_equal(out[k], want[k])


def test_one_context_cannot_run_on_two_threads_at_once(engine):
    ctx = engine.create_execution_context()
    inside, release = threading.Event(), threading.Event()

    class Blocking:
        def report_layer_time(self, layer_name: str, ms: float) -> None:
            inside.set()
            release.wait(10)

    ctx.profiler = Blocking()
    t = threading.Thread(target=ctx.execute, args=(feeds(),))
    t.start()
    assert inside.wait(10)
    try:
        with pytest.raises(ExecutionError, match="already executing on another thread"):
            ctx.execute(feeds())
    finally:
        release.set()
        t.join(10)
    ctx.profiler = None
    assert set(ctx.execute(feeds())) == {"probs", "side"}


# ------------------------------------------------------------------------------- profiling


def test_profiler_hook_receives_every_layer(engine):
    calls: list[tuple[str, float]] = []

    class Hook:
        def report_layer_time(self, layer_name: str, ms: float) -> None:
            calls.append((layer_name, ms))

    ctx = engine.create_execution_context()
    ctx.profiler = Hook()
    ctx.execute(feeds())
    ctx.execute(feeds(1))
    names = [la.name for la in engine.network.layers]
    assert [c[0] for c in calls] == names * 2
    assert all(ms >= 0 for _, ms in calls)


def test_builtin_profiler_summary(engine):
    prof = Profiler()
    ctx = engine.create_execution_context()
    ctx.profiler = prof
    for i in range(5):
        ctx.execute(feeds(i))
    rows = prof.summary()
    assert [r.name for r in rows] == [la.name for la in engine.network.layers]
    assert all(r.count == 5 and r.mean_ms >= 0 and r.median_ms >= 0 for r in rows)
    assert abs(sum(r.percent for r in rows) - 100.0) < 1e-6
    text = prof.report()
    assert "=== Profile (5 iterations ) ===" in text and text.rstrip().endswith("Total")
    assert prof.to_dict()[0]["name"] == "conv1"
    prof.reset()
    assert prof.summary() == []


# ------------------------------------------------------------------------------- one executor


def test_frames_on_one_lane_use_the_arena_and_match_single_executions(engine):
    assert engine.uses_arena and engine.executor.lanes == ("gpu",)
    ctx = engine.create_execution_context()
    frames = [feeds(i) for i in range(3)]
    outs = ctx.execute_frames(frames)
    assert [(e.frame, e.partition, e.lane) for e in ctx.last_events] == [(0, 0, "gpu"), (1, 0, "gpu"), (2, 0, "gpu")]
    for f, got in zip(frames, outs):
        want = engine.create_execution_context().execute(f)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
            assert not np.shares_memory(got[k], ctx.arena)


def test_partition_contexts_and_execute_async_are_public(engine):
    ctx = engine.create_execution_context()
    (desc,) = engine.partition_descs
    assert (desc.name, desc.lane, desc.inputs, set(desc.outputs)) == ("p0", "gpu", ("image",), {"probs", "side"})
    assert ctx.partition_context("p0") is ctx.partition_context("p0")
    with pytest.raises(ExecutionError, match="no partition 'p9'; partitions: \\['p0'\\]"):
        ctx.partition_context("p9")
    want = ctx.execute(feeds())
    got = ctx.execute_async(feeds())  # host partitions: host arrays, one synchronous run
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])

    class FakeDevice:  # a device array as the runtime sees one (CUDA array interface)
        shape = feeds()["image"].shape
        __cuda_array_interface__ = {}

    with pytest.raises(UnsupportedError, match=r"execute_async with device arrays \(inputs \['image'\]\) needs every "
                                               r"partition on the GPU backend; partitions \['p0'\] run on "
                                               r"\['reference'\]"):
        ctx.execute_async({"image": FakeDevice()})


@pytest.mark.parametrize("n", [1, 3])
def test_arena_slots_keep_row_bordered_channels_last_layout(n):
    """A reference expansion's output (channels-last images between zero rows) is copied into a
    channels-last arena slot, for one image or several; a C-order value keeps the C-order slot."""
    from backends.reference.ops import channels_last
    from engine.runtime.context import _same_layout

    g = np.random.default_rng(n)
    interior, rows = channels_last.row_bordered(n, 5, 6, 4, np.float32)
    rows[...] = g.standard_normal(rows.shape)
    value = channels_last.from_nhwc(interior)
    slot = np.empty((n, 4, 5, 6), np.float32)
    view = _same_layout(slot, value)
    assert np.shares_memory(view, slot) and view.transpose(0, 2, 3, 1).flags.c_contiguous
    np.copyto(view, value)
    np.testing.assert_array_equal(view, value)
    plain = g.standard_normal((n, 4, 5, 6)).astype(np.float32)
    assert _same_layout(slot, plain) is slot
