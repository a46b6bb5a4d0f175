"""hetrt on the GPU against its peers, in one process on one GPU.

Models: torchvision ResNet-50, MobileNetV2, EfficientNet-B0, ResNeXt-50 32x4d (grouped convolution),
ConvNeXt-T (7x7 depthwise, LayerNorm, MLP) and ViT-B/16 (attention), with random weights and batch-norm
statistics calibrated on random images (bench/gpu_torchvision.py says why: without it the two
depthwise networks' logits underflow fp16 and every fp16 engine outputs zeros), exported to ONNX
in this process. hetrt goes the real way: ONNX -> builder (--fp16, tactic timing with a timing
cache) -> plan bytes -> runtime -> execution context; its time is the replay of the partition's
CUDA graph with the input already staged on the device (as the peers' inputs are).
Peers, fp16 and channels_last: PyTorch eager, PyTorch eager captured in a CUDA graph,
torch.compile (mode reduce-overhead, with --compile), and JAX jit for ResNet-50 (a plain-JAX
NHWC ResNet-50 with the same folded weights, bench/gpu_jax_resnet.py; none for the other models).
PyTorch and hetrt times are CUDA-event medians over groups of back-to-back runs; JAX's are host
clock medians over groups (dispatch is asynchronous, one block_until_ready per group); the spread
is (min, max) over groups.

INT8 for hetrt (``--int8``, on by default; ``--no-int8`` skips it): ResNet-50, MobileNetV2 and
EfficientNet-B0 (``INT8_MODELS``), built as
bench/gpu_int8.py builds it (``int8`` with ``fp16``, so layers without INT8 run FP16; minmax
calibration on one random image at batch 1, whose per-tensor ranges the larger batches reuse,
``gpu_int8.BatchOneRanges``) and timed like the FP16 engine, by replaying its CUDA graph. An INT8
engine that is not one CUDA graph is reported with its reference-backend layers instead of a time.
Its error against torch fp32 and against hetrt fp16 is reported, not judged: on random weights it
says nothing about INT8 (tests/gpu/test_int8.py checks the integers bit for bit). The depthwise
convolutions run the INT8 depthwise kernel (``dwconv8``, backends/gpu/lower_int8.py); layers whose
activation has no INT8 GPU epilogue (EfficientNet's swish) stay FP16 in the same CUDA graph.

Accuracy: every output against the torch fp32 model (relative L2). A row is valid when hetrt's
error is at most twice PyTorch fp16's plus 1e-2, and below 0.1 (random networks amplify fp16 rounding: PyTorch
fp16 itself lands at 0.6-4e-2 on them); an invalid row's times are no comparison.

Also reported: build time for ResNet-50 cold (empty timing cache) and warm; the GPU arena bytes
against the sum of the partition's activation tensor sizes.

With ``--merge`` the rows of an existing output file that this run does not re-measure are kept,
each marked with the date it was measured (``measured``), and the re-measured ones replaced.

Usage: python bench/gpu_peers.py [--batches 1 32 256] [--models resnet50 ...] [--compile] [--jax] [--no-int8]
                                 [--merge] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX shares the GPU with PyTorch and CuPy

import numpy as np  # noqa: E402
from gpu_torchvision import DEFAULT_MODELS, MODELS, export_onnx, load  # noqa: E402

INT8_MODELS = ("resnet50", "mobilenet_v2", "efficientnet_b0")
INT8_NOT_RUN = "not run: {model} is not in the INT8 set of this bench (INT8_MODELS)"
CALIB_SEED = 1


def _stats(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


def time_events(fn, reps: int, groups: int, stream=None, warmup: int = 3) -> dict[str, float]:
    """Milliseconds per call of ``fn`` (which enqueues work): medians over groups, CUDA events."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(groups):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(stream)
        for _ in range(reps):
            fn()
        e.record(stream)
        e.synchronize()
        samples.append(s.elapsed_time(e) / reps)
    return _stats(samples)


