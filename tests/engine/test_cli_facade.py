"""`import hetrt`: the public facade builds, saves, loads and runs a plan without internal module paths."""

from __future__ import annotations

import numpy as np
import pytest

import hetrt


def test_facade_names_are_the_engine_objects():
    from engine.builder import BuilderConfig
    from engine.ir.errors import PlanError
    from engine.runtime import Runtime

    assert hetrt.BuilderConfig is BuilderConfig and hetrt.Runtime is Runtime and hetrt.PlanError is PlanError
    assert all(hasattr(hetrt, n) for n in hetrt.__all__)


def test_build_save_load_run_through_the_facade(tmp_path):
    rng = np.random.default_rng(11)
    builder = hetrt.Builder(hetrt.Logger(hetrt.Severity.ERROR))
    net = builder.create_network("tiny")
    x = net.add_input("x", (1, 3, 8, 8))
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    net.mark_output(net.add_activation(net.add_convolution(x, w, padding=(1, 1)), "relu"))
    path = tmp_path / "tiny.engine"
    hetrt.save_plan(path, builder.build_serialized_network(net, hetrt.BuilderConfig()))
    engine = hetrt.load_plan(path)
    feed = rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    (out,) = engine.create_execution_context().execute({"x": feed}).values()
    # independent float64 reference: direct convolution with zero padding, then ReLU
    xp = np.pad(feed.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros((1, 4, 8, 8))
    for i in range(8):
        for j in range(8):
            ref[0, :, i, j] = np.tensordot(w.astype(np.float64), xp[0, :, i:i + 3, j:j + 3], axes=3)
    np.testing.assert_allclose(out, np.maximum(ref, 0), rtol=1e-5, atol=1e-5)


def test_facade_parses_onnx_and_reports_errors(tmp_path):
    net = hetrt.parse_onnx(hetrt.build_model("resnet18_small"))
    assert isinstance(net, hetrt.Network) and len(net) > 10
    with pytest.raises(hetrt.PlanError, match="cannot read plan"):
        hetrt.load_plan(tmp_path / "missing.plan")
