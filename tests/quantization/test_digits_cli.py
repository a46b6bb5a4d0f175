"""Real data: the digits CNN in INT8 stays within 1 point of FP32; the command line end to end."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from engine.builder import BuilderConfig, build_from_onnx
from engine.cli import main
from engine.ir.logger import Logger, Severity
from engine.quantization import EntropyCalibrator
from engine.runtime import Runtime

pytest.importorskip("sklearn")
pytest.importorskip("jax")

from engine.evaluation import digits  # noqa: E402

B = 100


@pytest.fixture(scope="module")
def setup():
    s = digits.load_splits()
    params = digits.train(s)
    return s, params, digits.to_onnx(params)


def _top1(model, cfg, s) -> float:
    engine = Runtime(Logger(Severity.ERROR)).deserialize(build_from_onnx(model, cfg, Logger(Severity.ERROR)))
    ctx = engine.create_execution_context()
    logits = np.concatenate([ctx.execute({"image": b})["logits"] for b in digits.batched(s.x_test, B)])
    return digits.top1(logits[:len(s.x_test)], s.y_test)


def test_digits_int8_within_one_point_of_fp32(setup):
    s, params, model = setup
    fp32 = _top1(model, BuilderConfig(batch=B), s)
    assert fp32 > 0.93  # the model did learn
    assert fp32 == pytest.approx(digits.top1(digits.predict(params, s.x_test), s.y_test), abs=0.002)
    cal = EntropyCalibrator([{"image": b} for b in digits.batched(s.x_calib, B)])
    int8 = _top1(model, BuilderConfig(batch=B, int8=True, calibrator=cal), s)
    assert int8 >= fp32 - 0.01


def test_cli_build_calib_cache_and_per_layer(setup, tmp_path, capsys):
    s, _, model = setup
    path = tmp_path / "digits.onnx"
    onnx.save(model, path)
    calib = tmp_path / "calib"
    calib.mkdir()
    np.save(calib / "set.npy", s.x_calib[:100])  # a stack of 100 samples: 100 batches of 1
    cache = tmp_path / "digits.cache"
    plan = tmp_path / "d.plan"
    assert main(["build", str(path), "--int8", "--calib", str(calib), "--calib-cache", str(cache),
                 "--calibrator", "percentile", "-o", str(plan)]) == 0
    first = cache.read_bytes()
    assert b"calibrator=percentile" in first
    assert main(["build", str(path), "--int8", "--calib-cache", str(cache), "-o", str(plan)]) == 0
    assert cache.read_bytes() == first
    capsys.readouterr()
    np.save(tmp_path / "img.npy", s.x_test[:1])
    rc = main(["compare", str(path), "--int8", "--calib-cache", str(cache), "--per-layer",
               "--load-inputs", f"image:{tmp_path / 'img.npy'}", "--sqnr-threshold", "15"])
    out = capsys.readouterr().out
    assert "SQNR dB" in out and "conv1 + relu1" in out and "int8" in out
    assert rc == 0, out
    assert main(["build", str(path), "--int8", "--calib", str(tmp_path / "nope")]) == 2
    assert main(["build", str(path), "--calib-cache", str(cache)]) == 2