def time_enqueue(ctx: Any, stream: Any, reps: int, groups: int) -> dict[str, float]:
    """Milliseconds per run of an execution context enqueued on ``stream`` with the inputs it has
    staged (``ExecutionContext.execute_async``: no host copies), timed by CUDA events."""
    import cupy as cp

    for _ in range(3):
        ctx.execute_async(None, stream)
    stream.synchronize()
    samples = []
    start, end = cp.cuda.Event(), cp.cuda.Event()
    for _ in range(groups):
        start.record(stream)
        for _ in range(reps):
            ctx.execute_async(None, stream)
        end.record(stream)
        end.synchronize()
        samples.append(cp.cuda.get_elapsed_time(start, end) / reps)
    return _stats(samples)


def capture_torch_graph(fn, calls: int = 1) -> Any:
    """A torch CUDA graph of ``calls`` back-to-back calls of ``fn``, after three warm-up calls on a side
    stream (lazy initialisation, cuDNN's algorithm choice among it, must not happen during capture)."""
    import torch

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(calls):
            fn()
    return g


def build_engine(onnx_bytes: bytes, config: Any) -> tuple[Any, Any, float]:
    """ONNX bytes -> builder -> plan -> runtime: (engine, a fresh execution context, build seconds)."""
    import onnx

    from engine.builder import build_from_onnx
    from engine.ir.logger import Logger, Severity
    from engine.runtime import Runtime

    quiet = Logger(Severity.ERROR)
    t0 = time.perf_counter()
    plan = build_from_onnx(onnx.load_from_string(onnx_bytes), config, quiet)
    build_s = time.perf_counter() - t0
    engine = Runtime(quiet).deserialize(plan)
    return engine, engine.create_execution_context(), build_s


def gpu_segments(engine: Any, ctx: Any) -> tuple[Any | None, list[Any], list[str]]:
    """The engine's only CUDA graph (None unless the engine is one GPU partition), every GPU
    partition's graph in this context (``GpuContext.segment``), and the layers that run on the
    reference backend instead (host partitions), which keep the engine from being one CUDA graph."""
    gpu = [p for p in engine.partitions if p.backend == "gpu"]
    runs = [ctx.partition_context(p.name).segment for p in gpu]
    elsewhere = [n for p in engine.partitions if p.backend != "gpu" for n in p.layers]
    return (runs[0] if len(engine.partitions) == 1 and len(gpu) == 1 else None), runs, elsewhere


def run_hetrt(onnx_bytes: bytes, batch: int, x: np.ndarray, cache: str, reps: int, groups: int) -> dict[str, Any]:
    from engine.builder import BuilderConfig

    engine, ctx, build_s = build_engine(onnx_bytes, BuilderConfig(fp16=True, batch=batch, timing_cache=cache))
    t1 = time.perf_counter()
    out = ctx.execute({engine.input_names[0]: x})
    first_s = time.perf_counter() - t1
    run, runs, elsewhere = gpu_segments(engine, ctx)
    if run is None:
        raise RuntimeError(f"expected one GPU partition, got partitions {[p.name for p in engine.partitions]} "
                           f"and reference-backend layers {elsewhere}")
    t = time_enqueue(ctx, run.stream, reps, groups)
    return {"ms": t, "build_s": round(build_s, 2), "first_execute_s": round(first_s, 2),
            "launches": len(run.seq.steps), "tactic_families": tactic_families(runs), "arena_bytes": run.arena.nbytes,
            "activation_bytes_without_reuse": run.activation_bytes,
            "output": out[engine.output_names[0]].astype(np.float32)}


