"""Precision by timing on the GPU: the timers it adds (depthwise kernels in both precisions, the
conversion passes) measure, an INT8 + FP16 build of an EfficientNet-style block chooses with real
timings, and plans that mix INT8 and FP16 convolutions run on the GPU as on the reference backend
(fp16 tolerance: an FP16 layer's last bits move the int8 rounding after it). Skipped without CUDA."""

from __future__ import annotations

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

import int8_nets as nets  # noqa: E402
from test_int8 import _NoGpu  # noqa: E402

pytestmark = pytest.mark.gpu


def test_the_added_timers_measure():
    from backends.gpu import precision_timing as pt
    from backends.gpu.kernels.conv import ConvGeometry

    g = ConvGeometry(8, 28, 28, 96, 96, 3, 3, (1, 1), (1, 1))  # depthwise: one channel a group
    assert pt.time_depthwise16(g, (1, 0.0, 0.0), False)["depthwise"] > 0
    assert 0 < pt.time_conversion(1 << 16) < pt.time_conversion(1 << 26)


def _run(plan: bytes, feeds: list[dict], monkeypatch) -> tuple[list[np.ndarray], list[np.ndarray], object]:
    from engine import runtime as rt
    from engine.ir.logger import Logger, Severity

    quiet = Logger(Severity.ERROR)

    def run() -> tuple[list[np.ndarray], object]:
        engine = rt.Runtime(quiet).deserialize(plan)
        ctx = engine.create_execution_context()
        return [ctx.execute(f)["y"] for f in feeds], engine

    gpu, engine = run()
    with monkeypatch.context() as m:
        m.setitem(rt.BACKENDS, "gpu", _NoGpu)
        ref, _ = run()
    return gpu, ref, engine


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b))


@pytest.mark.parametrize("pins", ["timed", "expand+dw", "dw", "project"])
def test_mixed_precision_plans_run_as_on_the_reference(rng, monkeypatch, tmp_path, pins):
    from engine.builder import BuilderConfig, build_from_onnx
    from engine.ir.dtypes import Precision
    from engine.ir.logger import Logger, Severity
    from engine.plan import deserialize
    from engine.quantization import make_calibrator

    model, calib = nets.mobile_block_onnx(rng, batch=8, c=32, h=28)
    log = Logger(Severity.ERROR)
    if pins == "timed":
        config = BuilderConfig(batch=8, int8=True, fp16=True, timing_cache=str(tmp_path / "t.json"))
    else:
        first = deserialize(build_from_onnx(model, BuilderConfig(batch=8, int8=True, precision_by_timing=False,
                                                                 calibrator=make_calibrator("minmax", calib)), log))
        convs = [la for la in first.network if la.kind.name == "CONVOLUTION"]
        by_role = {"expand": convs[0].name, "dw": convs[1].name, "project": convs[2].name}
        names = {by_role[r] for r in pins.split("+")}
        config = BuilderConfig(batch=8, int8=True, fp16=True, precision_by_timing=False,
                               layer_precisions={n: Precision.FP16 for n in names})
    config.calibrator = make_calibrator("minmax", calib)
    plan = build_from_onnx(model, config, log)
    if pins == "timed":
        assert any(m.startswith("Precision by timing: ") for m in log.messages(Severity.INFO)), \
            log.messages(Severity.INFO)
    precisions = [la.precision for la in deserialize(plan).network if la.kind.name == "CONVOLUTION"]
    print("precisions", precisions)
    feeds = [{"x": rng.normal(size=calib[0]["x"].shape).astype(np.float32)} for _ in range(2)]
    gpu, ref, engine = _run(plan, feeds, monkeypatch)
    assert all(p.backend == "gpu" for p in engine.partitions), [p.reason for p in engine.partitions]
    for g, r in zip(gpu, ref, strict=True):
        assert np.abs(r).max() > 0 and _rel_l2(g, r) < 2e-2, _rel_l2(g, r)
