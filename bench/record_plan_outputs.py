"""Record (or compare) the outputs of every plan kind this machine can build, on seeded inputs.

Plan kinds: host FP32, FP16 and INT8 (calibrated on seeded random data); Orin AGX plans with layers
on the DLA cores (FP16 and INT8, placement policies 'optimal', 'dla-first' and 'pipeline'); and a
hand-made plan alternating GPU, DLA core 0 and DLA core 1. Each plan runs on two fixed seeded
inputs, one at a time, and on both together as a pipelined stream.

A refactoring of the runtime must leave these outputs bit-identical::

    python bench/record_plan_outputs.py --out /tmp/plan_outputs_before.npz      # before
    python bench/record_plan_outputs.py --compare /tmp/plan_outputs_before.npz  # after

``--compare`` exits 1 naming every output that differs (``numpy.array_equal``).
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "scheduler_runtime"))

from engine.builder import Builder, BuilderConfig  # noqa: E402
from engine.ir.fileio import atomic_write_bytes  # noqa: E402
from engine.ir.logger import Logger, Severity  # noqa: E402
from engine.models import build_model  # noqa: E402
from engine.models.zoo import mobilenet_v2  # noqa: E402
from engine.onnx_parser import parse  # noqa: E402
from engine.quantization import make_calibrator  # noqa: E402
from engine.runtime import Runtime  # noqa: E402

QUIET = Logger(Severity.ERROR)
ORIN = "orin-agx-64gb"


def _models() -> dict[str, Callable]:
    return {"resnet": lambda: build_model("resnet18_small"),
            "mobilenet": lambda: mobilenet_v2(image=32, classes=10, width=0.5, seed=3)}


def _calibrator(model, seed: int = 11):
    net = parse(model)
    rng = np.random.default_rng(seed)
    data = [{n: rng.standard_normal(net.tensors[n].shape).astype(np.float32) for n in net.inputs}
            for _ in range(3)]
    return make_calibrator("minmax", data)


def _config(kind: str, model) -> BuilderConfig:
    precision, _, where = kind.partition("-")
    cfg = BuilderConfig(fp16=precision in ("fp16", "int8"), int8=precision == "int8")
    if precision == "int8":
        cfg.calibrator = _calibrator(model)
    if where:
        cfg.platform = ORIN
        cfg.placement_policy = where
    return cfg


def mixed_plan_bytes(model, pattern=("gpu", "dla0", "dla1"), every: int = 4) -> bytes:
    """A host FP16 plan whose layers alternate between the GPU and both DLA cores in blocks (the
    scheduler-runtime tests' construction)."""
    from scheduler_runtime_plans import alternating_plan

    return alternating_plan(Builder(QUIET).build(parse(model), BuilderConfig(fp16=True)), pattern, every)


PLAN_KINDS = ("fp32", "fp16", "int8", "fp16-optimal", "fp16-dla-first", "fp16-pipeline", "int8-optimal",
              "int8-dla-first", "mixed")


def plans() -> Iterator[tuple[str, bytes]]:
    for mname, make in _models().items():
        for kind in PLAN_KINDS:
            model = make()
            if kind == "mixed":
                yield f"{mname}/{kind}", mixed_plan_bytes(model)
            else:
                yield f"{mname}/{kind}", Builder(QUIET).build_serialized_network(parse(model), _config(kind, model))


def _frames(engine, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{n: rng.standard_normal(engine.get_tensor_shape(n)).astype(engine.get_tensor_dtype(n).numpy)
             for n in engine.input_names} for _ in range(2)]


def _run_stream(ctx, frames):
    """The frames as one pipelined stream, where the runtime offers it."""
    run = getattr(ctx, "execute_frames", None)
    return run(frames) if run is not None else None


def record() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, data in plans():
        platform = ORIN if "-" in name.split("/")[1] and name.split("/")[1] != "mixed" else None
        engine = Runtime(QUIET, platform=platform).deserialize(data)
        ctx = engine.create_execution_context()
        frames = _frames(engine, 5)
        for f, feeds in enumerate(frames):
            for t, v in ctx.execute(feeds).items():
                out[f"{name}/frame{f}/{t}"] = v
        stream = _run_stream(ctx, frames)
        if stream is not None:
            for f, outs in enumerate(stream):
                for t, v in outs.items():
                    out[f"{name}/stream{f}/{t}"] = v
        print(f"{name}: {len(engine.partitions)} partitions, "
              f"{sum(1 for p in engine.partitions if p.device == 'dla')} on the DLA", flush=True)
    return out


def compare(reference: Path, now: dict[str, np.ndarray]) -> int:
    with np.load(reference) as before:
        keys = sorted(set(before.files) | set(now))
        bad = []
        for k in keys:
            if k not in before.files or k not in now:
                if "/stream" in k:  # a pipelined stream is recorded only where the runtime offers it
                    continue
                bad.append(f"{k}: only {'before' if k in before.files else 'now'}")
            elif not np.array_equal(before[k], now[k]) or before[k].dtype != now[k].dtype:
                bad.append(f"{k}: differs (max |diff| {np.max(np.abs(before[k].astype(np.float64) - now[k])):.3g})")
        n = sum(1 for k in keys if k in before.files and k in now)
    for b in bad:
        print(b)
    print(f"compared {n} outputs: {len(bad)} differ")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--out", type=Path, help="write the outputs to this .npz file")
    g.add_argument("--compare", type=Path, help="compare against a .npz file written by --out")
    args = ap.parse_args(argv)
    now = record()
    if args.compare is not None:
        return compare(args.compare, now)
    buf = io.BytesIO()
    np.savez(buf, **now)
    atomic_write_bytes(args.out, buf.getvalue())
    print(f"wrote {len(now)} outputs to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
