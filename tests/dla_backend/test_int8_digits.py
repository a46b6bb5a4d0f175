"""Real data on the DLA: the digits CNN built INT8 (entropy calibration) for a Jetson with the DLA as
default device runs plan -> runtime -> executor -> dla_sim, gives the reference INT8 logits (the last
INT8 FC writes its float output as FP16 through the SDP converter: FP16 accuracy) and stays within 1
point of FP32."""

from __future__ import annotations

import numpy as np
import pytest

from engine import plan as plan_format
from engine.builder import BuilderConfig, build_from_onnx
from engine.ir.logger import Logger, Severity
from engine.quantization import make_calibrator
from engine.runtime import Runtime

pytest.importorskip("sklearn")
pytest.importorskip("jax")

from engine.evaluation import digits  # noqa: E402

B = 32  # the DLA's batch field holds at most 32 images
QUIET = Logger(Severity.ERROR)


@pytest.fixture(scope="module")
def setup():
    s = digits.load_splits()
    params = digits.train(s)
    return s, digits.to_onnx(params)


def _run(model, cfg, s):
    blob = build_from_onnx(model, cfg, QUIET)
    ctx = Runtime(QUIET).deserialize(blob).create_execution_context()
    logits = np.concatenate([ctx.execute({"image": b})["logits"] for b in digits.batched(s.x_test, B)])
    return plan_format.deserialize(blob), logits[:len(s.x_test)]


def test_digits_int8_on_the_dla_equals_reference_and_keeps_accuracy(setup):
    s, model = setup
    calib = [{"image": b} for b in digits.batched(s.x_calib, B)]
    _, fp32 = _run(model, BuilderConfig(batch=B), s)
    _, ref8 = _run(model, BuilderConfig(batch=B, int8=True, calibrator=make_calibrator("entropy", calib)), s)
    cfg = BuilderConfig(batch=B, fp16=True, int8=True, default_device="dla", platform="orin-agx-64gb",
                        calibrator=make_calibrator("entropy", calib))
    plan, dla8 = _run(model, cfg, s)
    parts = plan.placement["partitions"]
    dla_layers = [n for p in parts if p["device"] == "dla" for n in p["layers"]]
    assert {"conv1 + relu1", "pool1", "conv2 + relu2", "pool2"} <= set(dla_layers)
    assert plan.placement["precision"] == "int8"
    assert np.abs(dla8 - ref8).max() < 1e-2 * np.abs(ref8).max()  # exact integers; FP16 logits
    assert np.mean(dla8.argmax(1) == ref8.argmax(1)) > 0.99
    acc32, acc8 = digits.top1(fp32, s.y_test), digits.top1(dla8, s.y_test)
    assert acc32 > 0.93
    assert acc8 >= acc32 - 0.01