def tactic_families(runs: list) -> dict[str, int]:
    """How many convolutions of the GPU segments run each kernel family (igemm, wgmma, s8igemm,
    s8wgmma, cublas, cublaslt, cudnn, gemv, gdirect): which mainloop the tactic timing chose."""
    out: dict[str, int] = {}
    for r in runs:
        for op in r.unit.lowered.ops:
            if op.kind in ("conv", "conv8"):
                fam = op.info["tactic"].name.split("_")[0]
            elif op.kind in ("conv_cublas", "conv_cublaslt", "conv_cudnn", "conv_gemv", "conv_gdirect"):
                fam = op.kind.split("_")[1]
            else:
                continue
            out[fam] = out.get(fam, 0) + 1
    return out


def calibration_feed(batch: int) -> dict[str, np.ndarray]:
    """One seeded random image drawn like the benchmark inputs (uniform [0, 1)), repeated to ``batch``.

    Only a model's batch-1 INT8 build reads it (``gpu_int8.BatchOneRanges``); larger builds validate
    its shape, hence the repetition (a broadcast view, no copy)."""
    img = np.random.default_rng(CALIB_SEED).random((1, 3, 224, 224), dtype=np.float32)
    return {"input": np.broadcast_to(img, (batch, 3, 224, 224))}


def int8_config(batch: int, cache: str) -> Any:
    """The INT8 build (FP16 where INT8 cannot run; minmax calibration on ``calibration_feed``)."""
    from engine.builder import BuilderConfig
    from engine.quantization import make_calibrator

    calibrator = make_calibrator("minmax", [calibration_feed(batch)])
    return BuilderConfig(fp16=True, int8=True, batch=batch, calibrator=calibrator, timing_cache=cache)


def run_hetrt_int8(onnx_bytes: bytes, batch: int, x: np.ndarray, cache: str, reps: int,
                   groups: int) -> dict[str, Any]:
    """The INT8 engine (FP16 where INT8 cannot run), built and timed as ``run_hetrt`` builds and times
    the FP16 one; run it inside ``BatchOneRanges.build`` so that batch > 1 reuses the batch-1 ranges.
    An engine that is not one CUDA graph gets its reference-backend layers instead of a time."""
    engine, ctx, build_s = build_engine(onnx_bytes, int8_config(batch, cache))
    out = ctx.execute({engine.input_names[0]: x})
    run, runs, elsewhere = gpu_segments(engine, ctx)
    if run is not None and not elsewhere:
        ms: dict[str, float] | str = time_enqueue(ctx, run.stream, reps, groups)
    else:
        ms = (f"not timed: not one CUDA graph ({len(runs)} GPU segments, {len(elsewhere)} layer(s) on the "
              "reference backend, see fallback_layers)")
    ranges = "calibrated in this build" if batch == 1 else "the batch-1 build's"
    return {"ms": ms, "build_s": round(build_s, 2), "launches": sum(len(r.seq.steps) for r in runs),
            "tactic_families": tactic_families(runs),
            "int8_convs": sum(op.kind == "conv8" for r in runs for op in r.unit.lowered.ops),
            "int8_depthwise": sum(op.kind == "dwconv8" for r in runs for op in r.unit.lowered.ops),
            "fallback_layers": elsewhere, "ranges": f"minmax on one image, {ranges}",
            "output": out[engine.output_names[0]].astype(np.float32)}


def hetrt_int8_entry(name: str, onnx_bytes: bytes, batch: int, x: np.ndarray, cache: str, reps: int, groups: int,
                     ranges: Any, ref: np.ndarray, fp16_out: np.ndarray) -> dict[str, Any] | str:
    """The row's ``hetrt_int8``: the measurement, or why there is none; an INT8 failure never costs the row."""
    from gpu_int8 import MissingBatchOneRanges

    if name not in INT8_MODELS:
        return INT8_NOT_RUN.format(model=name)
    try:
        with ranges.build(name, batch):
            r = run_hetrt_int8(onnx_bytes, batch, x, cache, reps, groups)
    except MissingBatchOneRanges as e:
        return f"not run: {e}"
    except Exception as e:
        traceback.print_exc()
        return f"failed: {type(e).__name__}: {e}"
    out = r.pop("output")
    r["rel_l2_vs_torch_fp32"] = _rel(out, ref)
    r["rel_l2_vs_hetrt_fp16"] = _rel(out, fp16_out.astype(np.float64))
    return r


