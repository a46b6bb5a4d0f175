"""The one runtime on a GPU: host partitions decided at build time, GPU partitions through the
backend contract, and the public device path (``ExecutionContext.execute_async``) against
``execute``. Skipped without CUDA."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

import cupy  # noqa: E402

from backends.reference import execute as reference_execute  # noqa: E402
from engine.builder import Builder, BuilderConfig  # noqa: E402
from engine.ir.logger import Logger, Severity  # noqa: E402
from engine.ir.network import Network  # noqa: E402
from engine.runtime import Profiler, Runtime  # noqa: E402

pytestmark = pytest.mark.gpu
QUIET = Logger(Severity.ERROR)


def _engine(net: Network, log: Logger = QUIET):
    plan = Builder(log).build_serialized_network(net, BuilderConfig(fp16=True, optimize=False))
    return Runtime(QUIET).deserialize(plan)


def _net(rng: np.random.Generator, lp_pool: bool) -> Network:
    n = Network("runtime-gpu")
    x = n.add_input("x", (2, 8, 12, 12))
    y = n.add_convolution(x, rng.standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.2,
                          rng.standard_normal(16).astype(np.float32), padding=(1, 1), name="conv1")
    y = n.add_activation(y, "relu", name="relu1")
    if lp_pool:  # Lp pooling has no GPU kernel: the builder puts it on the host
        y = n.add_pooling(y, "lp", (2, 2), stride=(2, 2), name="pool")
    y = n.add_convolution(y, rng.standard_normal((4, 16, 1, 1)).astype(np.float32) * 0.2, name="head")
    n.mark_output(y)
    n.validate()
    return n


def test_execute_async_equals_execute_and_needs_no_host_copy(rng):
    net = _net(rng, lp_pool=False)
    engine = _engine(net)
    assert [(p.backend, p.planned_backend) for p in engine.partitions] == [("gpu", "gpu")]
    ctx = engine.create_execution_context()
    feeds = {"x": rng.standard_normal((2, 8, 12, 12)).astype(np.float32)}
    host = ctx.execute(feeds)
    stream = cupy.cuda.Stream(non_blocking=True)
    dev = ctx.execute_async({"x": cupy.asarray(feeds["x"])}, stream)
    assert isinstance(dev[net.outputs[0]], cupy.ndarray)
    stream.synchronize()
    np.testing.assert_array_equal(cupy.asnumpy(dev[net.outputs[0]]).astype(np.float32), host[net.outputs[0]])
    again = ctx.execute_async(None, stream)  # the staged inputs again
    stream.synchronize()
    np.testing.assert_array_equal(cupy.asnumpy(again[net.outputs[0]]).astype(np.float32), host[net.outputs[0]])
    seg = ctx.partition_context("p0").segment
    assert seg.arena.nbytes > 0 and engine.compiled_partitions[0].describe()["launches"] == len(seg.seq.steps)


def test_host_layers_are_decided_at_build_and_run_between_gpu_partitions(rng):
    net = _net(rng, lp_pool=True)
    log = Logger(Severity.ERROR)
    engine = _engine(net, log)
    assert [(p.backend, p.layers) for p in engine.partitions] == [
        ("gpu", ("conv1", "relu1")), ("reference", ("pool",)), ("gpu", ("head",))]
    assert "Lp pooling" in engine.partitions[1].reason
    assert any("layer 'pool' (pooling) has no GPU kernel" in m for _, m in log.records)
    feeds = {"x": rng.standard_normal((2, 8, 12, 12)).astype(np.float32)}
    prof = Profiler()
    ctx = engine.create_execution_context()
    ctx.profiler = prof
    got = ctx.execute(feeds)[net.outputs[0]]
    names = prof.layer_names  # a profiled GPU partition reports each launch by its layer
    assert names.index("conv1") < names.index("pool") < names.index("head")
    want = reference_execute(engine.network, feeds)[net.outputs[0]].astype(np.float32)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 5e-3


def test_profiled_run_times_each_gpu_layer_and_computes_the_same_outputs(rng):
    net = _net(rng, lp_pool=False)
    engine = _engine(net)
    ctx = engine.create_execution_context()
    feeds = {"x": rng.standard_normal((2, 8, 12, 12)).astype(np.float32)}
    graph_out = ctx.execute(feeds)[net.outputs[0]]
    prof = Profiler()
    ctx.profiler = prof
    profiled = ctx.execute(feeds)[net.outputs[0]]
    np.testing.assert_array_equal(profiled, graph_out)
    layers = {la.name for la in engine.network.layers}
    timed = [t for t in prof.to_dict() if t["name"] in layers]
    assert {t["name"] for t in timed} >= {"conv1", "head"}
    assert all(t["timeMs"] > 0 for t in timed)
    ctx.profiler = None  # back to graph replays
    np.testing.assert_array_equal(ctx.execute(feeds)[net.outputs[0]], graph_out)
    assert ctx.partition_context("p0").layer_profiling is False


def test_two_contexts_on_two_threads_match(rng):
    net = _net(rng, lp_pool=True)
    engine = _engine(net)
    frames = [{"x": rng.standard_normal((2, 8, 12, 12)).astype(np.float32)} for _ in range(6)]
    want = [engine.create_execution_context().execute(f)[net.outputs[0]] for f in frames]
    errors: list = []

    def worker(k: int) -> None:
        ctx = engine.create_execution_context()
        for i in range(k, len(frames), 2):
            if not np.array_equal(ctx.execute(frames[i])[net.outputs[0]], want[i]):
                errors.append(i)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
