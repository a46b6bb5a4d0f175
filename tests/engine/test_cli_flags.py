"""What the CLI does with its flags: demo's plan and comparison, DLA runs, pinned precisions, trtexec flags."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from cli_test_models import assert_one_error_line, hetrt
from onnx import TensorProto, helper, numpy_helper

from engine.cli import main

FAST = ["--iterations", "2", "--duration", "0", "--warmup", "0"]


@pytest.fixture
def bundled_onnx(tmp_path):
    from engine.models import build_model

    folder = tmp_path / "models"
    folder.mkdir()
    path = folder / "rs.onnx"
    onnx.save(build_model("resnet18_small"), path)
    return path


def test_demo_with_a_model_file_writes_nothing_next_to_it(bundled_onnx, tmp_path, monkeypatch, capsys):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main(["demo", "--model", str(bundled_onnx), *FAST]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in bundled_onnx.parent.iterdir()) == ["rs.onnx"]
    assert list(cwd.iterdir()) == []
    assert "temporary folder" in out and "PASSED | All outputs matched" in out


def test_demo_without_onnxruntime_says_there_is_no_comparison(bundled_onnx, monkeypatch, capsys, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    plan = tmp_path / "kept.plan"
    assert main(["demo", "--model", str(bundled_onnx), "-o", str(plan), *FAST]) == 0
    out = capsys.readouterr().out
    assert "No output comparison: ONNX Runtime is not installed" in out
    assert "PASSED" not in out and plan.exists()


def _softmax_model(path):
    rng = np.random.default_rng(5)
    w = numpy_helper.from_array(rng.uniform(-1, 1, (8, 8)).astype(np.float32), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"], name="fc"),
             helper.make_node("Softmax", ["m"], ["y"], name="the_softmax", axis=-1)]
    graph = helper.make_graph(nodes, "sm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    calib = path.parent / "calib"
    calib.mkdir()
    np.save(calib / "x.npy", rng.uniform(-1, 1, (8, 8)).astype(np.float32))  # a stack of 4 batches of 2
    return path, calib


def test_an_int8_pin_that_cannot_run_fails_the_build(tmp_path):
    path, calib = _softmax_model(tmp_path / "sm.onnx")
    r = hetrt("build", str(path), "--int8", "--calib", str(calib), "--layer-precision", "the_softmax:int8",
              "-o", str(tmp_path / "sm.plan"))
    assert_one_error_line(r, 2, "the_softmax:int8", "cannot run in int8")
    assert not (tmp_path / "sm.plan").exists()
    # prefer: a warning, and the layer keeps the precision it can run in
    r = hetrt("build", str(path), "--int8", "--calib", str(calib), "--layer-precision", "the_softmax:int8",
              "--precision-constraints", "prefer", "-o", str(tmp_path / "sm.plan"))
    assert r.returncode == 0, r.stderr
    assert "[W] --layer-precision the_softmax:int8" in r.stdout and "softmax has no INT8 kernel" in r.stdout
    # the same pin on a layer that has an INT8 kernel builds, and the plan honours it
    assert main(["compare", str(path), "--int8", "--calib", str(calib), "--layer-precision", "f*:int8"]) == 0


def test_dla_plan_runs_once_and_reports_the_simulated_clock(tmp_path):
    from engine.runtime import Runtime

    plan = tmp_path / "dla.plan"
    assert main(["build", "resnet18_small", "--platform", "orin-agx-64gb", "--use-dla-core", "0", "--fp16",
                 "--allow-gpu-fallback", "-o", str(plan), "-q"]) == 0
    times, outs = tmp_path / "t.json", tmp_path / "o.npz"
    r = hetrt("run", str(plan), "--export-times", str(times), "--save-outputs", str(outs))  # default 3 s duration
    assert r.returncode == 0, r.stderr
    assert "=== Performance summary (simulated target clock) ===" in r.stdout
    doc = json.loads(times.read_text())
    engine = Runtime().deserialize(plan.read_bytes())
    assert doc["clock"] == "simulated target clock"
    assert doc["latency_ms"]["mean"] == pytest.approx(engine.placement["objective_values"]["latency_ms"])
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    expected = engine.create_execution_context().execute({"input": x})
    saved = dict(np.load(outs))
    for k, v in expected.items():
        np.testing.assert_array_equal(saved[k], v)


def test_avg_runs_reports_means_of_consecutive_runs(tmp_path):
    times = tmp_path / "t.json"
    plan = tmp_path / "p.plan"
    assert main(["build", "resnet18_small", "-o", str(plan), "-q"]) == 0
    r = hetrt("run", str(plan), "--avg-runs", "3", "--iterations", "2", "--duration", "0", "--warmup", "0",
              "--export-times", str(times))
    assert r.returncode == 0, r.stderr
    assert "means of 3 consecutive inferences" in r.stdout
    assert len(json.loads(times.read_text())) >= 6  # one record per inference (trtexec's --exportTimes)


def test_trtexec_build_flags_reach_the_plan(tmp_path):
    from engine.runtime import Runtime

    plan = tmp_path / "p.plan"
    cache = tmp_path / "timing.json"
    assert main(["build", "resnet18_small", "--timing-cache", str(cache), "--builder-optimization-level", "1",
                 "--fp16", "--tactic-sources=-cudnn,-cublas", "-o", str(plan), "-q"]) == 0
    cfg = Runtime().deserialize(plan.read_bytes()).build_config
    assert cfg["timing_cache"] == str(cache) and cfg["optimization_level"] == 1 and cfg["fp16"]
    assert cfg["tactic_sources"] == ["cublaslt"] and cfg["precision_by_timing"]
    assert main(["build", "resnet18_small", "--fp16", "--no-precision-timing", "-o", str(plan), "-q"]) == 0
    assert not Runtime().deserialize(plan.read_bytes()).build_config["precision_by_timing"]
    assert_one_error_line(hetrt("build", "resnet18_small", "--tactic-sources=+cutlass"), 2, "cutlass")
    assert_one_error_line(hetrt("build", "resnet18_small", "--timing-cache", str(tmp_path / "no/dir/t.json")), 2,
                          "no/dir")


def test_readme_command_examples_parse():
    """Every complete `hetrt ...` example of the README's command-line section is accepted by the parser."""
    import re
    import shlex

    from cli_test_models import ROOT

    from engine.cli import make_parser

    section = (ROOT / "README.md").read_text().split("## Command line", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    examples = [ln.split("#")[0] for ln in block.splitlines() if ln.startswith("hetrt") and "[" not in ln]
    assert len(examples) >= 6
    parser = make_parser()
    for line in examples:
        args = parser.parse_args(shlex.split(line)[1:])
        assert callable(args.func), line
    table = section.split("### For trtexec users", 1)[1]
    rows = [ln.split("|")[2] for ln in table.splitlines() if ln.startswith("| `")]
    flags = {f for col in rows for f in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", col)}
    assert len(flags) > 20
    helps = " ".join(p.format_help() for p in _subparsers(parser))
    for flag in flags:
        assert flag in helps, flag


def _subparsers(parser):
    sub = next(a for a in parser._actions if a.dest == "command")
    return list(sub.choices.values())


class _FakeTTY:
    """stderr that claims to be a terminal, keeping what was written."""

    def __init__(self):
        import io

        self.buf = io.StringIO()

    def isatty(self):
        return True

    def write(self, s):
        return self.buf.write(s)

    def flush(self):
        pass


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_bars_on_a_terminal_unless_quiet(tmp_path, monkeypatch, quiet):
    import sys

    plan = tmp_path / "p.plan"
    assert main(["build", "resnet18_small", "-o", str(plan), "-q"]) == 0
    tty = _FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    rc = main(["run", str(plan), "--iterations", "3", "--duration", "0", "--warmup", "0", "--dump-profile",
               "--profile-iterations", "2", *(["--quiet"] if quiet else [])])
    assert rc == 0
    text = tty.buf.getvalue()
    if quiet:
        assert text == ""
    else:
        assert "Inferences" in text and "Profiled inferences" in text


def test_calibration_progress_drives_a_bar():
    from engine.ir.logger import Logger, Progress

    events = []

    class Bar:
        def update(self, n):
            events.append(("update", n))

        def close(self):
            events.append(("close",))

    log = Logger()
    log.progress_factory = lambda what, total: events.append(("open", what, total)) or Bar()
    p = Progress(log, "Calibration batches", total=3)
    for i in (1, 2, 3):
        p.update(i)
    assert events == [("open", "Calibration batches", 3), ("update", 1), ("update", 1), ("update", 1), ("close",)]
    assert log.records == []  # the bar replaces the progress lines


def test_a_new_subcommand_module_and_inspect_topic_are_discovered(monkeypatch, capsys):
    """A module of engine.cli with NAME/add_parser/run becomes a subcommand; inspect_<topic> an inspect topic."""
    import pkgutil
    import sys
    import types

    import engine.cli as package

    cmd = types.ModuleType("engine.cli.hello")
    cmd.NAME = "hello"
    cmd.add_parser = lambda sub: sub.add_parser("hello", help="say hello", description="Say hello.")
    cmd.run = lambda args: print("hello from a module") or 0
    topic = types.ModuleType("engine.cli.inspect_widgets")
    topic.__doc__ = "Widgets of a platform."
    topic.TOPIC = "widgets"
    topic.add_arguments = lambda p: p.add_argument("--platform", default="orin-agx-64gb")
    topic.run = lambda args: print(f"widgets of {args.platform}") or 0
    monkeypatch.setitem(sys.modules, "engine.cli.hello", cmd)
    monkeypatch.setitem(sys.modules, "engine.cli.inspect_widgets", topic)
    real = pkgutil.iter_modules

    def with_extra(path=None, prefix=""):
        yield from real(path, prefix)
        if path == package.__path__:
            for name in ("hello", "inspect_widgets"):
                yield pkgutil.ModuleInfo(None, name, False)

    monkeypatch.setattr(pkgutil, "iter_modules", with_extra)
    assert main(["hello"]) == 0
    assert main(["inspect", "widgets", "--platform", "xavier-agx"]) == 0
    assert capsys.readouterr().out.splitlines() == ["hello from a module", "widgets of xavier-agx"]


def test_sweep_draws_the_placements_worth_comparing(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "new" / "sweep"  # created, parents included
    assert main(["sweep", "resnet18_small", "--int8", "--power-modes", "30W", "--objectives", "latency,energy",
                 "--workers", "1", "-o", str(out)]) == 0
    for f in ("gantt.png", "gantt_fastest.png", "gantt_lowest_energy.png", "gantt_dla_first.png"):
        assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind
    assert "gantt_fastest.png" in capsys.readouterr().out


def test_layer_device_types_pin_layers_under_every_policy(tmp_path):
    from engine.runtime import Runtime

    plan = tmp_path / "pin.plan"
    orin = ["--platform", "orin-agx-64gb", "--fp16"]
    # dla-first without GPU fallback: a layer pinned to the GPU is there on purpose, not a fallback
    assert main(["build", "resnet18_small", *orin, "--use-dla-core", "0", "--layer-device-types", "fc_*:gpu",
                 "-o", str(plan), "-q"]) == 0
    devices = Runtime().deserialize(plan.read_bytes()).placement["devices"]
    assert devices["fc_178"] == "gpu" and all(d == "dla0" for n, d in devices.items() if n != "fc_178")
    # the exact solver honours pins both ways
    assert main(["build", "resnet18_small", *orin, "--placement", "optimal", "--layer-device-types",
                 "conv_2:dla,conv_11:gpu", "-o", str(plan), "-q"]) == 0
    devices = Runtime().deserialize(plan.read_bytes()).placement["devices"]
    first = next(n for n in devices if n.startswith("conv_2 "))
    second = next(n for n in devices if n.startswith("conv_11 "))
    assert devices[first].startswith("dla") and devices[second] == "gpu"


@pytest.mark.parametrize("args,needle", [
    (["--layer-device-types", "conv_2:dla"], "needs --use-dla-core"),
    (["--use-dla-core", "0", "--layer-device-types", "nomatch*:gpu"], "nomatch*"),
    (["--use-dla-core", "0", "--layer-device-types", "conv_2:tpu"], "LAYER:gpu or LAYER:dla"),
    (["--use-dla-core", "0", "--layer-device-types", "not_a_node:gpu"], "not_a_node"),
])
def test_bad_layer_device_types(args, needle, tmp_path, capsys):
    assert main(["build", "resnet18_small", "--platform", "orin-agx-64gb", "--fp16", *args,
                 "-o", str(tmp_path / "p.plan")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
