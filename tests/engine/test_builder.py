"""The builder: configuration checks, precisions, memory limits, the verbose fusion log."""

from __future__ import annotations

import numpy as np
import pytest

from engine.builder import Builder, BuilderConfig, build_from_onnx
from engine.ir.dtypes import Precision
from engine.ir.errors import BuildError
from engine.ir.logger import Logger, Severity
from engine.models import build_model
from engine.runtime import Runtime


@pytest.fixture(scope="module")
def small_model():
    return build_model("resnet18_small")


def _net():
    rng = np.random.default_rng(3)
    b = Builder(Logger(Severity.ERROR))
    n = b.create_network("tiny")
    x = n.add_input("x", (1, 3, 8, 8))
    y = n.add_convolution(x, rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
                          rng.standard_normal(4).astype(np.float32), padding=(1, 1), name="conv")
    z = n.add_activation(y, "relu", name="relu")
    n.mark_output(z)
    return b, n


def test_network_api_build_and_run_matches_numpy():
    b, n = _net()
    data = b.build_serialized_network(n, b.create_builder_config())
    engine = Runtime().deserialize(data)
    x = np.random.default_rng(4).standard_normal((1, 3, 8, 8)).astype(np.float32)
    (out,) = engine.create_execution_context().execute({"x": x}).values()
    conv = n.layer("conv")
    w, bias = conv.weights["kernel"].astype(np.float64), conv.weights["bias"].astype(np.float64)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros((1, 4, 8, 8))
    for i in range(8):
        for j in range(8):
            ref[0, :, i, j] = np.tensordot(w, xp[0, :, i:i + 3, j:j + 3], axes=3) + bias
    np.testing.assert_allclose(out, np.maximum(ref, 0), rtol=1e-5, atol=1e-5)
    assert engine.num_layers == 1  # conv + relu fused


def test_verbose_log_lists_every_fusion(small_model):
    logger = Logger(Severity.ERROR)
    build_from_onnx(small_model, BuilderConfig(), logger)
    verbose = logger.messages(Severity.VERBOSE)
    assert any("Fusing" in m and "relu" in m for m in verbose)
    assert any("After vertical fusions" in m for m in verbose)
    assert any(m.startswith("Graph optimization") for m in logger.messages(Severity.INFO))


def test_fp16_build_stores_half_weights_and_keeps_fp32_io(small_model):
    data = build_from_onnx(small_model, BuilderConfig(fp16=True), Logger(Severity.ERROR))
    engine = Runtime().deserialize(data)
    convs = [la for la in engine.network.layers if la.kind.value == "convolution"]
    assert convs and all(la.precision is Precision.FP16 for la in convs)
    assert all(la.weights["kernel"].dtype == np.float16 for la in convs)
    assert all(t.dtype.value == "float32" for t in engine.io_tensors)


def test_layer_precision_pin_by_onnx_node_name(small_model):
    first_conv = next(n.name for n in small_model.graph.node if n.op_type == "Conv")
    data = build_from_onnx(small_model, BuilderConfig(fp16=True, layer_precisions={first_conv: Precision.FP32}),
                           Logger(Severity.ERROR))
    layers = Runtime().deserialize(data).network.layers
    pinned = [la for la in layers if first_conv in la.origin]
    assert pinned and all(la.precision is Precision.FP32 for la in pinned)
    assert any(la.precision is Precision.FP16 for la in layers)


def test_unknown_pinned_layer_is_an_error(small_model):
    with pytest.raises(BuildError, match="'nope'"):
        build_from_onnx(small_model, BuilderConfig(layer_precisions={"nope": Precision.FP16}), Logger(Severity.ERROR))


def test_memory_limit_is_enforced(small_model):
    with pytest.raises(BuildError, match="memory limit"):
        build_from_onnx(small_model, BuilderConfig(memory_limit=1024), Logger(Severity.ERROR))


def test_batch_override_reaches_the_input_shape(small_model):
    data = build_from_onnx(small_model, BuilderConfig(batch=3), Logger(Severity.ERROR))
    engine = Runtime().deserialize(data)
    assert engine.get_tensor_shape("input") == (3, 3, 64, 64)


@pytest.mark.parametrize("config,match", [
    (BuilderConfig(platform="mars-rover"), "unknown platform"),
    (BuilderConfig(default_device="tpu"), "default device"),
    (BuilderConfig(batch=0), "batch"),
])
def test_bad_configurations_are_refused(config, match, small_model):
    with pytest.raises(BuildError, match=match):
        build_from_onnx(small_model, config, Logger(Severity.ERROR))
