"""The numpy reference backend against ONNX Runtime on one CPU thread, side by side in one run.

    python bench/reference_vs_ort.py [--runs 7] [--profile]

Both run the same bundled model (batch 1, FP32): ONNX Runtime on the ONNX graph with one intra-op
and one inter-op thread, the reference backend on the parsed and optimized network (BN folded,
activations fused, as a plan runs it) with BLAS limited to one thread (the script sets
OPENBLAS_NUM_THREADS, OMP_NUM_THREADS and MKL_NUM_THREADS to 1 before numpy loads). Runs
alternate between the two, and the median CPU time (``time.process_time``) of each is reported:
CPU time, not wall time, because this machine is shared and wall time measures the neighbours
(the host's load averages before and after are recorded too). ``--profile`` adds a per-layer-kind
table of where the reference backend's time goes. Results go to bench/results/reference_vs_ort.json.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads BLAS: one thread, like ORT below, whatever the caller set

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import scipy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends.reference import execute  # noqa: E402
from backends.reference.kernels import run_layer  # noqa: E402
from engine.ir.fileio import atomic_write_text  # noqa: E402
from engine.ir.network import Network  # noqa: E402
from engine.models import build_model  # noqa: E402
from engine.onnx_parser import parse  # noqa: E402
from engine.optimizer import optimize  # noqa: E402

MODELS = ("resnet50", "mobilenet_v2", "efficientnet_b0")


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _cpu_ms(fn) -> float:
    t0 = time.process_time()
    fn()
    return (time.process_time() - t0) * 1e3


def _layer_kind(layer) -> str:
    """A profile bucket: the layer kind, with convolutions split by shape class and activation."""
    kind = layer.kind.value
    p = layer.params
    if kind == "convolution":
        taps = int(np.prod(p.kernel))
        cin = layer.weights["kernel"].shape[1]
        size = "x".join(map(str, p.kernel))
        shape = "depthwise" if p.groups > 1 and cin == 1 else ("1x1" if taps == 1 else size)
        act = p.activation.type.value if p.activation is not None else "none"
        return f"conv {shape} +{act}"
    return kind


def profile(net: Network, feeds: dict[str, np.ndarray], runs: int) -> dict[str, dict[str, float]]:
    """Median-of-runs CPU milliseconds per layer kind, running layers one by one as ``execute`` does."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0] * runs)
    counts: dict[str, int] = defaultdict(int)
    for layer in net.layers:
        counts[_layer_kind(layer)] += 1
    for r in range(runs):
        values = dict(feeds)
        for layer in net.layers:
            args = [values[t] for t in layer.inputs]
            t0 = time.process_time()
            outs = run_layer(layer, args, any_layout=True)
            totals[_layer_kind(layer)][r] += (time.process_time() - t0) * 1e3
            values.update(zip(layer.outputs, outs))
    table = {k: {"layers": counts[k], "cpu_ms": statistics.median(v)} for k, v in totals.items()}
    return dict(sorted(table.items(), key=lambda kv: -kv[1]["cpu_ms"]))


def bench_model(name: str, runs: int, want_profile: bool) -> dict:
    model = build_model(name)
    net = optimize(parse(model, batch=1)).network
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    (in_name,) = net.inputs
    sess = _session(model)
    ort_in = sess.get_inputs()[0].name
    ref_out = execute(net, {in_name: x})[net.outputs[0]]  # warm-up (and prepared-weight caches)
    ort_out = sess.run(None, {ort_in: x})[0]
    ref_ms, ort_ms = [], []
    for _ in range(runs):  # alternate, so both see the same machine load
        ref_ms.append(_cpu_ms(lambda: execute(net, {in_name: x})))
        ort_ms.append(_cpu_ms(lambda: sess.run(None, {ort_in: x})))
    err = float(np.max(np.abs(ref_out - ort_out)) / max(float(np.max(np.abs(ort_out))), 1e-30))
    row = {"model": name, "batch": 1, "precision": "fp32", "runs": runs,
           "reference_cpu_ms": statistics.median(ref_ms), "ort_cpu_ms": statistics.median(ort_ms),
           "reference_cpu_ms_all": ref_ms, "ort_cpu_ms_all": ort_ms,
           "max_rel_error_vs_ort": err}
    row["ratio"] = row["reference_cpu_ms"] / row["ort_cpu_ms"]
    if want_profile:
        row["profile"] = profile(net, {in_name: x}, max(3, runs // 2))
    return row


def _print_profile(row: dict) -> None:
    total = sum(v["cpu_ms"] for v in row["profile"].values())
    print(f"  {'layer kind':<34}{'layers':>7}{'cpu ms':>9}{'share':>8}")
    for kind, v in row["profile"].items():
        print(f"  {kind:<34}{v['layers']:>7}{v['cpu_ms']:>9.2f}{v['cpu_ms'] / total:>8.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="timed runs per model and engine (median reported)")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--profile", action="store_true", help="also time each layer kind of the reference backend")
    ap.add_argument("--out", default=str(ROOT / "bench/results/reference_vs_ort.json"))
    args = ap.parse_args()
    rows = []
    load_before = os.getloadavg()
    print(f"{'model':<16}{'reference ms':>14}{'ORT ms':>10}{'ratio':>8}{'max rel err':>13}")
    for name in args.models:
        row = bench_model(name, args.runs, args.profile)
        rows.append(row)
        print(f"{name:<16}{row['reference_cpu_ms']:>14.1f}{row['ort_cpu_ms']:>10.1f}{row['ratio']:>8.2f}"
              f"{row['max_rel_error_vs_ort']:>13.1e}")
        if args.profile:
            _print_profile(row)
    result = {
        "what": "median CPU time (time.process_time) per batch-1 FP32 inference, reference backend vs "
                "ONNX Runtime CPUExecutionProvider, one thread each",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "python": platform.python_version(),
                    # the host is shared: its load (1/5/15-minute averages) before and after the runs
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "versions": {"numpy": np.__version__, "scipy": scipy.__version__, "onnxruntime": ort.__version__,
                     "onnx": onnx.__version__},
        "threads": {v: os.environ.get(v) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")} | {
            "ort_intra_op": 1, "ort_inter_op": 1},
        "results": rows,
    }
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
