"""Engine build and CPU inference times (the reference backend), written to bench/results.

    python bench/bench_engine.py [--quick]

Measures, on this machine's CPU: parse + optimize + serialize time and per-inference latency of
the ONNX package's light_resnet50, and the build time of a full ResNet-50 (25.6 M parameters,
generated in code) — the issue asks for the latter to stay under 10 s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import __version__  # noqa: E402
from engine.builder import BuilderConfig, build_from_onnx  # noqa: E402
from engine.ir.logger import Logger, Severity  # noqa: E402
from engine.models import build_model  # noqa: E402
from engine.perf import measure  # noqa: E402
from engine.runtime import Runtime  # noqa: E402

LIGHT = Path(onnx.__file__).parent / "backend/test/data/light"


def _build(model, fp16: bool = False, repeats: int = 3) -> tuple[bytes, list[float]]:
    times, data = [], b""
    for _ in range(repeats):
        t0 = time.perf_counter()
        data = build_from_onnx(model, BuilderConfig(fp16=fp16), Logger(Severity.ERROR))
        times.append(time.perf_counter() - t0)
    return data, times


def _infer(data: bytes, duration: float) -> dict:
    engine = Runtime(Logger(Severity.ERROR)).deserialize(data)
    ctx = engine.create_execution_context()
    rng = np.random.default_rng(0)
    feeds = {t.name: rng.uniform(-1, 1, t.shape).astype(np.float32) for t in engine.io_tensors if t.mode == "input"}
    result = measure(lambda: ctx.execute(feeds), warmup_ms=300, iterations=5, duration_s=duration)
    return {"latency_ms": vars(result.stats), "throughput_qps": result.throughput_qps,
            "activation_memory_bytes": engine.device_memory_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (smoke test)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/engine_cpu.json"))
    args = ap.parse_args()
    duration = 1.0 if args.quick else 5.0
    results: dict = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "hetrt": __version__, "numpy": np.__version__, "onnx": onnx.__version__,
        "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "backend": "reference (numpy)", "rows": {},
    }
    rows = results["rows"]

    light = str(LIGHT / "light_resnet50.onnx")
    data, build_s = _build(light)
    rows["light_resnet50 fp32"] = {"build_s_median": float(np.median(build_s)), "plan_bytes": len(data),
                                   **_infer(data, duration)}
    resnet50 = build_model("resnet50")
    data, build_s = _build(resnet50, repeats=1 if args.quick else 3)
    rows["resnet50 fp32"] = {"build_s_median": float(np.median(build_s)), "plan_bytes": len(data),
                             **_infer(data, duration)}
    data, build_s = _build(resnet50, fp16=True, repeats=1)
    rows["resnet50 fp16"] = {"build_s_median": float(np.median(build_s)), "plan_bytes": len(data),
                             **_infer(data, duration)}

    print(f"{'model':24s} {'build s':>8s} {'plan MiB':>9s} {'median ms':>10s} {'p99 ms':>8s} {'act MiB':>8s}")
    for name, r in rows.items():
        print(f"{name:24s} {r['build_s_median']:8.2f} {r['plan_bytes'] / 2**20:9.1f} "
              f"{r['latency_ms']['median']:10.1f} {r['latency_ms']['p99']:8.1f} "
              f"{r['activation_memory_bytes'] / 2**20:8.1f}")
    ok = rows["resnet50 fp32"]["build_s_median"] < 10.0
    print(f"ResNet-50 build under 10 s: {'yes' if ok else 'NO'}")
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
