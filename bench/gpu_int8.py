"""INT8 against hetrt FP16 through the real path on the GPU (ResNet-50 unless ``--models`` names others).

A torchvision CNN (random weights, batch norm calibrated as in ``gpu_torchvision``) -> ONNX ->
builder -> plan -> runtime; the GPU segment's CUDA graph is replayed with the input staged on the
device and timed with CUDA events (median, min, max over groups of replays).

FP16: ``BuilderConfig(fp16=True)`` with tactic timing. INT8: ``int8=True, fp16=True`` (layers
without INT8 run FP16, and so do INT8 convolutions whose FP16 form the builder timed faster,
conversions counted: ``fp16_by_timing`` counts them; ``--int8-only`` adds the engine without that
choice), with scales calibrated (minmax calibrator) on random images at batch 1; the
batch-256 build reuses those per-tensor ranges (tensor names do not depend on the batch). Scales
do not change the time. Both builds time their tactics (FP16 and INT8 convolutions alike,
``backends.gpu.tactics``); each result lists the tactics the convolutions run. The INT8 logits
are compared with the FP16 ones (relative L2) as a sanity check only: bit-exactness against the
reference is what tests/gpu/test_int8.py checks.

    python bench/gpu_int8.py --batches 1 256 --out bench/results/gpu_int8_h100.json
    python bench/gpu_int8.py --models efficientnet_b0 mobilenet_v2 --layers --top 30   # per launch
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from gpu_peers import gpu_segments, time_enqueue, write_results  # noqa: E402
from gpu_torchvision import export_onnx, load  # noqa: E402


class MissingBatchOneRanges(RuntimeError):
    """An INT8 build at batch > 1 of a model whose batch-1 build has not calibrated its ranges."""


class BatchOneRanges:
    """Per-tensor INT8 ranges calibrated once per model at batch 1, reused by that model's larger batches.

    Calibration runs the network in fp32 on the reference backend over the calibration batch, which
    at batch 256 takes minutes; tensor names do not depend on the batch, so the batch-1 ranges fit
    every batch. Inside its ``with`` block it stands in for
    ``engine.quantization.ranges.amax_table`` (the builder looks that up at each build); every INT8
    build goes inside ``build(model, batch)``, which keys the ranges by model so that two models
    never share them.
    """

    def __init__(self) -> None:
        self._amax: dict[str, dict[str, float]] = {}
        self._model: str | None = None
        self._real: Callable[..., dict[str, float]] | None = None

    def __enter__(self) -> BatchOneRanges:
        from engine.quantization import ranges

        self._real = ranges.amax_table
        ranges.amax_table = self._amax_table
        return self

    def __exit__(self, *exc: object) -> None:
        from engine.quantization import ranges

        ranges.amax_table = self._real
        self._real = None

    def has(self, model: str) -> bool:
        """Whether ``model``'s batch-1 ranges are known."""
        return model in self._amax

    @contextmanager
    def build(self, model: str, batch: int) -> Iterator[None]:
        """Scope of one INT8 build of ``model`` at ``batch``; batch > 1 needs the batch-1 build done first."""
        if self._real is None:
            raise RuntimeError("BatchOneRanges.build() outside the BatchOneRanges with-block")
        if batch != 1 and model not in self._amax:
            raise MissingBatchOneRanges(f"no batch-1 INT8 ranges for {model}: its batch-1 build must come first "
                                        f"(it calibrates the ranges batch {batch} reuses)")
        self._model = model
        try:
            yield
        finally:
            self._model = None

    def _amax_table(self, network: Any, calibrator: Any, progress: Any = None) -> dict[str, float]:
        if self._model is None or self._real is None:
            raise RuntimeError("INT8 calibration outside BatchOneRanges.build(): the ranges would have no model")
        if self._model not in self._amax:
            self._amax[self._model] = self._real(network, calibrator, progress)
        return self._amax[self._model]


def _layer_times(run: Any, reps: int = 5) -> dict[str, float]:
    """Milliseconds of each launch of a segment on its own (CUDA events, median of ``reps``), by label.

    Each launch runs alone, so small ones carry their launch gap; the large convolutions, which
    decide batch 256, are timed as they run in the graph.
    """
    import cupy as cp

    out: dict[str, float] = {}
    start, end = cp.cuda.Event(), cp.cuda.Event()
    with run.stream:
        for label, step in run.seq.steps:
            step()
            samples = []
            for _ in range(reps):
                start.record(run.stream)
                step()
                end.record(run.stream)
                end.synchronize()
                samples.append(cp.cuda.get_elapsed_time(start, end))
            out[label] = out.get(label, 0.0) + float(np.median(samples))
    return out


