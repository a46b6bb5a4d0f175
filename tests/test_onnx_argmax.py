"""ArgMax / ArgMin (a reduce with an int64 result) against ONNX Runtime on fresh random data, through
the builder at FP32, FP16 and INT8, and where each backend places it."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from backends.gpu.backend import split_segments
from engine.builder import Builder, BuilderConfig, build_from_onnx
from engine.ir.errors import UnsupportedError
from engine.ir.logger import Logger, Severity
from engine.onnx_parser import parse
from engine.quantization import make_calibrator
from engine.runtime import Runtime

QUIET = Logger(Severity.ERROR)


def _seg_head(op: str = "ArgMax", axis: int = 1, keepdims: int = 0, **attrs):
    """A 1x1 convolution to 5 classes, then the per-pixel class index (a segmentation head)."""
    rng = np.random.default_rng()
    w = numpy_helper.from_array(rng.standard_normal((5, 3, 1, 1)).astype(np.float32), "w")
    out = (2, 1, 6, 7) if keepdims else (2, 6, 7)
    nodes = [helper.make_node("Conv", ["x", "w"], ["logits"]),
             helper.make_node(op, ["logits"], ["y"], axis=axis, keepdims=keepdims, **attrs)]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2, 3, 6, 7))],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, out)], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_matches_onnxruntime_through_the_builder(op, keepdims, precision):
    ort = pytest.importorskip("onnxruntime")
    model = _seg_head(op, keepdims=keepdims)
    x = np.random.default_rng().standard_normal((2, 3, 6, 7)).astype(np.float32)
    config = {"fp32": BuilderConfig(), "fp16": BuilderConfig(fp16=True),
              "int8": BuilderConfig(int8=True, calibrator=make_calibrator("minmax", [{"x": x}]))}[precision]
    got = Runtime(QUIET).deserialize(build_from_onnx(model, config, QUIET)).create_execution_context().execute(
        {"x": x})["y"]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.dtype == np.int64 and got.shape == want.shape
    if precision == "fp32":
        np.testing.assert_array_equal(got, want)
    else:  # rounding may swap near-tied logits: nearly every pixel agrees
        assert (got == want).mean() > 0.9


def test_gpu_partition_runs_it_on_the_host_and_the_convolution_on_the_gpu():
    net = Builder(QUIET).build(parse(_seg_head()), BuilderConfig(fp16=True)).network
    segments = split_segments(net, [la.name for la in net.layers])
    assert [(on_gpu, [la.kind.value for la in layers]) for on_gpu, layers in segments] == [
        (True, ["convolution"]), (False, ["reduce"])]


def test_select_last_index_is_refused_by_name():
    with pytest.raises(UnsupportedError, match="select_last_index=1"):
        parse(_seg_head(select_last_index=1))
