"""Small ONNX models for the CLI tests, generated with onnx.helper and seeded weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]


def hetrt(*args: str, cwd: Path | None = None, stdin=None) -> subprocess.CompletedProcess:
    """Run the command in a fresh interpreter, as a user would."""
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=300, env=_env(), stdin=stdin)


def _env() -> dict:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("HETRT_TRACEBACK", None)
    return env


def assert_one_error_line(r: subprocess.CompletedProcess, status: int = 2, *needles: str) -> str:
    """The CLI's contract for a user-caused failure: one '[E]' line on stderr, no traceback, the status."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == status, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith("[E] "), r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = 8
    onnx.save(model, path)
    return path


def overflow_model(path: Path) -> Path:
    """x -> fc1 -> relu1 -> fc2_overflows (|values| ~ 1e5 > fp16's 65504) -> fc3 -> relu3: finite in FP32,
    Inf/NaN from fc2_overflows on in FP16."""
    rng = np.random.default_rng(0)
    w1 = rng.uniform(-40, 40, (16, 16))
    w2 = rng.uniform(100, 200, (16, 16)) * np.sign(rng.uniform(-1, 1, (16, 16)))
    w3 = rng.uniform(-1, 1, (16, 16))
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["a"], name="fc1"),
             helper.make_node("Relu", ["a"], ["a_relu"], name="relu1"),
             helper.make_node("MatMul", ["a_relu", "W2"], ["b"], name="fc2_overflows"),
             helper.make_node("MatMul", ["b", "W3"], ["c"], name="fc3"),
             helper.make_node("Relu", ["c"], ["y"], name="relu3")]
    inits = [numpy_helper.from_array(w.astype(np.float32), n) for n, w in (("W1", w1), ("W2", w2), ("W3", w3))]
    graph = helper.make_graph(nodes, "overflow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], inits)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def chain_model(path: Path, n: int = 6) -> Path:
    """x -> (MatMul, Tanh) * n: a chain whose every tensor ONNX Runtime can return."""
    rng = np.random.default_rng(1)
    nodes, inits, cur = [], [], "x"
    for i in range(n):
        inits.append(numpy_helper.from_array(rng.uniform(-0.5, 0.5, (8, 8)).astype(np.float32), f"W{i}"))
        nodes.append(helper.make_node("MatMul", [cur, f"W{i}"], [f"m{i}"], name=f"mm{i}"))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"t{i}"], name=f"tanh{i}"))
        cur = f"t{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [2, 8])], inits)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def unsupported_model(path: Path) -> Path:
    """Three op types hetrt does not parse (Hardmax, Det, a custom-domain op) among supported ones."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Hardmax", ["r"], ["h"], name="the_hardmax"),
             helper.make_node("Det", ["h"], ["d"], name="the_det"),
             helper.make_node("FancyOp", ["d"], ["y"], name="the_custom", domain="com.example")]
    graph = helper.make_graph(nodes, "unsupported", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    return _save(model, path)
