"""Batched MatMul with broadcasting and transposes, through parser → build → plan → runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.builder import BuilderConfig, build_from_onnx
from engine.ir.logger import Logger, Severity
from engine.runtime import Runtime

ort = pytest.importorskip("onnxruntime")

CASES = {  # name: (A shape, B shape as multiplied, B stored transposed (a Transpose node), B constant)
    "broadcast_both": ((2, 1, 5, 8), (3, 8, 6), False, False),
    "transposed_b": ((2, 4, 5, 8), (2, 4, 8, 6), True, False),
    "const_batched_b": ((2, 4, 5, 8), (4, 8, 6), False, True),
    "vector_b": ((2, 3, 5, 8), (8,), False, False),
    "vector_a": ((8,), (2, 3, 8, 6), False, False),
    "rank_2_by_rank_4": ((5, 8), (2, 3, 8, 6), False, False),
}


def matmul_model(a_shape, b_shape, transpose_b, b_const, seed):
    rng = np.random.default_rng(seed)
    nodes, inits, inputs = [], [], [helper.make_tensor_value_info("a", TensorProto.FLOAT, a_shape)]
    b_stored = b_shape if not transpose_b else (*b_shape[:-2], b_shape[-1], b_shape[-2])
    if b_const:
        inits.append(numpy_helper.from_array(rng.standard_normal(b_stored).astype(np.float32), "b"))
    else:
        inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, b_stored))
    b = "b"
    if transpose_b:
        perm = list(range(len(b_stored)))
        perm[-1], perm[-2] = perm[-2], perm[-1]
        nodes.append(helper.make_node("Transpose", ["b"], ["bt"], perm=perm))
        b = "bt"
    nodes.append(helper.make_node("MatMul", ["a", b], ["y"]))
    y_shape = np.matmul(np.zeros(a_shape), np.zeros(b_shape)).shape
    graph = helper.make_graph(nodes, "mm", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_batched_matmul_matches_onnxruntime(case, fp16):
    a_shape, b_shape, transpose_b, b_const = CASES[case]
    model = matmul_model(a_shape, b_shape, transpose_b, b_const, seed=len(case))
    rng = np.random.default_rng(7)
    feeds = {vi.name: rng.standard_normal([d.dim_value for d in vi.type.tensor_type.shape.dim]).astype(np.float32)
             for vi in model.graph.input}
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    logger = Logger(Severity.ERROR)
    context = Runtime(logger).deserialize(build_from_onnx(model, BuilderConfig(fp16=fp16), logger)) \
        .create_execution_context()
    got = context.execute(feeds)["y"]
    assert got.shape == want.shape == np.matmul(np.zeros(a_shape), np.zeros(b_shape)).shape
    rel = 1e-2 if fp16 else 1e-5
    np.testing.assert_allclose(got, want, rtol=rel, atol=rel * float(np.abs(want).max()))


def test_onnx_checker_accepts_the_cases():
    for a_shape, b_shape, transpose_b, b_const in CASES.values():
        onnx.checker.check_model(matmul_model(a_shape, b_shape, transpose_b, b_const, seed=0))