def run_torch(model, x, reps: int, groups: int, compile_: bool) -> dict[str, Any]:
    import torch

    res: dict[str, Any] = {}
    m = model.half().to(memory_format=torch.channels_last)
    xd = x.half().contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        res["output"] = m(xd).float().cpu().numpy()
        res["eager"] = time_events(lambda: m(xd), reps, groups)
        g = capture_torch_graph(lambda: m(xd))
        res["eager_cuda_graph"] = time_events(g.replay, reps, groups)
        if compile_:
            t0 = time.perf_counter()
            cm = torch.compile(m, mode="reduce-overhead")
            for _ in range(3):
                cm(xd)
            res["compile_s"] = round(time.perf_counter() - t0, 1)
            res["torch_compile"] = time_events(lambda: cm(xd), reps, groups)
    return res


def run_jax(state: dict[str, np.ndarray], x: np.ndarray, reps: int, groups: int) -> dict[str, Any]:
    """JAX jit ResNet-50 (fp16, NHWC) with the same weights; host-clock medians per group."""
    import gpu_jax_resnet as jr
    import jax
    import jax.numpy as jnp

    params = jr.params_from_torch(state, "float16")
    xd = jax.device_put(jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float16))
    fn = jax.jit(jr.forward)
    t0 = time.perf_counter()
    out = fn(params, xd).block_until_ready()
    res: dict[str, Any] = {"compile_s": round(time.perf_counter() - t0, 1), "device": str(xd.devices())}
    for _ in range(3):
        fn(params, xd).block_until_ready()
    samples = []
    for _ in range(groups):
        t1 = time.perf_counter()
        for _ in range(reps):
            y = fn(params, xd)
        y.block_until_ready()
        samples.append((time.perf_counter() - t1) * 1e3 / reps)
    res["ms"] = _stats(samples)
    res["output"] = np.asarray(out, np.float32)
    return res


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - ref) / np.linalg.norm(ref))


def _hetrt_cudnn() -> int:
    """The cuDNN version hetrt's cuDNN tactic loads (0: none, the tactic is not timed)."""
    from backends.gpu.kernels import cudnn

    return cudnn.version()


def environment() -> dict:
    import cupy as cp
    import torch

    props = cp.cuda.runtime.getDeviceProperties(0)
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        driver = str(cp.cuda.runtime.driverGetVersion())
    import torchvision

    env = {"device": props["name"].decode(), "driver": driver, "cupy": cp.__version__, "torch": torch.__version__,
           "torchvision": torchvision.__version__, "cudnn": torch.backends.cudnn.version(),
           "hetrt_cudnn": _hetrt_cudnn(),
           "python": platform.python_version(),
           "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    try:
        import jax

        env["jax"] = jax.__version__
    except ImportError:
        env["jax"] = None
    return env


def write_results(path: str | os.PathLike, rows: list, **fields: Any) -> None:
    """Write a benchmark's rows atomically as JSON with the environment they were measured in
    (device, driver, versions, date) first, then ``fields`` (e.g. the batch), then the rows."""
    from engine.ir.fileio import atomic_write_text

    atomic_write_text(path, json.dumps({"environment": environment(), **fields, "rows": rows}, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=list(MODELS))
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (about 15 s per shape)")
    ap.add_argument("--jax", action="store_true", help="also time the JAX jit ResNet-50")
    ap.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True,
                    help="also build and time hetrt INT8 (INT8_MODELS; ranges calibrated at batch 1)")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--groups", type=int, default=10)
    ap.add_argument("--out", default=None)
    ap.add_argument("--merge", action="store_true", help="keep the output file's rows this run does not redo")
    args = ap.parse_args()
    import torch
    from gpu_int8 import BatchOneRanges

    env = environment()
    gpu = "h100" if "H100" in env["device"] else env["device"].split()[-1].lower()
    out = Path(args.out or Path(__file__).parent / "results" / f"gpu_peers_{gpu}.json")
    rows: list[dict[str, Any]] = []
    kept = _kept_rows(out, {(m, b) for m in args.models for b in args.batches}) if args.merge else []
    cache = str(Path(tempfile.mkdtemp()) / "timing_cache.json")
    torch.manual_seed(0)
    with BatchOneRanges() as ranges:
        for name in args.models:
            for batch in sorted(args.batches):  # batch 1 first: it calibrates the INT8 ranges the others reuse
                row = measure_row(name, batch, args, cache, ranges)
                row["measured"] = env["date"]
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items()}, default=str)[:600], flush=True)
                out.write_text(json.dumps({"environment": env, "rows": _ordered(rows + kept)}, indent=1,
                                          default=str))  # after every row
                torch.cuda.empty_cache()
    print(table(rows))
    print(f"wrote {out}")