def _build_and_time(onnx_bytes: bytes, cfg: Any, x: np.ndarray, reps: int, groups: int,
                    layers: bool = False) -> dict[str, Any]:
    import onnx

    from engine.builder import build_from_onnx
    from engine.ir.logger import Logger, Severity
    from engine.runtime import Runtime

    quiet = Logger(Severity.ERROR)
    t0 = time.perf_counter()
    plan = build_from_onnx(onnx.load_from_string(onnx_bytes), cfg, quiet)
    build_s = time.perf_counter() - t0
    engine = Runtime(quiet).deserialize(plan)
    ctx = engine.create_execution_context()
    out = ctx.execute({engine.input_names[0]: x})
    one, runs, fallbacks = gpu_segments(engine, ctx)
    ops = [op for r in runs for op in r.unit.lowered.ops]
    kinds = [op.kind for op in ops]
    tiles: dict[str, int] = {}
    for op in ops:
        if op.kind in ("conv", "conv8"):
            tiles[op.info["tactic"].name] = tiles.get(op.info["tactic"].name, 0) + 1
    from engine.plan import deserialize

    timed = deserialize(plan).metadata.get("precision_by_timing", {})
    res: dict[str, Any] = {"build_s": round(build_s, 2), "fallback_layers": fallbacks, "segments": len(runs),
                           "fp16_by_timing": len(timed),
                           "launches": len(kinds), "int8_convs": kinds.count("conv8"),
                           "int8_pools": kinds.count("pool8"), "tactics": tiles,
                           "output": out[engine.output_names[0]].astype(np.float32)}
    if one is not None:
        res["ms"] = time_enqueue(ctx, one.stream, reps, groups)
        if layers:
            res["layer_ms"] = _layer_times(runs[0])
    else:
        import cupy as cp

        def step() -> None:
            ctx.execute({engine.input_names[0]: x})

        ts = []
        for _ in range(groups):
            cp.cuda.Device().synchronize()
            t = time.perf_counter()
            for _ in range(reps):
                step()
            ts.append((time.perf_counter() - t) * 1e3 / reps)
        res["ms"] = {"median": float(np.median(ts)), "min": min(ts), "max": max(ts), "host_path": True}
    return res


def _model_rows(name: str, args: argparse.Namespace, ranges: BatchOneRanges,
                rng: np.random.Generator) -> list[dict[str, Any]]:
    """FP16 and INT8 rows of one torchvision model at each batch (batch 1 first: it calibrates)."""
    from engine.builder import BuilderConfig
    from engine.quantization import make_calibrator

    model = load(name)
    rows = []
    for b in sorted(args.batches):
        onnx_bytes = export_onnx(model, b)
        x = rng.uniform(-2, 2, (b, 3, 224, 224)).astype(np.float32)
        per_layer = args.layers and b == max(args.batches)
        fp16 = _build_and_time(onnx_bytes, BuilderConfig(fp16=True, batch=b), x, args.reps, args.groups,
                               per_layer)
        if b != 1 and not ranges.has(name):
            raise SystemExit("run batch 1 first: it calibrates the ranges the other batches reuse")
        # at batch > 1 the calibrator's data is only validated, never read (the batch-1 ranges are reused)
        calib = [{"input": rng.uniform(-2, 2, (b, 3, 224, 224)).astype(np.float32)}]
        cfg8 = BuilderConfig(fp16=True, int8=True, batch=b, calibrator=make_calibrator("minmax", calib))
        with ranges.build(name, b):
            i8 = _build_and_time(onnx_bytes, cfg8, x, args.reps, args.groups, per_layer)
        a, r = i8.pop("output").astype(np.float64), fp16.pop("output").astype(np.float64)
        rel = float(np.linalg.norm(a - r) / max(np.linalg.norm(r), 1e-30))
        row = {"model": name, "batch": b, "fp16": fp16, "int8": i8, "int8_vs_fp16_logits_rel_l2": rel,
               "speedup_int8_over_fp16": round(fp16["ms"]["median"] / i8["ms"]["median"], 3)}
        if args.int8_only:  # every INT8-capable layer INT8 (no precision by timing), side by side
            with ranges.build(name, b):
                only = _build_and_time(onnx_bytes, replace(cfg8, precision_by_timing=False), x, args.reps,
                                       args.groups, per_layer)
            only.pop("output")
            row["int8_only"] = only
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--groups", type=int, default=10)
    ap.add_argument("--out", default=None)
    ap.add_argument("--layers", action="store_true", help="also time each launch alone at the largest batch")
    ap.add_argument("--top", type=int, default=10, help="how many of the slowest INT8 launches to list")
    ap.add_argument("--models", nargs="+", default=["resnet50"], help="torchvision CNNs (gpu_torchvision.load)")
    ap.add_argument("--int8-only", action="store_true",
                    help="also build each INT8 engine with every INT8-capable layer INT8 (no precision by timing)")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    rows = []
    with BatchOneRanges() as ranges:
        for name in args.models:
            rows += _model_rows(name, args, ranges, rng)
    print("| model | batch | FP16 ms | INT8 ms (layers FP16 by timing) | INT8 only ms | FP16/INT8 | INT8 launches "
          "| fallbacks |")
    for r in rows:
        only = f"{r['int8_only']['ms']['median']:.3f}" if "int8_only" in r else "-"
        print(f"| {r['model']} | {r['batch']} | {r['fp16']['ms']['median']:.3f} | {r['int8']['ms']['median']:.3f} "
              f"({r['int8']['fp16_by_timing']}) | {only} | {r['speedup_int8_over_fp16']:.2f} | "
              f"{r['int8']['launches']} | {len(r['int8']['fallback_layers'])} |")
    for r in rows:
        if "layer_ms" in r["int8"] and "layer_ms" in r["fp16"]:
            f, q = r["fp16"]["layer_ms"], r["int8"]["layer_ms"]
            print(f"{r['model']} batch {r['batch']}: sum of launches alone FP16 {sum(f.values()):.2f} ms, "
                  f"INT8 {sum(q.values()):.2f} ms; the slowest INT8 launches (INT8 ms / FP16 ms):")
            for label in sorted(q, key=q.get, reverse=True)[:args.top]:
                print(f"  {label[:60]:60s} {q[label]:.3f} / {f.get(label, float('nan')):.3f}")
    if args.out:
        write_results(args.out, rows)


if __name__ == "__main__":
    main()
