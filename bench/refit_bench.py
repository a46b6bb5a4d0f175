"""Refit time against build time on the CPU (reference backend), written to bench/results.

    python bench/refit_bench.py [--models resnet18,mobilenet_v2] [--repeats 3]

For each bundled model (ONNX, random weights, BatchNorm folded into the convolutions by the
optimizer): the time of a refittable FP32 build, of a refit that replaces every weight (all
initializers: replayed parse + optimizer folds + in-place replacement), of a refit of the last
FC layer alone, and the check that the refitted engine's outputs are bit-identical to a fresh
build's with the same new weights.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import __version__  # noqa: E402
from engine.builder import BuilderConfig, build_from_onnx  # noqa: E402
from engine.ir.logger import Logger, Severity  # noqa: E402
from engine.models import build_model  # noqa: E402
from engine.refit import Refitter  # noqa: E402
from engine.runtime import Runtime  # noqa: E402


def _new_weights(model, rng) -> dict[str, np.ndarray]:
    out = {}
    for init in model.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype.kind == "f":
            new = np.asarray(a + 0.1 * np.std(a) * rng.standard_normal(a.shape)).astype(a.dtype)
            if "var" in init.name or "running_var" in init.name:
                new = np.abs(new) + np.float32(1e-3)
            out[init.name] = new
    return out


def _with(model, weights):
    m = type(model)()
    m.CopyFrom(model)
    for init in m.graph.initializer:
        if init.name in weights:
            init.CopyFrom(numpy_helper.from_array(weights[init.name], init.name))
    return m


def bench(name: str, repeats: int, rng) -> dict:
    quiet = Logger(Severity.ERROR)
    model = build_model(name)
    build_s, data = [], b""
    for _ in range(repeats):
        t0 = time.perf_counter()
        data = build_from_onnx(model, BuilderConfig(refittable=True), quiet)
        build_s.append(time.perf_counter() - t0)
    plain = build_from_onnx(model, BuilderConfig(), quiet)
    engine = Runtime(quiet).deserialize(data)
    ctx = engine.create_execution_context()
    new = _new_weights(model, rng)
    full_s = []
    for _ in range(repeats):
        refitter = Refitter(engine)
        t0 = time.perf_counter()
        for k, v in new.items():
            refitter.set_named_weights(k, v)
        changed = refitter.refit()
        full_s.append(time.perf_counter() - t0)
    fresh = Runtime(quiet).deserialize(build_from_onnx(_with(model, new), BuilderConfig(), quiet))
    x = rng.standard_normal(engine.io_tensors[0].shape).astype(np.float32)
    got = ctx.execute({engine.io_tensors[0].name: x})
    want = fresh.create_execution_context().execute({engine.io_tensors[0].name: x})
    identical = all(np.array_equal(got[k], want[k]) for k in want)
    refitter = Refitter(engine)
    fc = [n for n in new if "fc" in n or "classifier" in n]
    t0 = time.perf_counter()
    for k in fc:
        refitter.set_named_weights(k, new[k])
    refitter.refit()
    fc_s = time.perf_counter() - t0
    return {"model": name, "weights": len(new), "layers_refitted": len(changed),
            "plan_mib": round(len(data) / 2**20, 1), "plan_mib_not_refittable": round(len(plain) / 2**20, 1),
            "build_s_median": round(float(np.median(build_s)), 3),
            "refit_all_s_median": round(float(np.median(full_s)), 3),
            "refit_fc_only_s": round(fc_s, 3), "fc_weights": fc, "outputs_bit_identical_to_fresh_build": identical}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,mobilenet_v2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench/results/refit_cpu.json"))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = [bench(m, args.repeats, rng) for m in args.models.split(",")]
    header = f"{'model':14s} {'build s':>8s} {'refit all s':>11s} {'refit FC s':>10s} {'plan MiB':>13s} identical"
    print(header)
    for r in rows:
        print(f"{r['model']:14s} {r['build_s_median']:8.3f} {r['refit_all_s_median']:11.3f} "
              f"{r['refit_fc_only_s']:10.3f} "
              f"{r['plan_mib']:6.1f} ({r['plan_mib_not_refittable']:.1f}) {r['outputs_bit_identical_to_fresh_build']}")
    result = {"hetrt": __version__, "machine": platform.machine(), "processor": platform.processor(),
              "python": platform.python_version(), "repeats": args.repeats, "rows": rows}
    from engine.ir.fileio import atomic_write_text

    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