def _stage(name: str, batch: int, what: str, t0: float) -> None:
    """A progress line on stderr as each stage of a row starts, so a run stopped by its time limit
    still shows where the time went (the first build on a fresh machine compiles every kernel module)."""
    print(f"[{time.perf_counter() - t0:7.1f} s] {name} batch {batch}: {what}", file=sys.stderr, flush=True)


def measure_row(name: str, batch: int, args: argparse.Namespace, cache: str, ranges: Any) -> dict[str, Any]:
    """One (model, batch) row; a failure is recorded in the row, never raised (the other rows go on)."""
    import torch

    row: dict[str, Any] = {"model": name, "batch": batch}
    t_row = time.perf_counter()
    _stage(name, batch, "export and hetrt FP16 build", t_row)
    try:
        model = load(name, "cuda")
        onnx_bytes = export_onnx(model, batch)
        x = torch.rand(batch, 3, 224, 224)
        with torch.inference_mode():
            ref = model(x.cuda()).double().cpu().numpy()
        state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
        reps = max(3, args.reps // max(1, batch // 32))
        h = run_hetrt(onnx_bytes, batch, x.numpy(), cache, reps, args.groups)
        fp16_out = h.pop("output")
        h["rel_l2_vs_torch_fp32"] = _rel(fp16_out, ref)
        if name == "resnet50":
            import onnx

            from engine.builder import BuilderConfig, build_from_onnx
            from engine.ir.logger import Logger, Severity

            t0 = time.perf_counter()
            build_from_onnx(onnx.load_from_string(onnx_bytes),
                            BuilderConfig(fp16=True, batch=batch, timing_cache=cache), Logger(Severity.ERROR))
            h["build_warm_cache_s"] = round(time.perf_counter() - t0, 2)
        row["hetrt_fp16"] = h
        _stage(name, batch, "hetrt INT8", t_row)
        row["hetrt_int8"] = (hetrt_int8_entry(name, onnx_bytes, batch, x.numpy(), cache, reps, args.groups, ranges,
                                              ref, fp16_out) if args.int8 else "not run: --no-int8")
        _stage(name, batch, "PyTorch eager, CUDA graph" + (", torch.compile" if args.compile else ""), t_row)
        row.update(run_torch(model, x.cuda(), reps, args.groups, args.compile))
        row["torch_fp16_rel_l2_vs_torch_fp32"] = _rel(row.pop("output"), ref)
        err, err16 = h["rel_l2_vs_torch_fp32"], row["torch_fp16_rel_l2_vs_torch_fp32"]
        row["valid"] = err <= 2 * err16 + 1e-2 and err < 0.1
        if name == "resnet50" and args.jax:
            _stage(name, batch, "JAX jit", t_row)
            try:
                j = run_jax(state, x.numpy(), reps, args.groups)
                j["rel_l2_vs_torch_fp32"] = _rel(j.pop("output"), ref)
                row["jax_jit"] = j
            except Exception as e:
                row["jax_jit"] = f"failed: {type(e).__name__}: {e}"
                traceback.print_exc()
        else:
            row["jax_jit"] = "not run: the JAX peer exists for ResNet-50 only (bench/gpu_jax_resnet.py)"
    except Exception as e:  # one failing row must not lose the others
        row["error"] = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    return row


def _kept_rows(path: Path, redo: set[tuple[str, int]]) -> list[dict[str, Any]]:
    """Rows of an earlier result file not in ``redo``, each with the date it was measured."""
    if not path.exists():
        return []
    old = json.loads(path.read_text())
    env = old.get("environment", {})
    kept = []
    for r in old.get("rows", []):
        if (r["model"], r["batch"]) in redo:
            continue
        date = r.get("measured") or (env.get("date_batch32") if r["batch"] == 32 and env.get("date_batch32")
                                     else env.get("date"))
        kept.append({**r, "measured": date})
    return kept


def _ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = list(MODELS)
    return sorted(rows, key=lambda r: (names.index(r["model"]) if r["model"] in names else 99, r["batch"]))


def _median(v: Any) -> float | None:
    """The median ms of a timing entry (stats, or a dict holding them under "ms"); None where not timed."""
    if isinstance(v, dict) and "ms" in v:
        v = v["ms"]
    return v["median"] if isinstance(v, dict) and "median" in v else None


def _cell(v: float | None, w: int, digits: int = 3) -> str:
    return f"{v:{w}.{digits}f}" if v else " " * (w - 3) + "n/a"


def _ratio(num: float | None, den: float | None, w: int) -> str:
    return _cell(num / den if num and den else None, w, 2)


def table(rows: list[dict[str, Any]]) -> str:
    """Medians in ms and peer/hetrt ratios (> 1: hetrt faster), and hetrt FP16/INT8 (> 1: INT8 faster);
    an invalid row is marked, not compared."""
    lines = ["model            batch  hetrt ms   int8 ms  eager ms  eager+graph  compile  jax jit  eager/h  graph/h  "
             "compile/h  jax/h  fp16/int8  img/s hetrt  arena/acts  rel L2 hetrt / torch fp16"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['model']:16s} {r['batch']:5d}  error: {r['error'][:80]}")
            continue
        hh = r["hetrt_fp16"]
        h, i8 = _median(hh), _median(r.get("hetrt_int8"))
        e, g, c, j = (_median(r.get(k)) for k in ("eager", "eager_cuda_graph", "torch_compile", "jax_jit"))
        mark = "" if r.get("valid") else "  INVALID (wrong outputs)"
        lines.append(f"{r['model']:16s} {r['batch']:5d}  {h:8.3f}  {_cell(i8, 8)}  {e:8.3f}  {g:11.3f}  "
                     f"{_cell(c, 7)}  {_cell(j, 7)}  {_ratio(e, h, 7)}  {_ratio(g, h, 7)}  {_ratio(c, h, 9)}  "
                     f"{_ratio(j, h, 5)}  {_ratio(h, i8, 9)}  {r['batch'] / h * 1e3:11.0f}  "
                     f"{hh['arena_bytes'] / hh['activation_bytes_without_reuse']:10.2f}  "
                     f"{hh['rel_l2_vs_torch_fp32']:.1e} / {r['torch_fp16_rel_l2_vs_torch_fp32']:.1e}{mark}")
    lines.append("INT8 hetrt (int8 ms, fp16/int8 = hetrt FP16 ms / INT8 ms): " + ", ".join(INT8_MODELS)
                 + "; bench/gpu_int8.py has the per-layer view. JAX jit: ResNet-50 only.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
