"""An INT8 layer the GPU has no INT8 kernel for runs in float on the GPU, not in INT8 on the host,
checked on the CPU with the GPU backend's own support rules (``engine.int8_host_fallback``).

RegNetY-1.6GF's grouped convolutions (5 or 37 groups of 24 channels) have no INT8 GPU kernel: no
merge of whole groups fits the int8 tensors' padding to 16 channels. Such a layer used to become a
host partition (reference backend: a device round trip and numpy); now it is rebuilt in the build's
float precision, as TensorRT's builder takes a layer's FP16 kernel where it has no INT8 one."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from backends.gpu import tactics
from engine.ir.dtypes import Precision
from engine.ir.logger import Logger, Severity
from engine.plan import deserialize


def _regnet_block(rng: np.random.Generator, groups: int = 5, width: int = 24, c: int = 32, h: int = 10):
    """1x1 conv + ReLU -> grouped 3x3 conv (``groups`` x ``width`` channels) + ReLU -> 1x1 conv."""
    k = groups * width

    def init(name: str, a: np.ndarray):
        return numpy_helper.from_array(np.asarray(a, np.float32), name)

    inits = [init("w1", rng.normal(size=(k, c, 1, 1)) * 0.2), init("b1", rng.normal(size=k) * 0.1),
             init("w2", rng.normal(size=(k, width, 3, 3)) * 0.1), init("b2", rng.normal(size=k) * 0.1),
             init("w3", rng.normal(size=(c, k, 1, 1)) * 0.1), init("b3", rng.normal(size=c) * 0.1)]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], kernel_shape=[1, 1], name="expand"),
             helper.make_node("Relu", ["a"], ["a1"]),
             helper.make_node("Conv", ["a1", "w2", "b2"], ["g"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                              group=groups, name="grouped"),
             helper.make_node("Relu", ["g"], ["g1"]),
             helper.make_node("Conv", ["g1", "w3", "b3"], ["y"], kernel_shape=[1, 1], name="project")]
    shape = [2, c, h, h]
    graph = helper.make_graph(nodes, "regnet_block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, [{"x": rng.normal(size=shape).astype(np.float32)} for _ in range(2)]


@pytest.fixture
def gpu_rules(monkeypatch):
    """Builds that place with the GPU backend's support rules, as on a machine with a GPU (no timing)."""
    from engine import builder as builder_mod

    monkeypatch.setattr(builder_mod, "_gpu_backend_status", lambda: (True, ""))
    monkeypatch.setattr(tactics, "select_tactics", lambda *a, **k: {})


def _build(model, calib, **kw):
    from engine.builder import BuilderConfig, build_from_onnx
    from engine.quantization import make_calibrator

    log = Logger(Severity.ERROR)
    config = BuilderConfig(batch=2, int8=True, precision_by_timing=False,
                           calibrator=make_calibrator("minmax", calib), **kw)
    data = build_from_onnx(model, config, log)
    return deserialize(data), log, data


@pytest.mark.parametrize("fp16,groups", [(True, 5), (True, 37), (False, 5)])
def test_a_grouped_conv_without_an_int8_kernel_runs_in_float_on_the_gpu(rng, gpu_rules, fp16, groups):
    from backends import reference

    model, calib = _regnet_block(rng, groups)
    plan, log, data = _build(model, calib, fp16=fp16)
    grouped = next(la for la in plan.network if la.kind.name == "CONVOLUTION" and la.params.groups > 1)
    want = Precision.FP16 if fp16 else Precision.FP32
    assert grouped.precision is want
    assert all(p["backend"] == "gpu" for p in plan.placement["partitions"]), plan.placement["partitions"]
    assert list(plan.metadata["int8_float_on_gpu"]) == [grouped.name]
    assert "no merge of at most 8 groups" in plan.metadata["int8_float_on_gpu"][grouped.name]
    assert plan.build_config["layer_precisions"] == {grouped.name: want.value}
    others = [la for la in plan.network if la.kind.name == "CONVOLUTION" and la.params.groups == 1]
    assert [la.precision for la in others] == [Precision.INT8, Precision.INT8]
    assert any(f"layer '{grouped.name}' has no GPU INT8 kernel" in m for m in log.messages(Severity.INFO))
    from engine.cli.inspect import plan_summary
    from engine.runtime import Runtime

    assert (f"1 layer(s) in float on the GPU for want of a GPU INT8 kernel: {grouped.name}"
            in plan_summary(Runtime(log).deserialize(data)))
    # the same plan as pinning the layer by hand, bit for bit on the reference backend
    pinned, _, _ = _build(model, calib, fp16=fp16, layer_precisions={grouped.name: want})
    x = {"x": rng.normal(size=calib[0]["x"].shape).astype(np.float32)}
    got, ref = reference.execute(plan.network, x)["y"], reference.execute(pinned.network, x)["y"]
    assert np.abs(ref).max() > 0 and np.array_equal(got.view(np.uint32), ref.view(np.uint32))


def test_groups_the_int8_kernel_takes_stay_int8(rng, gpu_rules):
    model, calib = _regnet_block(rng, groups=4)  # two groups of 24 merge into 48 channels
    plan, _, _ = _build(model, calib, fp16=True)
    assert all(la.precision is Precision.INT8 for la in plan.network if la.kind.name == "CONVOLUTION")
    assert "int8_float_on_gpu" not in plan.metadata


def test_without_the_gpu_backend_nothing_changes(rng):
    model, calib = _regnet_block(rng)
    plan, _, _ = _build(model, calib, fp16=True)
    assert all(la.precision is Precision.INT8 for la in plan.network if la.kind.name == "CONVOLUTION")
    assert "int8_float_on_gpu" not in plan.metadata
