"""A/B of the GPU lowering's copy-saving steps on whole networks, in one process on one GPU.

Why: vector map kernels (``gen_vec.map_vector``), concatenations read in place by their element-wise
or shuffle reader (``lowering/concat_reads``), slices and splits read as views (``View.slice``) and
norms that store their residual add (``lowering/norm_residual``) change launches, not arithmetic,
so an engine built with them must give the bits of one built without them, and be faster. Each
network is exported once and built through the public path (ONNX -> builder with tactic timing
-> plan -> runtime) once per variant: everything on, everything off, the map kernels alone one
element a thread, eight elements a thread wherever the output allows it, and without 16-byte
input loads (``gen_vec.VECTOR_LOADS``; the rule then keeps kernels that would need them scalar),
without the shared load of a concatenation's inputs (``gen_vec.SELECT_LOADS``) or without the
reductions that map their rows (``lowering/row_maps``); each engine is
timed as CUDA-graph replays with CUDA events (``gpu_peers.time_enqueue``) and its output
compared bit for bit with the first.

Usage: python bench/gpu_lowering_ab.py --batch 32 --models densenet121 swin_t [--variants new old] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = {"new": (), "old": ("map_vector", "concat_reads", "slice_views", "norm_residuals", "row_maps"),
            "scalar_maps": ("map_vector",), "vector_everywhere": ("vector_rule",),
            "no_loads_ahead": ("vector_loads",), "no_select_loads": ("select_loads",), "no_row_maps": ("row_maps",)}


@contextlib.contextmanager
def lowering_without(steps: tuple[str, ...]) -> Iterator[None]:
    """The GPU lowering with ``steps`` turned off (restored on leaving)."""
    from backends.gpu.kernels import gen_vec
    from backends.gpu.lowering import lowerer
    from backends.gpu.lowering.views import View

    saved = (lowerer.map_vector, lowerer.find_concat_reads, View.slice, lowerer.find_norm_residuals,
             lowerer.find_row_maps)
    try:
        gen_vec.VECTOR_LOADS = "vector_loads" not in steps  # element loads only: the rule keeps such kernels scalar
        gen_vec.SELECT_LOADS = "select_loads" not in steps  # a concatenation's inputs: one shared load a thread
        if "map_vector" in steps:
            lowerer.map_vector = lambda *a, **k: 1
        if "vector_rule" in steps:  # eight elements a thread wherever the output allows, whatever the inputs
            lowerer.map_vector = lambda shape, out, order=None, zero=None, ins=None, body="": saved[0](
                shape, out, order, zero)
        if "concat_reads" in steps:
            lowerer.find_concat_reads = lambda lw, absorbed: {}
        if "slice_views" in steps:
            View.slice = lambda self, *a: None
        if "norm_residuals" in steps:
            lowerer.find_norm_residuals = lambda lw, absorbed: {}
        if "row_maps" in steps:
            lowerer.find_row_maps = lambda lw, absorbed: {}
        yield
    finally:
        gen_vec.VECTOR_LOADS, gen_vec.SELECT_LOADS = True, True
        (lowerer.map_vector, lowerer.find_concat_reads, View.slice, lowerer.find_norm_residuals,
         lowerer.find_row_maps) = saved


def measure(onnx_bytes: bytes, x: np.ndarray, batch: int, cache: str, steps: tuple[str, ...]) -> tuple[dict, Any]:
    from gpu_peers import build_engine, gpu_segments, time_enqueue

    from engine.builder import BuilderConfig

    with lowering_without(steps):
        engine, ctx, build_s = build_engine(onnx_bytes, BuilderConfig(fp16=True, batch=batch, timing_cache=cache))
        out = ctx.execute({engine.input_names[0]: x})[engine.output_names[0]]
        run, runs, elsewhere = gpu_segments(engine, ctx)
        if run is None:
            raise RuntimeError(f"expected one GPU partition; reference-backend layers {elsewhere}")
        ms = time_enqueue(ctx, run.stream, 20, 5)
    vec = sum(r.unit.lowered.source.count("yv[8]") for r in runs)
    return {"ms": ms, "launches": len(run.seq.steps), "vector_map_kernels": vec, "build_s": round(build_s, 2)}, out


def main() -> None:
    from gpu_torchvision import MODELS

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", required=True, choices=list(MODELS))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                    help="builds to time; the first is the one the others are compared with bit for bit")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu_lowering_ab.json"))
    args = ap.parse_args()
    from gpu_peers import environment
    from gpu_torchvision import export_onnx, load

    cache = str(Path(tempfile.mkdtemp()) / "timing_cache.json")
    result: dict[str, Any] = {"environment": environment(), "batch": args.batch, "rows": []}
    for name in args.models:
        t0 = time.perf_counter()
        onnx_bytes = export_onnx(load(name), args.batch)
        x = np.random.default_rng(0).random((args.batch, 3, 224, 224), dtype=np.float32)
        row: dict[str, Any] = {"model": name}
        outs = {}
        for variant in args.variants:
            row[variant], outs[variant] = measure(onnx_bytes, x, args.batch, cache, VARIANTS[variant])
        first = args.variants[0]
        row[f"bit_equal_to_{first}"] = {v: bool(np.array_equal(outs[first], o, equal_nan=True))
                                        for v, o in outs.items()}
        row["finite"] = {v: bool(np.isfinite(o).all()) for v, o in outs.items()}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
