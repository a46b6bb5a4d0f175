"""Interrupted writes never destroy the previous file (audit finding 7).

``hetrt build -o existing.plan`` is killed (SIGKILL) or interrupted (SIGINT) at random points: the
file at the destination is afterwards the old plan byte for byte or a complete new plan, never a
truncated or empty one. The calibration cache is written the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine import plan as plan_format
from engine.ir.errors import PlanError

ROOT = Path(__file__).resolve().parents[2]


def _mlp(seed: int, width: int = 2048, depth: int = 4) -> onnx.ModelProto:
    """64 MiB of weights, so the plan write itself takes a good part of the build's last second."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i in range(depth):
        inits.append(numpy_helper.from_array(rng.normal(size=(width, width)).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}"], name=f"mm{i}"))
        prev = f"h{i}"
    g = helper.make_graph(nodes, f"mlp{seed}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, width])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _build_cmd(model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "engine.cli", "build", str(model), "-o", str(out)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("atomic")
    old_model, new_model = d / "old.onnx", d / "new.onnx"
    onnx.save(_mlp(1), str(old_model))
    onnx.save(_mlp(2), str(new_model))
    ref = d / "ref.plan"
    t0 = time.perf_counter()
    subprocess.run(_build_cmd(old_model, ref), check=True, env=_env(), cwd=ROOT, capture_output=True)
    duration = time.perf_counter() - t0
    return d, new_model, ref.read_bytes(), duration


def _wait_for_write(out: Path, proc: subprocess.Popen, deadline: float) -> None:
    """Return as soon as the build starts writing: the destination changes (an in-place write) or a
    new file appears beside it (a temporary file)."""
    before = out.stat()
    names = {p.name for p in out.parent.iterdir()}
    while time.perf_counter() < deadline and proc.poll() is None:
        st = out.stat()
        if (st.st_size, st.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            return
        if {p.name for p in out.parent.iterdir()} - names:
            return
        time.sleep(0.0005)


def _trial(setup, rng, sig: signal.Signals, k: int, targeted: bool) -> str:
    """One interrupted build: at a random point, or (targeted) the moment the write begins."""
    d, new_model, old_bytes, duration = setup
    out = d / f"existing{k}.plan"
    out.write_bytes(old_bytes)
    proc = subprocess.Popen(_build_cmd(new_model, out), env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if targeted:
        _wait_for_write(out, proc, time.perf_counter() + 3 * duration + 5)
        time.sleep(float(rng.uniform(0.0, 0.01)))
    else:
        time.sleep(float(rng.uniform(0.5, 1.05)) * duration)  # the write is near the end of the build
    proc.send_signal(sig)
    proc.wait(timeout=120)
    data = out.read_bytes()
    out.unlink()
    if data == old_bytes:
        return "old"
    try:
        plan_format.deserialize(data)
    except PlanError as e:
        pytest.fail(f"{sig.name} (targeted={targeted}) left a broken plan ({len(data)} bytes): {e}")
    return "new"


def _trials(setup, n: int, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    seen = {"old": 0, "new": 0}
    for k in range(n):
        sig = signal.SIGKILL if k % 2 == 0 else signal.SIGINT
        seen[_trial(setup, rng, sig, k, targeted=k % 4 >= 2)] += 1
    return seen


def test_interrupted_build_keeps_old_plan_or_writes_a_complete_one(setup):
    seen = _trials(setup, 4, seed=0)
    assert sum(seen.values()) == 4


@pytest.mark.slow
def test_interrupted_build_100_trials(setup):
    seen = _trials(setup, 100, seed=1)
    assert sum(seen.values()) == 100
    print("outcomes:", seen)


def test_failed_write_keeps_old_calibration_cache(tmp_path, monkeypatch):
    """A write that fails half-way (disk full) leaves the previous cache intact."""
    from engine.ir.errors import BuildError
    from engine.quantization.calibrator import EntropyCalibrator

    cache = tmp_path / "calib.cache"
    cache.write_bytes(b"old cache\n")
    cal = EntropyCalibrator(cache_file=cache)
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def write(self, data):
            self.f.write(data[:3])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", *a, **k: Full(real_fdopen(fd, mode, *a, **k)))
    with pytest.raises(BuildError, match="No space left"):
        cal.write_calibration_cache(b"new cache that is longer\n")
    monkeypatch.undo()
    assert cache.read_bytes() == b"old cache\n"
    assert [p.name for p in tmp_path.iterdir()] == ["calib.cache"]  # no temporary file left behind


def test_full_disk_during_build_keeps_the_old_plan(tmp_path, monkeypatch, capsys):
    """A write that fails half-way (disk full) is an error message, not a traceback, and the previous
    plan stays as it was."""
    from engine.cli import main

    model = tmp_path / "m.onnx"
    onnx.save(_mlp(3, width=64, depth=2), str(model))
    out = tmp_path / "existing.plan"
    out.write_bytes(b"the old plan")
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def write(self, data):
            self.f.write(data[:100])
            raise OSError(28, "No space left on device")

        def flush(self):
            pass

        def fileno(self):
            return self.f.fileno()

    monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", *a, **k: Full(real_fdopen(fd, mode, *a, **k))
                        if "w" in mode else real_fdopen(fd, mode, *a, **k))
    assert main(["build", str(model), "-o", str(out)]) == 2
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert out.read_bytes() == b"the old plan"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.plan", "m.onnx"]
