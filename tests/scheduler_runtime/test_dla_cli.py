"""trtexec's DLA flags on hetrt build/run: placement, GPU fallback, both clocks in the report."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.cli import main


def _conv_layernorm_model(path) -> str:
    """conv → LayerNormalization: the DLA cannot run the normalization."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    scale = numpy_helper.from_array(np.ones(8, np.float32), "s")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("LayerNormalization", ["c", "s"], ["y"], name="norm", axis=-1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w, scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return str(path)


def test_dla_core_without_fallback_fails_naming_the_layer(tmp_path, capsys):
    model = _conv_layernorm_model(tmp_path / "m.onnx")
    args = ["build", model, "--platform", "orin-agx-64gb", "--use-dla-core", "0", "--fp16", "-o", str(tmp_path / "p")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "GPU fallback is disabled" in err and "'norm'" in err and "--allow-gpu-fallback" in err
    assert main([*args, "--allow-gpu-fallback"]) == 0


def test_dla_plan_runs_and_reports_both_clocks(tmp_path, capsys):
    plan = tmp_path / "d.plan"
    assert main(["build", "resnet18_small", "--platform", "orin-agx-64gb", "--use-dla-core", "1", "--fp16",
                 "--allow-gpu-fallback", "-o", str(plan)]) == 0
    capsys.readouterr()
    assert main(["run", str(plan), "--iterations", "2", "--duration", "0", "--warmup", "0", "--dump-profile"]) == 0
    out = capsys.readouterr().out
    assert "Compute Time (dla_sim backend, host clock)" in out
    assert "Simulated target (orin-agx-64gb" in out and "mJ" in out
    assert "{ForeignNode[" in out and "(dla1)" in out


@pytest.mark.parametrize("args,match", [
    (["--use-dla-core", "0"], "FP16 and INT8 only"),
    (["--use-dla-core", "5", "--fp16"], "does not exist"),
    (["--allow-gpu-fallback"], "only applies with --use-dla-core"),
    (["--fp16", "--placement", "optimal", "--power-mode", "99W"], "99W"),
])
def test_bad_dla_requests(args, match, tmp_path, capsys):
    assert main(["build", "resnet18_small", "--platform", "orin-agx-64gb", *args, "-o", str(tmp_path / "p")]) == 2
    assert match in capsys.readouterr().err
