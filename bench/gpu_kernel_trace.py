"""Every kernel of a hetrt engine's CUDA-graph replay, with its true device time (CUPTI).

Why: the per-launch ``Profiler`` (``bench/gpu_layer_profile.py``) puts CUDA events around each
launch of an eager run, so every small launch also carries the host's launch time (at batch 32 a
7x7 layer of 5 us reads as 0.15 ms). Here the engine runs as it runs in production, its CUDA graph
replayed, under ``torch.profiler`` (CUPTI), which records each kernel's start and end on the
device. CUPTI sees every kernel of the process, CuPy's and cuBLAS's included.

Each kernel is matched to the engine's launch labels in order; a split-K reduction or cuBLAS's
separate epilogue takes the label of the launch before it (``FOLLOW_UP``). Where a step launches
other extra kernels the labels are left out and the table says so.
Kernels are summed per kind: generated map kernels by the label in their name (``kN_<label>``),
the others by their function name.

``--int8`` traces the INT8 engine instead (FP16 where INT8 cannot run), with the ranges of a batch-1
build as bench/gpu_peers.py takes them.

Usage: python bench/gpu_kernel_trace.py --models googlenet densenet121 --batch 32 [--int8] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_peers import build_engine, environment, gpu_segments  # noqa: E402
from gpu_torchvision import export_onnx, load  # noqa: E402


def kernel_family(name: str) -> str:
    """A kernel's family: the generated kernels' role from their label, else the function name."""
    m = re.match(r"k\d+_(to_nhwc|to_linear|to_s2d|to_patches)?", name)
    if m:
        return f"map: {m.group(1)}" if m.group(1) else ("map: concat" if "Concat" in name else "map: other")
    return re.split(r"[<(]", name.replace("void ", ""), maxsplit=1)[0].strip()


def trace(engine: Any, ctx: Any, replays: int = 3) -> list[dict[str, Any]]:
    """The kernels of the last of ``replays`` graph replays, in device order: name, start, microseconds."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    run, _, elsewhere = gpu_segments(engine, ctx)
    if run is None:
        raise RuntimeError(f"expected one GPU partition; layers elsewhere: {elsewhere}")
    for _ in range(3):
        ctx.execute_async(None, run.stream)
    run.stream.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            ctx.execute_async(None, run.stream)
            run.stream.synchronize()
        torch.cuda.synchronize()
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
              and "memcpy" not in e.name.lower() and "memset" not in e.name.lower()]
    events.sort(key=lambda e: e.time_range.start)
    per = len(events) // replays
    last = events[-per:] if per else []
    return [{"kernel": e.name, "start_us": e.time_range.start, "us": e.time_range.end - e.time_range.start}
            for e in last]


# kernels that finish the launch before them (split-K reductions, cuBLAS's separate epilogue)
FOLLOW_UP = ("splitk_epilogue", "gemm_epilogue")


def attach_labels(kernels: list[dict[str, Any]], labels: list[str]) -> bool:
    """Give each kernel its launch's label, a follow-up kernel (``FOLLOW_UP``) the one before it;
    False (and no labels) where the kernels do not then match the launches one to one."""
    out: list[str | None] = []
    i = 0
    for k in kernels:
        if out and any(f in k["kernel"] for f in FOLLOW_UP):
            out.append(out[-1])
            continue
        out.append(labels[i] if i < len(labels) else None)
        i += 1
    aligned = i == len(labels)
    for k, label in zip(kernels, out, strict=True):
        k["label"] = label if aligned else None
    return aligned


def summarize(kernels: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    aligned = attach_labels(kernels, labels)
    families: dict[str, list[float]] = defaultdict(list)
    for k in kernels:
        families[kernel_family(k["kernel"])].append(k["us"])
    span = (kernels[-1]["start_us"] + kernels[-1]["us"] - kernels[0]["start_us"]) if kernels else 0.0
    busy = sum(k["us"] for k in kernels)
    return {"kernels": len(kernels), "launch_labels": len(labels), "aligned": aligned,
            "busy_us": round(busy, 1), "span_us": round(span, 1), "idle_us": round(span - busy, 1),
            "families": sorted(({"family": f, "count": len(v), "us": round(sum(v), 1)} for f, v in families.items()),
                               key=lambda r: -r["us"]),
            "trace": [{**k, "us": round(k["us"], 2), "start_us": round(k["start_us"] - kernels[0]["start_us"], 2)}
                      for k in kernels]}


def build_int8(name: str, onnx_bytes: bytes, batch: int, cache: str) -> tuple[Any, Any]:
    """The INT8 engine at ``batch`` with the per-tensor ranges of a batch-1 build, as gpu_peers times it."""
    from gpu_int8 import BatchOneRanges
    from gpu_peers import int8_config

    with BatchOneRanges() as ranges:
        if batch != 1:
            with ranges.build(name, 1):
                build_engine(export_onnx(load(name), 1), int8_config(1, cache))
        with ranges.build(name, batch):
            engine, ctx, _ = build_engine(onnx_bytes, int8_config(batch, cache))
    return engine, ctx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["googlenet"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--top", type=int, default=25, help="slowest kernels printed per network")
    ap.add_argument("--no-select-loads", action="store_true",
                    help="read a concatenation's inputs element by element (gen_vec.SELECT_LOADS off), for A/B")
    ap.add_argument("--int8", action="store_true", help="trace the INT8 engine (ranges from a batch-1 build)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.no_select_loads:
        from backends.gpu.kernels import gen_vec

        gen_vec.SELECT_LOADS = False

    import numpy as np

    from engine.builder import BuilderConfig

    result: dict[str, Any] = {"environment": environment(), "batch": args.batch, "int8": args.int8,
                              "select_loads": not args.no_select_loads, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            cache = str(Path(tmp) / "cache.json")
            onnx_bytes = export_onnx(load(name), args.batch)
            if args.int8:
                engine, ctx = build_int8(name, onnx_bytes, args.batch, cache)
            else:
                config = BuilderConfig(fp16=True, batch=args.batch, timing_cache=cache)
                engine, ctx, _ = build_engine(onnx_bytes, config)
            x = np.random.default_rng(0).standard_normal((args.batch, 3, 224, 224)).astype(np.float32)
            ctx.execute({engine.input_names[0]: x})
            run, _, _ = gpu_segments(engine, ctx)
            summary = summarize(trace(engine, ctx), [label for label, _ in run.seq.steps])
            result["models"][name] = summary
            print(f"== {name} b{args.batch}: {summary['kernels']} kernels ({summary['launch_labels']} launches), "
                  f"busy {summary['busy_us']:.0f} us, idle {summary['idle_us']:.0f} us")
            for f in summary["families"]:
                print(f"   {f['family'][:60]:60s} {f['count']:4d} {f['us']:9.1f} us")
            for k in sorted(summary["trace"], key=lambda k: -k["us"])[:args.top]:
                print(f"   {k['us']:8.1f} us  {k['kernel'][:50]:50s} {(k['label'] or '')[:90]}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
