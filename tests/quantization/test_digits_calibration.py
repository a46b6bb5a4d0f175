"""INT8 accuracy of the digits CNN across training seeds (audit finding 9: entropy collapse).

Entropy calibration chose a threshold for ``relu1`` that clipped half of its non-zero values for
some training seeds (INT8 top-1 11-49 % against FP32 97-98 %): the ReLU of a convolution over the
digits' blank background gives each channel's bias at most pixels, and those point masses fooled
the KL search. Each case checks FP32 first (so a training failure is not blamed on INT8), then
entropy and min-max INT8 within one point of FP32; a failure prints the per-layer SQNR table.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("jax")

from engine import plan as plan_format  # noqa: E402
from engine.builder import BuilderConfig, build_from_onnx  # noqa: E402
from engine.evaluation import digits  # noqa: E402
from engine.ir.logger import Logger, Severity  # noqa: E402
from engine.quantization import make_calibrator  # noqa: E402
from engine.quantization.per_layer import compare_networks, format_rows  # noqa: E402
from engine.runtime import Runtime  # noqa: E402

B = 64
QUIET = Logger(Severity.ERROR)


@pytest.fixture(scope="module")
def splits():
    return digits.load_splits()


def _build_and_score(model, cfg, s) -> tuple[bytes, float]:
    blob = build_from_onnx(model, cfg, QUIET)
    ctx = Runtime(QUIET).deserialize(blob).create_execution_context()
    out = np.concatenate([ctx.execute({"image": x})["logits"] for x in digits.batched(s.x_test, B)])
    return blob, digits.top1(out[:len(s.x_test)], s.y_test)


def check_seed(seed: int, s) -> None:
    model = digits.to_onnx(digits.train(s, seed=seed))
    fp32_blob, fp32 = _build_and_score(model, BuilderConfig(batch=B), s)
    assert fp32 > 0.93, f"seed {seed}: FP32 top-1 {fp32:.3f}: the model did not train (not an INT8 problem)"
    calib = [{"image": x} for x in digits.batched(s.x_calib, B)]
    ref_net = plan_format.deserialize(fp32_blob).network
    failures = []
    for algorithm in ("entropy", "minmax"):
        cfg = BuilderConfig(batch=B, int8=True, calibrator=make_calibrator(algorithm, calib))
        blob, acc = _build_and_score(model, cfg, s)
        if acc < fp32 - 0.01:
            rows = compare_networks(ref_net, plan_format.deserialize(blob).network,
                                    {"image": digits.batched(s.x_test, B)[0]})
            failures.append(f"{algorithm}: INT8 top-1 {acc:.3f} vs FP32 {fp32:.3f}\n{format_rows(rows)}")
    assert not failures, f"seed {seed}:\n" + "\n".join(failures)


@pytest.mark.parametrize("seed", [0, 2])
def test_digits_int8_within_one_point_of_fp32(seed, splits):
    """Seeds 0 and 2 collapsed to 11.7 % and 21.3 % with entropy calibration before the fix."""
    check_seed(seed, splits)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 13))
def test_digits_int8_within_one_point_of_fp32_many_seeds(seed, splits):
    check_seed(seed, splits)
