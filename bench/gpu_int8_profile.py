"""FP16 against INT8, launch by launch, for one torchvision network at one batch.

Why: a whole-network row (``bench/gpu_peers.py``) says that an INT8 engine is slower than its FP16
one, not which layers make the difference. Here both engines are built through the public path
(ONNX -> builder with tactic timing -> plan -> runtime; INT8 ranges calibrated at batch 1 and reused,
as ``gpu_peers`` does), timed as one CUDA-graph replay with CUDA events, and profiled per launch with
the runtime's ``Profiler`` (median of five runs each).

Usage: python bench/gpu_int8_profile.py efficientnet_b0 --batch 256 [--out bench/results/...json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def profile_engine(onnx_bytes: bytes, config: Any, x: np.ndarray) -> dict[str, Any]:
    """Enqueue time (CUDA events over graph replays) and the per-launch medians of one engine."""
    from gpu_peers import build_engine, gpu_segments, time_enqueue

    from engine.runtime import Profiler

    engine, ctx, build_s = build_engine(onnx_bytes, config)
    feeds = {engine.input_names[0]: x}
    ctx.execute(feeds)
    run, _, elsewhere = gpu_segments(engine, ctx)
    ms = time_enqueue(ctx, run.stream, 20, 5) if run is not None and not elsewhere else None
    prof = Profiler()
    ctx.profiler = prof
    for _ in range(5):
        ctx.execute(feeds)
    ctx.profiler = None
    recs = prof.to_dict()
    return {"ms": ms, "build_s": round(build_s, 2), "launches": len(recs), "fallback_layers": elsewhere,
            "profile_total_ms": round(sum(r["medianMs"] for r in recs), 4),
            "launch_ms": [(r["name"], round(r["medianMs"], 4)) for r in recs]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from gpu_int8 import BatchOneRanges
    from gpu_peers import build_engine, calibration_feed, environment
    from gpu_torchvision import export_onnx, load

    from engine.builder import BuilderConfig
    from engine.quantization import make_calibrator

    model = load(args.model)
    x = np.random.default_rng(0).random((args.batch, 3, 224, 224), dtype=np.float32)
    cache = str(Path(tempfile.mkdtemp()) / "timing_cache.json")
    onnx_bytes = export_onnx(model, args.batch)
    out: dict[str, Any] = {"environment": environment(), "model": args.model, "batch": args.batch}
    with BatchOneRanges() as ranges:  # the builder's range lookup is restored on leaving
        with ranges.build(args.model, 1):
            build_engine(export_onnx(model, 1), BuilderConfig(
                fp16=True, int8=True, batch=1, precision_by_timing=False,
                calibrator=make_calibrator("minmax", [calibration_feed(1)])))
        out["fp16"] = profile_engine(onnx_bytes, BuilderConfig(fp16=True, batch=args.batch, timing_cache=cache), x)
        # every INT8-capable layer INT8: the profile compares the INT8 kernels with their FP16 peers
        cfg = BuilderConfig(fp16=True, int8=True, batch=args.batch, timing_cache=cache, precision_by_timing=False,
                            calibrator=make_calibrator("minmax", [calibration_feed(args.batch)]))
        with ranges.build(args.model, args.batch):
            out["int8"] = profile_engine(onnx_bytes, cfg, x)
    for prec in ("fp16", "int8"):
        print(prec, out[prec]["ms"], out[prec]["launches"], "launches, profile total", out[prec]["profile_total_ms"])
    path = Path(args.out or Path(__file__).parent / "results" / f"gpu_int8_profile_{args.model}.json")
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
