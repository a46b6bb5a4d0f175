"""Every user-caused failure of the hetrt command: one '[E]' line on stderr, no traceback, exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cli_test_models import ROOT, assert_one_error_line, hetrt

from engine.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("errors")
    plan = d / "small.plan"
    assert main(["build", "resnet18_small", "-o", str(plan), "-q"]) == 0
    from engine.models import build_model

    onnx_path = d / "small.onnx"
    onnx_path.write_bytes(build_model("resnet18_small").SerializeToString())
    (d / "text.onnx").write_text("this is not a model\n")
    (d / "truncated.onnx").write_bytes(onnx_path.read_bytes()[:4000])
    (d / "existing_file").write_text("x")
    (d / "empty.onnx").write_bytes(b"")
    import numpy as np

    np.savez(d / "other.npz", other=np.zeros(3, np.float32))
    return d


def _sub(files, args):
    return [a.replace("{d}", str(files)) for a in args]


# The cases reported against the command, each in a fresh interpreter as a user runs it.
@pytest.mark.parametrize("args,needles", [
    (["compare", "{d}/text.onnx"], ["text.onnx", "not a readable ONNX model"]),
    (["compare", "{d}/truncated.onnx"], ["truncated.onnx", "not a readable ONNX model"]),
    (["run", "{d}/small.plan", "--iterations", "0"], ["--iterations", ">= 1"]),
    (["run", "{d}/small.plan", "--duration", "-1"], ["--duration", ">= 0"]),
    (["run", "{d}/small.plan", "--warmup", "-5"], ["--warmup", ">= 0"]),
    (["run", "{d}/small.plan", "--export-profile", "{d}/missing/p.json"], ["missing/p.json", "does not exist"]),
    (["run", "{d}/small.plan", "--save-outputs", "{d}/missing/o.npz"], ["missing/o.npz"]),
    (["sweep", "resnet18_small", "--fp16", "-o", "{d}/existing_file"], ["existing_file", "exists"]),
    (["build", "resnet18_small", "--batch", "0"], ["--batch", ">= 1"]),
])
def test_reported_bad_invocation_is_one_line(files, args, needles):
    assert_one_error_line(hetrt(*_sub(files, args)), 2, *(n.replace("{d}", str(files)) for n in needles))


# More bad invocations, through the same entry point in this process (same error boundary, faster).
@pytest.mark.parametrize("args,needles", [
    (["inspect", "{d}/text.onnx"], ["text.onnx"]),
    (["inspect", "{d}/empty.onnx"], ["empty.onnx", "not an ONNX model"]),
    (["compare", "{d}/small.plan"], ["small.plan", "is a hetrt plan"]),
    (["build", "resnet18_small", "-o", "{d}"], ["is a directory"]),
    (["run", "{d}/small.plan", "--seed", "-1"], ["--seed must be >= 0"]),
    (["inspect", "{d}/small.plan", "--format", "xml"], ["--format", "invalid choice"]),
    ([], ["COMMAND"]),
    (["run", "{d}/small.plan", "--avg-runs", "0"], ["--avg-runs"]),
    (["run", "{d}/small.plan", "--iterations", "ten"], ["--iterations", "not an integer"]),
    (["build", "resnet18_small", "--builder-optimization-level", "7"], ["--builder-optimization-level"]),
    (["compare", "resnet18_small", "--rtol", "-1"], ["--rtol"]),
    (["place", "resnet18_small", "--fp16", "--frames", "0"], ["--frames"]),
    (["run", "{d}/small.plan", "--export-times", "{d}"], ["is a directory"]),
    (["run", "{d}/missing.plan"], ["missing.plan"]),
    (["run", "{d}/small.plan", "--load-inputs", "input:{d}/none.npy"], ["none.npy"]),
    (["place", "resnet18_small", "--fp16", "--lambda", "0.3"], ["--lambda", "--objective weighted"]),
    (["place", "resnet18_small", "--fp16", "--platform", "host"], ["--platform host"]),
    (["sweep", "resnet18_small", "--fp16", "--objectives", "edp", "--lambdas", "1", "-o", "{d}/s"], ["--lambdas"]),
    (["build", "resnet18_small", "--layer-precision", "conv1:int8", "-o", "{d}/x.plan"], ["conv1:int8", "--int8"]),
    (["build", "resnet18_small", "--layer-precision", "nomatch*:fp16", "-o", "{d}/x.plan"], ["nomatch*"]),
    (["compare", "resnet18_small", "--load-outputs", "{d}/text.onnx"], ["--load-outputs"]),
    (["surgeon", "extract", "{d}/small.onnx", "--outputs", "no_such_tensor", "-o", "{d}/s.onnx"],
     ["no_such_tensor"]),
    (["nosuchcommand"], ["invalid choice"]),
    (["run", "{d}/small.plan", "--load-inputs", "input:{d}/other.npz"], ["no array 'input'", "other"]),
    (["surgeon"], ["OPERATION"]),
])
def test_bad_invocation_is_one_line(files, args, needles, capsys):
    assert main(_sub(files, args)) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[E] "), captured.err
    for n in needles:
        assert n.replace("{d}", str(files)) in lines[0], (n, lines[0])


def test_build_to_a_missing_folder_fails_before_building(files):
    r = hetrt("build", "resnet18_small", "-o", str(files / "no/such/dir/x.plan"))
    assert_one_error_line(r, 2, "no/such/dir")
    assert "Building" not in r.stdout and "Parsed" not in r.stdout  # nothing was built


def test_batch_on_a_fixed_batch_model_is_an_error(files, tmp_path):
    import onnx

    model = onnx.load(files / "small.onnx")
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    path = tmp_path / "fixed.onnx"
    onnx.save(model, path)
    assert_one_error_line(hetrt("build", str(path), "--batch", "4", "-o", str(tmp_path / "p.plan")), 2,
                          "--batch 4", "fixes its batch")


def test_inspect_into_a_closed_pipe_is_silent(files):
    """`hetrt inspect x.plan | head -1`: the reader is gone before hetrt writes (the read end is closed
    at once), so every write meets EPIPE; hetrt stops quietly like a unix tool."""
    from cli_test_models import _env

    p = subprocess.Popen([sys.executable, "-m", "engine.cli", "inspect", str(files / "small.plan")], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141  # 128 + SIGPIPE, what a shell reports for `yes | head -1`
    assert err == "", err


def test_a_plan_with_any_extension_runs(files, tmp_path):
    engine_file = tmp_path / "model.engine"
    engine_file.write_bytes((files / "small.plan").read_bytes())
    r = hetrt("run", str(engine_file), "--iterations", "1", "--duration", "0", "--warmup", "0")
    assert r.returncode == 0, r.stderr
    assert "Loaded plan" in r.stdout and "=== Performance summary ===" in r.stdout


def test_build_flags_on_a_plan_are_reported(files):
    r = hetrt("run", str(files / "small.plan"), "--fp16", "--batch", "2", "--iterations", "1", "--duration", "0",
              "--warmup", "0")
    assert r.returncode == 0, r.stderr
    assert "[W]" in r.stdout and "--fp16" in r.stdout and "--batch" in r.stdout and "ignored" in r.stdout


def test_interrupt_is_one_line(files, monkeypatch, capsys):
    import engine.cli.inspect as inspect_cmd

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(inspect_cmd, "run", interrupted)
    assert main(["inspect", str(files / "small.plan")]) == 130
    assert capsys.readouterr().err.strip() == "[E] interrupted"


def test_missing_optional_dependency_is_named(files, monkeypatch, capsys):
    import engine.cli.inspect as inspect_cmd

    def needs_it(args):
        import matplotlib_not_here  # noqa: F401

    monkeypatch.setattr(inspect_cmd, "run", needs_it)
    assert main(["inspect", str(files / "small.plan")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("[E] ") and "matplotlib_not_here" in err[0]


def test_verbose_run_explains_the_metrics(files):
    r = hetrt("run", str(files / "small.plan"), "--iterations", "1", "--duration", "0", "--warmup", "0", "-v")
    assert r.returncode == 0 and "Explanations of the performance metrics:" in r.stdout
    assert "Total Host Walltime: from the first timed inference" in r.stdout


def test_a_bug_is_still_one_line(files, monkeypatch, capsys):
    import engine.cli.inspect as inspect_cmd

    def buggy(args):
        raise RuntimeError("an unexpected\nmulti-line failure")

    monkeypatch.setattr(inspect_cmd, "run", buggy)
    assert main(["inspect", str(files / "small.plan")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("[E] internal error") and "RuntimeError" in err[0]
    assert "HETRT_TRACEBACK=1" in err[0]
