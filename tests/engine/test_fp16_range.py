"""FP16 builds keep constants that would be all zeros in FP16 at the smallest FP16 magnitude
(``engine/fp16_range``): ``x / max(||x||, 1e-12)`` as ``torch.nn.functional.normalize`` exports
it, on rows that are all zeros (a padded attention window), must come out 0, not 0 / 0."""

from __future__ import annotations

import io

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import engine.fp16_range as fp16_range
from engine.builder import BuilderConfig, build_from_onnx
from engine.fp16_range import kept_in_fp16, vanishes_in_fp16
from engine.ir.logger import Logger, Severity
from engine.runtime import Runtime

SHAPE = (2, 6, 16)


def normalize_model(w: np.ndarray) -> onnx.ModelProto:
    """y = normalize(x, dim=-1) @ w, exported the way PyTorch exports F.normalize (opset 17)."""
    nodes = [helper.make_node("ReduceL2", ["x"], ["n"], axes=[-1], keepdims=1),
             helper.make_node("Clip", ["n", "eps", ""], ["c"]),
             helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Expand", ["c", "s"], ["e"]),
             helper.make_node("Div", ["x", "e"], ["q"]),
             helper.make_node("MatMul", ["q", "w"], ["y"])]
    graph = helper.make_graph(nodes, "normalize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (*SHAPE[:2], w.shape[1]))],
                              [numpy_helper.from_array(np.array(1e-12, np.float32), "eps"),
                               numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, x: np.ndarray, logger: Logger, **config) -> np.ndarray:
    plan = build_from_onnx(model, BuilderConfig(fp16=True, batch=SHAPE[0], **config), logger)
    engine = Runtime(Logger(Severity.ERROR)).deserialize(plan)
    return engine.create_execution_context().execute({"x": x})["y"]


def test_normalize_of_zero_rows_is_zero_not_nan_in_fp16():
    rng = np.random.default_rng()
    w = rng.standard_normal((SHAPE[2], 8)).astype(np.float32)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    x[0, 2:5] = 0  # padded tokens
    model = normalize_model(w)
    log = io.StringIO()
    got = run(model, x, Logger(Severity.INFO, stream=log))
    xd = x.astype(np.float64)
    want = xd / np.maximum(np.linalg.norm(xd, axis=-1, keepdims=True), 1e-12) @ w
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got[0, 2:5], 0)
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2 * np.abs(want).max())
    assert "2**-24" in log.getvalue() and "1e-12" in log.getvalue()


def test_without_the_rounding_away_from_zero_the_zero_rows_divide_0_by_0(monkeypatch):
    """What the rounding away from zero is for: with the epsilon at 0, the zero rows are NaN."""
    rng = np.random.default_rng()
    x = rng.standard_normal(SHAPE).astype(np.float32)
    x[1, 0] = 0
    model = normalize_model(rng.standard_normal((SHAPE[2], 8)).astype(np.float32))
    monkeypatch.setattr(fp16_range, "keep_vanishing_constants", lambda network, logger: [])
    got = run(model, x, Logger(Severity.ERROR))
    assert np.isnan(got[1, 0]).all() and np.isfinite(got[0]).all()


def test_vanishes_in_fp16():
    assert vanishes_in_fp16(np.float32(1e-12))
    assert vanishes_in_fp16(np.array([1e-12, -2e-9], np.float32))
    assert not vanishes_in_fp16(np.array([1e-12, 1.0], np.float32))  # part of it survives
    assert not vanishes_in_fp16(np.zeros(3, np.float32))  # zero already
    assert not vanishes_in_fp16(np.float32(6e-8))  # the smallest subnormal survives
    assert not vanishes_in_fp16(np.array([1, 2], np.int64))
    np.testing.assert_array_equal(kept_in_fp16(np.float32([1e-12, 0, -3e-9])), np.float32([2**-24, 0, -2**-24]))
    assert not vanishes_in_fp16(kept_in_fp16(np.float32([1e-12])))
