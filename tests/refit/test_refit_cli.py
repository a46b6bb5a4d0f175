"""``hetrt build --refit`` writes a refittable plan; a plain build does not."""

from __future__ import annotations

import numpy as np
import onnx
from test_refit import model, weights

from engine.cli import main
from engine.plan import deserialize
from engine.refit import Refitter


def test_build_refit_flag(tmp_path):
    rng = np.random.default_rng(5)
    onnx.save(model(weights(rng)), tmp_path / "m.onnx")
    assert main(["build", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "r.plan"), "--refit"]) == 0
    assert main(["build", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "p.plan")]) == 0
    refittable = (tmp_path / "r.plan").read_bytes()
    contents = deserialize(refittable)
    assert contents.refit["format"] == "onnx" and contents.build_config["refittable"] is True
    assert deserialize((tmp_path / "p.plan").read_bytes()).refit is None
    assert "w1" in Refitter(refittable).get_all()
