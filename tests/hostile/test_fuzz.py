"""Seeded structure-aware fuzzing of plans and ONNX models (audit findings 2-6, acceptance).

Every mutant must end as a clean refusal naming what is wrong, or a run (models: matching ONNX
Runtime); no raw Python exception, no hang (each case under a time cap), no model that ONNX
Runtime refuses built anyway, no case allocating more than BUDGET. The default run fuzzes a few
hundred of each; ``-m slow`` 2,000 each.
"""

from __future__ import annotations

import logging

import pytest

from engine.builder import BuilderConfig, build_from_onnx

from .fuzz import QUIET, fuzz_models, fuzz_plans
from .models import conv_model, mixed_model, mlp_model, ops_model

pytest.importorskip("onnxruntime")

BUDGET = 256 << 20  # bytes one case may allocate: the base plans and models need well under 1 MiB


def _models():
    return [conv_model(), mlp_model(), mixed_model(), ops_model()]


@pytest.fixture(scope="module")
def plans() -> list[bytes]:
    out = [build_from_onnx(m, BuilderConfig(), QUIET) for m in _models()]
    out.append(build_from_onnx(conv_model(), BuilderConfig(fp16=True, default_device="dla",
                                                           platform="orin-agx-64gb"), QUIET))
    return out


@pytest.fixture(autouse=True)
def _quiet_parser_log():
    logger = logging.getLogger("hetrt.onnx_parser")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def _check(report, cases: int) -> None:
    print(report.summary())
    assert sum(report.outcomes.values()) == cases
    assert report.violations == 0, report.summary()
    assert report.peak_bytes < BUDGET, report.summary()  # no case allocates beyond the budget
    assert report.outcomes["refused"] > cases // 10 and report.outcomes["ran"] > cases // 20, report.summary()


def test_fuzz_plans(plans):
    _check(fuzz_plans(plans, 250, seed=0), 250)


def test_fuzz_models():
    _check(fuzz_models(_models(), 250, seed=0), 250)


@pytest.mark.slow
def test_fuzz_plans_2000(plans):
    _check(fuzz_plans(plans, 2000, seed=2026), 2000)


@pytest.mark.slow
def test_fuzz_models_2000():
    _check(fuzz_models(_models(), 2000, seed=2026), 2000)
