"""Throughput of ``hetrt eval`` on this machine, and the per-image costs it is made of.

    python bench/eval_throughput.py [--images 24]

Measures, side by side in one run:
1. the functional INT8 ResNet-50 on the simulated Orin DLA: CPU seconds per image (one core);
2. the numpy reference backend against ONNX Runtime (CPU, one thread) at batch 1 on the bundled
   ResNet-50 and MobileNetV2 (CPU seconds per inference, median of 5);
3. images per second of ``hetrt eval`` over the same DLA plan with 1 process, 2 local worker
   processes and a local Ray cluster of 2 workers (wall clock, start-up included), and the
   predictions' equality across the three.
Writes bench/results/eval_throughput.json.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads BLAS: "one core" means one BLAS thread (CPU time sums threads)

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import __version__  # noqa: E402
from engine.builder import BuilderConfig, build_from_onnx  # noqa: E402
from engine.evaluation import EvalOptions, open_dataset  # noqa: E402
from engine.evaluation.evaluate import plan_logits  # noqa: E402
from engine.ir.logger import Logger, Severity  # noqa: E402
from engine.models import build_model  # noqa: E402
from engine.quantization import make_calibrator  # noqa: E402
from engine.runtime import Runtime  # noqa: E402

QUIET = Logger(Severity.ERROR)


def cpu_median(fn, repeats: int = 5) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        ts.append(time.process_time() - t0)
    return float(np.median(ts))


def dla_plan(folder: Path) -> bytes:
    rng = np.random.default_rng(0)
    np.save(folder / "calib.npy", rng.standard_normal((1, 3, 224, 224)).astype(np.float32))
    cfg = BuilderConfig(batch=1, int8=True, calibrator=make_calibrator("minmax", str(folder)),
                        platform="orin-agx-64gb", default_device="dla", dla_core=0, gpu_fallback=True)
    return build_from_onnx(build_model("resnet50"), cfg, QUIET)


def reference_vs_ort(name: str) -> dict:
    import onnxruntime as ort

    model = build_model(name)
    eng = Runtime(QUIET).deserialize(build_from_onnx(model, BuilderConfig(batch=1), QUIET))
    ctx = eng.create_execution_context()
    inp = eng.input_names[0]
    x = np.random.default_rng(1).standard_normal(eng.get_tensor_shape(inp)).astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    iname = sess.get_inputs()[0].name
    h = cpu_median(lambda: ctx.execute({inp: x}))
    o = cpu_median(lambda: sess.run(None, {iname: x}))
    return {"model": name, "hetrt_reference_ms": 1e3 * h, "onnxruntime_1thread_ms": 1e3 * o, "ratio": h / o}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=24)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    plan = dla_plan(tmp)
    eng = Runtime(QUIET).deserialize(plan)
    ctx = eng.create_execution_context()
    x = np.random.default_rng(2).standard_normal((1, 3, 224, 224)).astype(np.float32)
    per_image = cpu_median(lambda: ctx.execute({eng.input_names[0]: x}), 3)
    print(f"functional INT8 ResNet-50 on the simulated Orin DLA: {per_image:.3f} CPU s per image")
    refs = [reference_vs_ort(m) for m in ("resnet50", "mobilenet_v2")]
    for r in refs:
        print(f"reference backend {r['model']}: {r['hetrt_reference_ms']:.1f} ms vs ONNX Runtime 1 thread "
              f"{r['onnxruntime_1thread_ms']:.1f} ms ({r['ratio']:.2f}x)")
    data = tmp / "images"
    data.mkdir()
    rng = np.random.default_rng(3)
    for i in range(args.images):
        np.save(data / f"img_{i:04d}.npy", rng.standard_normal((3, 224, 224)).astype(np.float32))
    dataset = open_dataset(str(data), sample_ndim=3)
    runs = {}
    for label, opts in (("1 process", EvalOptions(batches_per_shard=2)),
                        ("2 local workers", EvalOptions(workers=2, batches_per_shard=2)),
                        ("local Ray, 2 workers", EvalOptions(workers=2, cluster="local-ray", batches_per_shard=2))):
        try:
            logits, secs, _ = plan_logits(plan, dataset, opts)
        except Exception as e:  # Ray may be missing: report, do not fail the others
            print(f"{label}: skipped ({e})")
            continue
        runs[label] = (logits, secs)
        print(f"hetrt eval, {label}: {args.images / secs:.2f} images/s ({secs:.1f} s, start-up included)")
    base = next(iter(runs.values()))[0]
    same = {k: bool(np.array_equal(v[0], base)) for k, v in runs.items()}
    print(f"predictions identical across runs: {same}")
    result = {
        "date": datetime.date.today().isoformat(), "hetrt": __version__, "machine": platform.processor() or
        platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
        "dla_functional_int8_resnet50_cpu_s_per_image": per_image, "reference_vs_onnxruntime": refs,
        "eval_images": args.images,
        "eval_images_per_s": {k: args.images / v[1] for k, v in runs.items()}, "identical": same,
    }
    out = ROOT / "bench" / "results" / "eval_throughput.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
