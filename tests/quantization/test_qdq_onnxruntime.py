"""Explicit quantization: a Q/DQ model (onnx.helper) runs INT8 and matches ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine import plan as plan_format
from engine.builder import BuilderConfig, build_from_onnx
from engine.ir.dtypes import Precision
from engine.ir.errors import UnsupportedError
from engine.ir.int8_math import quantize
from engine.ir.logger import Logger, Severity
from engine.onnx_parser import parse
from engine.runtime import Runtime


def _qdq_model(seed: int = 0, zero_point: int = 0) -> tuple[onnx.ModelProto, dict]:
    rng = np.random.default_rng(seed)
    c, k1, k2 = 3, 8, 6
    w1 = rng.normal(size=(k1, c, 3, 3)).astype(np.float32)
    w2 = rng.normal(size=(k2, k1, 3, 3)).astype(np.float32) * 0.2
    s_w1 = (np.abs(w1).reshape(k1, -1).max(1) / 127).astype(np.float32)
    s_w2 = (np.abs(w2).reshape(k2, -1).max(1) / 127).astype(np.float32)
    s_x, s_a, s_b, s_y = np.float32(0.02), np.float32(0.05), np.float32(0.05), np.float32(0.04)
    b1 = rng.normal(size=k1).astype(np.float32)
    b1_q = np.round(b1 / (s_x * s_w1)).astype(np.int32)
    inits = [
        numpy_helper.from_array(quantize(w1, s_w1, 0), "w1_q"), numpy_helper.from_array(s_w1, "w1_s"),
        numpy_helper.from_array(quantize(w2, s_w2, 0), "w2_q"), numpy_helper.from_array(s_w2, "w2_s"),
        numpy_helper.from_array(b1_q, "b1_q"), numpy_helper.from_array((s_x * s_w1).astype(np.float32), "b1_s"),
        numpy_helper.from_array(np.zeros(k1, np.int32), "b1_zp"),
        numpy_helper.from_array(np.array(s_x), "s_x"), numpy_helper.from_array(np.array(s_a), "s_a"),
        numpy_helper.from_array(np.array(s_b), "s_b"), numpy_helper.from_array(np.array(s_y), "s_y"),
        numpy_helper.from_array(np.array(zero_point, np.int8), "zp"),
        numpy_helper.from_array(np.zeros(k1, np.int8), "w1_zp"),
        numpy_helper.from_array(np.zeros(k2, np.int8), "w2_zp"),
    ]
    n = helper.make_node
    nodes = [
        n("QuantizeLinear", ["x", "s_x", "zp"], ["x_q"], name="q_x"),
        n("DequantizeLinear", ["x_q", "s_x", "zp"], ["x_dq"], name="dq_x"),
        n("DequantizeLinear", ["w1_q", "w1_s", "w1_zp"], ["w1"], name="dq_w1", axis=0),
        n("DequantizeLinear", ["b1_q", "b1_s", "b1_zp"], ["b1"], name="dq_b1", axis=0),
        n("Conv", ["x_dq", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        n("Relu", ["c1"], ["r1"], name="relu1"),
        n("QuantizeLinear", ["r1", "s_a", "zp"], ["r1_q"], name="q_r1"),
        n("DequantizeLinear", ["r1_q", "s_a", "zp"], ["r1_dq"], name="dq_r1"),
        n("MaxPool", ["r1_dq"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        n("QuantizeLinear", ["p1", "s_b", "zp"], ["p1_q"], name="q_p1"),
        n("DequantizeLinear", ["p1_q", "s_b", "zp"], ["p1_dq"], name="dq_p1"),
        n("DequantizeLinear", ["w2_q", "w2_s", "w2_zp"], ["w2"], name="dq_w2", axis=0),
        n("Conv", ["p1_dq", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        n("QuantizeLinear", ["c2", "s_y", "zp"], ["y_q"], name="q_y"),
        n("DequantizeLinear", ["y_q", "s_y", "zp"], ["y"], name="dq_y"),
    ]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, c, 10, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, k2, 5, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, {"s_y": s_y}


def _onnxruntime_qdq(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """ONNX Runtime's output with its graph optimizations off, so that it evaluates the Q/DQ nodes
    as written (dequantize, float convolution, quantize): the operators' definition. Optimized, it
    fuses them into QLinearConv, whose int8 kernels on x86 CPUs without VNNI sum int8 products in
    saturating int16 pairs (pmaddubsw): on such a CPU its outputs here lie up to 100 steps from
    its own unoptimized ones, which makes it an oracle of the CPU, not of the model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return sess.run(["y"], {"x": x})[0]


def test_qdq_model_runs_int8_and_matches_onnxruntime():
    pytest.importorskip("onnxruntime")
    model, meta = _qdq_model()
    data = build_from_onnx(model, BuilderConfig(int8=True), Logger(Severity.WARNING))
    net = plan_format.deserialize(data).network
    int8_layers = [la.name for la in net.layers if la.precision is Precision.INT8]
    assert len(int8_layers) == 3, net.summary()  # conv1+relu1, pool1, conv2
    assert not any(la.kind.value in ("quantize", "dequantize") for la in net.layers)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 3, 10, 10)).astype(np.float32) * 1.5
    ours = Runtime(Logger(Severity.WARNING)).deserialize(data).create_execution_context().execute({"x": x})["y"]
    ref = _onnxruntime_qdq(model, x)
    steps = np.abs(ours.astype(np.float64) - ref) / meta["s_y"]
    assert np.mean(steps <= 1.0 + 1e-6) >= 0.99, f"only {np.mean(steps <= 1.0):.4f} within one step"
    assert np.mean(steps < 0.5) > 0.9  # most elements are identical
    assert np.abs(ref).max() > 20 * meta["s_y"]


def test_qdq_without_int8_runs_as_float_conversions():
    pytest.importorskip("onnxruntime")
    model, meta = _qdq_model(1)
    data = build_from_onnx(model, BuilderConfig(), Logger(Severity.WARNING))
    x = np.random.default_rng(6).normal(size=(2, 3, 10, 10)).astype(np.float32)
    ours = Runtime(Logger(Severity.WARNING)).deserialize(data).create_execution_context().execute({"x": x})["y"]
    ref = _onnxruntime_qdq(model, x)
    assert np.mean(np.abs(ours - ref) <= meta["s_y"] * 1.0001) >= 0.99


def test_asymmetric_quantization_is_refused():
    model, _ = _qdq_model(zero_point=3)
    with pytest.raises(UnsupportedError, match="zero point"):
        parse(model)
