"""ONNX-side tools: inspect MODEL.onnx, surgeon extract, debug reduce."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from cli_test_models import assert_one_error_line, chain_model, hetrt, overflow_model, unsupported_model

from engine.cli import main


def test_inspect_onnx_lists_every_unsupported_op_at_once(tmp_path, capsys):
    path = unsupported_model(tmp_path / "bad.onnx")
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "hetrt cannot parse 3 op type(s)" in out
    for op, node in (("Hardmax", "the_hardmax"), ("Det", "the_det"), ("com.example::FancyOp", "the_custom")):
        assert f"{op}: 1 node(s) ({node})" in out
    assert "Relu" not in out.split("cannot parse", 1)[1]
    assert "input  x: 2x4x4 FLOAT" in out and "opset 17" in out
    # a build names only the first; inspect named all three
    assert_one_error_line(hetrt("build", str(path), "-o", str(tmp_path / "x.plan")), 2)


def test_inspect_onnx_json_histogram_and_parameters(tmp_path, capsys):
    path = chain_model(tmp_path / "chain.onnx", n=4)
    assert main(["inspect", str(path), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["op_histogram"] == {"MatMul": 4, "Tanh": 4}
    assert doc["parameters"] == 4 * 8 * 8 and doc["unsupported_ops"] == {}
    assert doc["inputs"] == {"x": "2x8 FLOAT"} and doc["outputs"] == {"t3": "2x8 FLOAT"}


def test_surgeon_extract_computes_the_same_tensor(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = chain_model(tmp_path / "chain.onnx")
    sub = tmp_path / "sub.onnx"
    r = hetrt("surgeon", "extract", str(path), "--inputs", "t1", "--outputs", "t3", "-o", str(sub))
    assert r.returncode == 0, r.stderr
    model = onnx.load(sub)
    assert [n.name for n in model.graph.node] == ["mm2", "tanh2", "mm3", "tanh3"]
    x = np.random.default_rng(2).uniform(-1, 1, (2, 8)).astype(np.float32)
    full = onnx.load(path)
    full.graph.output.extend([onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [2, 8])
                              for n in ("t1", "t3")])
    t1, t3 = ort.InferenceSession(full.SerializeToString()).run(["t1", "t3"], {"x": x})
    (got,) = ort.InferenceSession(sub.read_bytes()).run(["t3"], {"t1": t1})
    np.testing.assert_allclose(got, t3, rtol=1e-6)


def test_surgeon_extract_needs_every_boundary_tensor(tmp_path):
    path = chain_model(tmp_path / "chain.onnx")
    assert_one_error_line(hetrt("surgeon", "extract", str(path), "--inputs", "nope", "--outputs", "t3",
                                "-o", str(tmp_path / "s.onnx")), 2, "'nope'")


def test_debug_reduce_finds_the_overflowing_node(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    path = overflow_model(tmp_path / "overflow.onnx")
    small, inputs = tmp_path / "min.onnx", tmp_path / "min_inputs.npz"
    assert main(["debug", "reduce", str(path), "--fp16", "-o", str(small), "--save-inputs", str(inputs)]) == 0
    model = onnx.load(small)
    assert [n.name for n in model.graph.node] == ["fc2_overflows"]
    assert list(np.load(inputs)) == ["a_relu"]
    capsys.readouterr()
    # the reduced model still fails on its saved inputs, and passes in FP32
    assert main(["compare", str(small), "--fp16", "--load-inputs", str(inputs)]) == 1
    assert main(["compare", str(small), "--load-inputs", str(inputs)]) == 0


def test_debug_reduce_refuses_a_passing_model(tmp_path):
    pytest.importorskip("onnxruntime")
    path = chain_model(tmp_path / "chain.onnx")
    assert_one_error_line(hetrt("debug", "reduce", str(path), "-o", str(tmp_path / "m.onnx")), 2, "passes")
