"""Layers the GPU backend cannot run are placed on the host at build time, written into the plan
with the reason, shown by the inspector, and executed as written (the runtime never re-partitions)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backends.contract import CompileOptions, PartitionDesc, partition_io
from backends.gpu.backend import GpuBackend
from backends.reference import execute as reference_execute
from engine import builder as builder_mod
from engine import runtime
from engine.builder import Builder, BuilderConfig
from engine.cli.inspect import plan_summary
from engine.ir.dtypes import Precision
from engine.ir.errors import UnsupportedError
from engine.ir.layers import ConcatenationParams
from engine.ir.logger import Logger, Severity
from engine.ir.network import Network


def _net() -> Network:
    """conv -> relu -> {conv, FP32 max pool (no GPU kernel)} -> in-place concat -> conv -> sigmoid."""
    rng = np.random.default_rng(7)
    n = Network("host-pool")
    x = n.add_input("image", (1, 3, 10, 10))
    a = n.add_convolution(x, rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
                          rng.standard_normal(8).astype(np.float32), padding=(1, 1), name="conv1")
    a = n.add_activation(a, "relu", name="relu1")
    b = n.add_convolution(a, rng.standard_normal((8, 8, 3, 3)).astype(np.float32), padding=(1, 1), name="conv2")
    c = n.add_pooling(a, "max", (3, 3), stride=(1, 1), padding=(1, 1), name="pool")
    cat = n.add_layer(ConcatenationParams(axis=1, in_place=True), [b, c], name="cat")
    y = n.add_convolution(cat.outputs[0], rng.standard_normal((4, 16, 1, 1)).astype(np.float32), name="head")
    n.mark_output(n.add_activation(y, "sigmoid", name="probs"))
    n.validate()
    return n


class _NoGpu:
    name = "gpu"

    def available(self):
        return False, "no GPU in this test"


@pytest.fixture
def gpu_build(monkeypatch):
    """Build as on a machine with a GPU; run here, where the GPU partitions run on the reference."""
    monkeypatch.setattr(builder_mod, "_gpu_backend_status", lambda: (True, "a GPU for this test"))
    monkeypatch.setitem(runtime.BACKENDS, "gpu", _NoGpu)


def test_refused_layers_become_host_partitions_with_their_reason(gpu_build):
    log = Logger(Severity.ERROR)
    contents = Builder(log).build(_net(), BuilderConfig(optimize=False))
    messages = [m for _, m in log.records]
    records = contents.placement["partitions"]
    assert [(r["backend"], r["layers"]) for r in records] == [
        ("gpu", ["conv1", "relu1", "conv2"]), ("reference", ["pool"]), ("gpu", ["cat", "head", "probs"])]
    assert "FP32 pooling" in records[1]["reasons"]["pool"] and records[1]["reason"].startswith("'pool': ")
    assert any("layer 'pool' (pooling) has no GPU kernel" in m for m in messages)

    from engine.builder import serialize

    engine = runtime.Runtime(Logger(Severity.ERROR)).deserialize(serialize(contents))
    assert [(p.planned_backend, p.backend) for p in engine.partitions] == [
        ("gpu", "reference"), ("reference", "reference"), ("gpu", "reference")]
    assert engine.partitions[1].reason == records[1]["reason"]
    info = json.loads(engine.engine_information())
    assert info["Partitions"][1]["Reason"] == records[1]["reason"] and "Reason" not in info["Partitions"][0]
    assert "on the reference backend, 1 layers (host: 'pool': FP32 pooling" in plan_summary(engine)
    feeds = {"image": np.random.default_rng(1).standard_normal((1, 3, 10, 10)).astype(np.float32)}
    out = engine.create_execution_context().execute(feeds)
    np.testing.assert_array_equal(out["probs"], reference_execute(_net(), feeds)["probs"])


def test_gpu_backend_refuses_a_partition_with_a_layer_it_cannot_run():
    """A plan that still puts such a layer on the GPU (built before this rule) is not re-partitioned."""
    n = _net()
    layers = tuple(la.name for la in n.layers)
    ins, outs = partition_io(n, layers)
    desc = PartitionDesc("p0", 0, "gpu", None, "gpu", layers, ins, outs)
    assert GpuBackend().supports(n.layer("pool"), n) is not None
    assert GpuBackend().supports(n.layer("conv1"), n) is None
    with pytest.raises(UnsupportedError, match=r"1 of its layers have no GPU kernel \('pool': .*rebuild the plan"):
        GpuBackend().compile(desc, n, CompileOptions(Logger(Severity.ERROR), precision=Precision.FP32))


def test_without_a_gpu_the_plan_has_one_reference_partition(monkeypatch):
    monkeypatch.setattr(builder_mod, "_gpu_backend_status", lambda: (False, "no GPU in this test"))
    contents = Builder(Logger(Severity.ERROR)).build(_net(), BuilderConfig(optimize=False))
    assert [r["backend"] for r in contents.placement["partitions"]] == ["reference"]
