"""The hetrt command end to end: build → plan file → run in another process → inspect → compare."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from engine.cli import main, make_parser

ROOT = Path(__file__).resolve().parents[2]


def hetrt(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the command in a fresh interpreter, as a user would."""
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=300)


@pytest.fixture(scope="module")
def plan(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "small.plan"
    assert main(["build", "resnet18_small", "-o", str(path)]) == 0
    return path


def test_run_a_plan_in_another_process(plan, tmp_path):
    prof, info, times, outs = (tmp_path / n for n in ("prof.json", "info.json", "times.json", "out.npz"))
    r = hetrt("run", str(plan), "--iterations", "3", "--duration", "0", "--warmup", "0", "--dump-profile",
              "--export-profile", str(prof), "--export-layer-info", str(info), "--export-times", str(times),
              "--save-outputs", str(outs))
    assert r.returncode == 0, r.stderr
    assert "=== Performance summary ===" in r.stdout and "percentile(99%)" in r.stdout
    assert "=== Profile" in r.stdout
    profile = json.loads(prof.read_text())
    assert profile[0]["count"] >= 1 and all({"name", "timeMs", "averageMs"} <= set(p) for p in profile[1:])
    layers = json.loads(info.read_text())
    assert len(layers["Layers"]) == len(profile) - 1
    times = json.loads(times.read_text())  # trtexec's --exportTimes: a record per timed iteration
    assert len(times) >= 3 and all(t["latencyMs"] > 0 and t["endComputeMs"] >= t["startComputeMs"] for t in times)
    assert np.load(outs)[next(iter(np.load(outs).files))].shape == (1, 10)


def test_plan_outputs_equal_in_process_and_across_processes(plan, tmp_path):
    from engine.runtime import Runtime

    x = np.random.default_rng(7).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = hetrt("run", str(plan), "--iterations", "1", "--duration", "0", "--warmup", "0",
              "--load-inputs", f"input:{tmp_path / 'x.npy'}", "--save-outputs", str(tmp_path / "o.npz"))
    assert r.returncode == 0, r.stderr
    theirs = dict(np.load(tmp_path / "o.npz"))
    ours = Runtime().deserialize(plan.read_bytes()).create_execution_context().execute({"input": x})
    assert theirs.keys() == ours.keys()
    for k in ours:
        np.testing.assert_array_equal(theirs[k], ours[k])


def test_inspect_json_and_summary(plan, capsys):
    assert main(["inspect", str(plan), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["engine"]["Platform"] == "host" and doc["layers"]
    assert main(["inspect", str(plan)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Engine 'resnet18': platform host")
    assert "input  input: 1x3x64x64 FP32" in out and "activation memory" in out
    assert "convolution" in out.lower()


@pytest.mark.parametrize("flags", [[], ["--fp16"]])
def test_compare_against_onnxruntime_passes(flags, capsys):
    assert main(["compare", "resnet18_small", *flags]) == 0
    out = capsys.readouterr().out
    assert "PASSED | All outputs matched" in out


def test_compare_fails_with_impossible_tolerance(capsys):
    assert main(["compare", "resnet18_small", "--fp16", "--rtol", "1e-9", "--atol", "0"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_unsupported_op_is_one_clear_error(tmp_path):
    node = helper.make_node("Hardmax", ["x"], ["y"], name="the_hardmax")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    r = hetrt("build", str(path), "-o", str(tmp_path / "bad.plan"))
    assert r.returncode == 2
    assert "the_hardmax" in r.stderr and "Hardmax" in r.stderr and "17" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("args,match", [
    (["build", "no_such_model.onnx"], "neither a file nor a bundled model"),
    (["run", "missing.plan"], "cannot read plan"),
    (["build", "resnet18_small", "--shapes", "input:1x3"], "input"),
    (["build", "resnet18_small", "--layer-precision", "conv:fp64"], "fp32, fp16 or int8"),
])
def test_bad_requests_exit_2_with_a_message(args, match, capsys, tmp_path):
    assert main([*args, "-o", str(tmp_path / "x.plan")] if args[0] == "build" else args) == 2
    assert match in capsys.readouterr().err


def test_corrupt_plan_is_refused(plan, tmp_path):
    data = bytearray(plan.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.plan"
    bad.write_bytes(bytes(data))
    r = hetrt("run", str(bad), "--iterations", "1", "--duration", "0")
    assert r.returncode == 2 and "PlanError" in r.stderr and "Traceback" not in r.stderr


def test_every_subcommand_has_complete_help():
    parser = make_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        text = p.format_help()
        assert p.description, name
        for action in p._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings} has no help text"
        assert "usage:" in text
