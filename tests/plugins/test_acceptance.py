"""A user plugin end to end: ONNX with a custom-domain op → plan → a fresh process with --plugins.

Without the plugin the plan fails to load with a one-line PlanError naming it; a plan crafted with
garbage plugin fields fails the schema check; loading never imports the user's file by itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from engine import plan as plan_format
from engine.builder import BuilderConfig, build_from_onnx
from engine.ir.errors import PlanError
from engine.ir.layers import LayerKind, PluginParams
from engine.plugin import load_plugin_file

ROOT = Path(__file__).resolve().parents[2]

PLUGIN_SOURCE = textwrap.dedent('''
    """A user plugin: y = gain * x * sigmoid(slope * x) + bias[c], with a per-channel bias."""
    import pathlib

    import numpy as np

    from engine import plugin

    pathlib.Path(__file__).with_suffix(".imported").write_text("imported")

    @plugin.register("acme::GatedSwish", version="1")
    def gated_swish(x: plugin.TensorDesc, gain: float, slope: float = 1.0,
                    bias: list[float] = ()) -> plugin.TensorDesc:
        if len(bias) != x.shape[1]:
            raise ValueError(f"bias needs {x.shape[1]} values, got {len(bias)}")
        return x.like()

    @plugin.impl("acme::GatedSwish", backend="reference")
    def gated_swish_ref(x, gain, slope, bias):
        b = np.asarray(bias, np.float32).reshape(1, -1, *([1] * (x.ndim - 2)))
        return (gain * x / (1.0 + np.exp(-slope * x)) + b).astype(np.float32)

    @plugin.impl("acme::GatedSwish", backend="gpu")
    def gated_swish_gpu(x, gain, slope, bias, stream=None):
        import cupy
        b = cupy.asarray(bias, dtype=x.dtype).reshape(1, -1, *([1] * (x.ndim - 2)))
        return gain * x / (1 + cupy.exp(-slope * x)) + b
''')

GAIN, SLOPE = 1.7, 0.8
BIAS = [0.1, -0.2, 0.3, 0.05]


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("GatedSwish", ["c"], ["y"], domain="acme", name="swish", gain=GAIN, slope=SLOPE,
                              bias=BIAS)]
    graph = helper.make_graph(nodes, "acme_net", [x], [y], [onnx.numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("acme", 1)])


def _reference(x: np.ndarray, model: onnx.ModelProto) -> np.ndarray:
    w = onnx.numpy_helper.to_array(model.graph.initializer[0]).astype(np.float64)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))  # (1, 3, 8, 8, 3, 3)
    c = np.einsum("nchwij,kcij->nkhw", win, w)
    return GAIN * c / (1 + np.exp(-SLOPE * c)) + np.asarray(BIAS).reshape(1, -1, 1, 1)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("acme")
    (d / "acme_plugins.py").write_text(PLUGIN_SOURCE)
    onnx.save(_model(), d / "net.onnx")
    x = np.random.default_rng(11).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.save(d / "x.npy", x)
    return d


def test_fresh_process_build_and_run_match_numpy(workdir):
    build = _cli("build", "net.onnx", "-o", "net.plan", "--plugins", "acme_plugins.py", cwd=workdir)
    assert build.returncode == 0, build.stderr + build.stdout
    (workdir / "acme_plugins.imported").unlink()
    run = _cli("run", "net.plan", "--plugins", "acme_plugins.py", "--load-inputs", "x:x.npy", "--iterations", "1",
               "--duration", "0", "--warmup", "0", "--save-outputs", "out.npz", cwd=workdir)
    assert run.returncode == 0, run.stderr + run.stdout
    got = np.load(workdir / "out.npz")["y"]
    want = _reference(np.load(workdir / "x.npy"), _model())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_fresh_process_without_plugin_fails_with_one_line(workdir):
    if not (workdir / "net.plan").exists():
        pytest.skip("needs the plan of the previous test")
    marker = workdir / "acme_plugins.imported"
    marker.unlink(missing_ok=True)
    run = _cli("run", "net.plan", "--iterations", "1", "--duration", "0", "--warmup", "0", cwd=workdir)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("[E] PlanError:")
    assert "'acme::GatedSwish' version 1" in lines[0] and "--plugins FILE.py" in lines[0]
    assert not marker.exists()  # the plan did not cause the plugin file to be imported


def _plan_with(fields) -> bytes:
    contents = _contents()
    for layer in contents.network.layers:
        if layer.kind is LayerKind.PLUGIN:
            layer.params = PluginParams(layer.params.name, layer.params.version, layer.params.namespace, fields)
    return plan_format.serialize(contents)


_CONTENTS: list = []


def _contents():
    if not _CONTENTS:
        _CONTENTS.append(plan_format.deserialize(build_from_onnx(_model(), BuilderConfig())))
    return plan_format.deserialize(plan_format.serialize(_CONTENTS[0]))


@pytest.fixture(scope="module")
def registered(workdir):
    load_plugin_file(workdir / "acme_plugins.py")


@pytest.mark.parametrize("fields,msg", [
    ((("gain", "float", "rm -rf /"), ("slope", "float", 0.8), ("bias", "floats", tuple(BIAS))), "must be a float"),
    ((("gain", "float", 1.7), ("slope", "float", 0.8)), "do not match"),
    ((("gain", "float", 1.7), ("slope", "float", 0.8), ("bias", "floats", (1.0,))), "bias needs 4 values"),
    ((("gain", "int", 1), ("slope", "float", 0.8), ("bias", "floats", tuple(BIAS))), "stored as 'int'"),
    ((("__import__('os')", "float", 1.0),), "has no field"),
    ((("gain", "float", {"$type": "X"}),), "bad plugin parameters"),
])
def test_crafted_plan_with_garbage_fields_fails_cleanly(registered, fields, msg):
    data = _plan_with(fields)
    with pytest.raises(PlanError, match=msg) as e:
        plan_format.deserialize(data)
    assert "\n" not in str(e.value)


def test_plan_round_trip_keeps_typed_fields(registered):
    contents = _contents()
    layer = next(la for la in contents.network.layers if la.kind is LayerKind.PLUGIN)
    f32 = lambda v: float(np.float32(v))  # noqa: E731 (ONNX float attributes are float32)
    assert layer.params.fields == (("gain", "float", f32(GAIN)), ("slope", "float", f32(SLOPE)),
                                   ("bias", "floats", tuple(f32(b) for b in BIAS)))
    assert plan_format.serialize(plan_format.deserialize(plan_format.serialize(contents))) == \
        plan_format.serialize(contents)
    assert layer.device == "gpu"


def test_compare_refuses_plugin_domains(registered, workdir, capsys):
    from engine.cli import main

    assert main(["compare", str(workdir / "net.onnx")]) == 2
    assert "nodes of domain(s) acme run as hetrt plugins only" in capsys.readouterr().err
