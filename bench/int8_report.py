"""INT8 report: digits CNN accuracy (real images) and per-layer SQNR of two ResNet-50s.

Run: ``python bench/int8_report.py`` (about a minute on two CPU cores). Writes
``bench/results/int8_report.txt``. Every number is computed here, on this machine, by the numpy
reference backend (the INT8 path is exact integer emulation with the DLA's requantization) and,
for the DLA rows, by the DLA backend on dla_sim through the runtime's executor.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import plan as plan_format  # noqa: E402
from engine.builder import BuilderConfig, build_from_onnx  # noqa: E402
from engine.evaluation import digits  # noqa: E402
from engine.ir.dtypes import Precision  # noqa: E402
from engine.ir.logger import Logger, Severity  # noqa: E402
from engine.models import build_model  # noqa: E402
from engine.quantization import make_calibrator  # noqa: E402
from engine.quantization.per_layer import compare_networks  # noqa: E402
from engine.runtime import Runtime  # noqa: E402

QUIET = Logger(Severity.ERROR)
BATCH = 100
DLA_BATCH = 32
DLA_PLATFORM = "orin-agx-64gb"
LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light" / "light_resnet50.onnx"


def _logits(model, cfg, x, batch: int = BATCH) -> tuple[np.ndarray, list[str]]:
    """Test-split logits through plan -> runtime (-> executor -> dla_sim for DLA partitions), and the
    layers the plan placed on the DLA."""
    blob = build_from_onnx(model, cfg, QUIET)
    ctx = Runtime(QUIET).deserialize(blob).create_execution_context()
    logits = np.concatenate([ctx.execute({"image": b})["logits"] for b in digits.batched(x, batch)])
    parts = plan_format.deserialize(blob).placement.get("partitions", [])
    return logits[:len(x)], [n for p in parts if p.get("device") == "dla" for n in p["layers"]]


def _top1(model, cfg, x, y) -> float:
    return digits.top1(_logits(model, cfg, x)[0], y)


def dla_rows(model, s) -> tuple[list[tuple[str, float]], list[str]]:
    """FP16 and INT8 on the DLA backend (Jetson platform, DLA as default device), with the reference
    INT8 build at the same batch (calibration batches match) to compare logits exactly."""
    cal = [{"image": b} for b in digits.batched(s.x_calib, DLA_BATCH)]
    jetson = dict(batch=DLA_BATCH, default_device="dla", platform=DLA_PLATFORM)
    ref8, _ = _logits(model, BuilderConfig(batch=DLA_BATCH, int8=True, calibrator=make_calibrator("entropy", cal)),
                      s.x_test, DLA_BATCH)
    fp16, on16 = _logits(model, BuilderConfig(fp16=True, **jetson), s.x_test, DLA_BATCH)
    int8, on8 = _logits(model, BuilderConfig(fp16=True, int8=True, calibrator=make_calibrator("entropy", cal),
                                             **jetson), s.x_test, DLA_BATCH)
    rows = [(f"INT8 reference backend, entropy, batch {DLA_BATCH}", digits.top1(ref8, s.y_test)),
            (f"FP16 DLA backend ({DLA_PLATFORM}, default device DLA)", digits.top1(fp16, s.y_test)),
            (f"INT8 DLA backend ({DLA_PLATFORM}), entropy calibration", digits.top1(int8, s.y_test))]
    notes = [f"DLA rows: batch {DLA_BATCH} (the DLA's batch field holds 32 images), run through plan -> runtime -> "
             f"executor -> dla_sim. DLA layers FP16: {', '.join(on16)}; INT8: {', '.join(on8)} (flatten changes the "
             f"channel-interleaved layout and the INT8 fc hands its float32 logits on, so both run on the GPU "
             f"backend). INT8 DLA logits identical to the INT8 reference build at batch {DLA_BATCH}: "
             f"{bool(np.array_equal(int8, ref8))} (max |diff| {float(np.abs(int8 - ref8).max()):.3g})."]
    return rows, notes


def digits_table() -> list[str]:
    t0 = time.perf_counter()
    s = digits.load_splits()
    params = digits.train(s)
    model = digits.to_onnx(params)
    calib = [{"image": b} for b in digits.batched(s.x_calib, BATCH)]
    rows = [("FP32 (JAX, training framework)", digits.top1(digits.predict(params, s.x_test), s.y_test)),
            ("FP32 reference backend", _top1(model, BuilderConfig(batch=BATCH), s.x_test, s.y_test)),
            ("FP16 reference backend", _top1(model, BuilderConfig(batch=BATCH, fp16=True), s.x_test, s.y_test))]
    for algo in ("entropy", "minmax", "percentile"):
        cfg = BuilderConfig(batch=BATCH, int8=True, calibrator=make_calibrator(algo, calib))
        rows.append((f"INT8 reference backend, {algo} calibration", _top1(model, cfg, s.x_test, s.y_test)))
    more, notes = dla_rows(model, s)
    rows += more
    fp32 = rows[1][1]
    lines = [f"Digits CNN (sklearn load_digits, 8x8 real images): train {len(s.x_train)}, calibration "
             f"{len(s.x_calib)} (from the training side), held-out test {len(s.x_test)}; "
             f"{time.perf_counter() - t0:.1f} s",
             f"{'configuration':56s} {'top-1':>7s} {'vs FP32':>8s}"]
    lines += [f"{name:56s} {acc * 100:6.2f}% {100 * (acc - fp32):+7.2f}" for name, acc in rows]
    lines += notes
    lines.append("INT8 on the GPU (integer tensor cores) gives the reference backend's integers bit for bit, the "
                 "digits CNN included; it needs CUDA, so its check lives in tests/gpu/test_int8.py (run on an H100).")
    return lines


def sqnr_table(label: str, model: onnx.ModelProto, note: str) -> list[str]:
    """Per-layer SQNR of the entropy-calibrated INT8 build against the FP32 build of ``model``."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    name = model.graph.input[0].name
    shape = tuple(d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim)
    calib = [{name: rng.normal(size=shape).astype(np.float32)} for _ in range(4)]
    fp32 = plan_format.deserialize(build_from_onnx(model, BuilderConfig(), QUIET)).network
    cfg = BuilderConfig(int8=True, calibrator=make_calibrator("entropy", calib))
    net = plan_format.deserialize(build_from_onnx(model, cfg, QUIET)).network
    feeds = {name: rng.normal(size=shape).astype(np.float32)}
    rows = [r for r in compare_networks(fp32, net, feeds)]
    int8_rows = [r for r in rows if r.precision == Precision.INT8.value]
    ok = [r for r in int8_rows if r.sqnr_db >= 30.0]
    finite = [r.sqnr_db for r in int8_rows if np.isfinite(r.sqnr_db)]
    lines = [f"{label} (input {shape}), entropy calibration on 4 random N(0,1) batches, evaluated on another "
             f"random batch; {time.perf_counter() - t0:.1f} s",
             f"INT8 layers: {len(int8_rows)} of {len(rows)} compared; SQNR >= 30 dB on {len(ok)}/{len(int8_rows)} "
             f"({100 * len(ok) / max(len(int8_rows), 1):.1f} %); min {min(finite):.1f} dB, median "
             f"{float(np.median(finite)):.1f} dB",
             note + " Random N(0,1) inputs are not images: ranges come from, and are tested on, the same "
             "synthetic distribution. Layers in fp32 are the ones INT8 cannot run here (see the builder's "
             "verbose log for each reason).",
             f"{'layer':44s} {'kind':16s} {'prec':5s} {'SQNR dB':>8s}"]
    lines += [f"{r.layer[:44]:44s} {r.kind:16s} {r.precision:5s} {r.sqnr_db:8.2f}" for r in rows]
    return lines


def resnet_tables() -> list[str]:
    light = sqnr_table("light_resnet50 (onnx backend test data)", onnx.load(str(LIGHT)),
                       "Note: the light models are often described as constant-filled; the weights this model's "
                       "graph produces are not constant per layer (its per-channel weight scales differ, see the "
                       "builder's int8.kernel_scales), so the SQNR includes weight rounding.")
    bundled = sqnr_table("ResNet-50 v1.5 (bundled, He-initialised random weights, BatchNorm folded)",
                         build_model("resnet50"),
                         "Random weights spread each layer's values over the whole int8 range, which is harder "
                         "than trained weights' peaked distributions.")
    return light + [""] + bundled


def main() -> int:
    lines = ["hetrt INT8 report (numpy reference backend and the DLA backend on dla_sim; integer-exact INT8)", ""]
    lines += digits_table() + [""] + resnet_tables()
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(__file__).resolve().parent / "results" / "int8_report.txt"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
