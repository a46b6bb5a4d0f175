"""``hetrt compare``: hetrt's outputs against ONNX Runtime's, or against stored outputs (Polygraphy-style).

Exit status: 0 PASSED, 1 FAILED comparison, 2 error (bad model, flag, file, missing dependency).
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass

import numpy as np

from engine.cli.args import add_build_options, float_at_least, nonneg_float, nonneg_int
from engine.cli.build import EPILOG_MODEL
from engine.cli.common import (
    build_plan,
    check_outputs,
    engine_inputs,
    load_inputs,
    make_logger,
    model_proto,
    random_inputs,
    read_npz,
    write_npz,
)
from engine.compare import (
    DEFAULT_TOLERANCES,
    ERROR_STATS,
    compare_arrays,
    describe_defaults,
    onnxruntime_all_tensors,
    onnxruntime_outputs,
    sqnr_db,
)
from engine.ir.errors import HetrtError, UnsupportedError
from engine.ir.logger import Logger

NAME = "compare"
# --per-layer: a layer fails when its SQNR against ONNX Runtime drops below this (per build precision)
DEFAULT_SQNR_DB = {"fp32": 60.0, "fp16": 30.0, "int8": 15.0}


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "compare", help="compare hetrt's outputs with ONNX Runtime's (or with stored outputs)", epilog=EPILOG_MODEL,
        description="Build MODEL, run it and ONNX Runtime (CPU) on the same seeded random inputs, and check each "
                    "output. NaN/Inf are validated first: an output passes only when its non-finite elements sit "
                    "exactly where the reference has them. Default tolerances by build precision: "
                    f"{describe_defaults()}. Exit status 0 PASSED, 1 FAILED, 2 error.")
    p.add_argument("model", metavar="MODEL")
    add_build_options(p)
    g = p.add_argument_group("comparison options (Polygraphy names in brackets)")
    g.add_argument("--rtol", type=nonneg_float, default=None,
                   help="relative tolerance (default by precision: " + ", ".join(
                       f"{k} {v.rtol:g}" for k, v in DEFAULT_TOLERANCES.items()) + ") [--rtol]")
    g.add_argument("--atol", type=nonneg_float, default=None,
                   help="absolute tolerance (default by precision, a fraction of max|reference|: " + ", ".join(
                       f"{k} {v.atol_scale:g}" for k, v in DEFAULT_TOLERANCES.items()) + ") [--atol]")
    g.add_argument("--check-error-stat", choices=ERROR_STATS, default="elemwise",
                   help="elemwise (default): every element within atol + rtol*|ref|; max/mean/median: that "
                        "statistic of |error| <= atol or of the relative error <= rtol [--check-error-stat]")
    g.add_argument("--seed", type=nonneg_int, default=0, help="seed of the random inputs (default 0) [--seed]")
    g.add_argument("--load-inputs", action="append", metavar="NAME:FILE.npy|FILE.npz",
                   help="inputs from a .npy per input or an .npz of several (e.g. from --save-inputs) [--load-inputs]")
    g.add_argument("--save-inputs", metavar="FILE.npz", help="write the inputs used [--save-inputs]")
    g.add_argument("--save-outputs", metavar="FILE.npz", help="write hetrt's outputs [--save-outputs]")
    g.add_argument("--load-outputs", metavar="FILE.npz",
                   help="compare against these stored outputs (e.g. another run's --save-outputs) instead of ONNX "
                        "Runtime [--load-outputs]")
    g.add_argument("--per-layer", action="store_true",
                   help="compare every layer's output with ONNX Runtime's intermediate tensors (every tensor marked "
                        "as an output in a copy of the model) and name the first layer that goes non-finite or "
                        "falls below --sqnr-threshold (the plan's layers run on the reference backend at their "
                        "built precisions)")
    g.add_argument("--sqnr-threshold", type=float_at_least(-1e9), default=None, metavar="DB",
                   help="with --per-layer: flag layers below this SQNR (default by precision: " + ", ".join(
                       f"{k} {v:g} dB" for k, v in DEFAULT_SQNR_DB.items()) + ")")
    return p


def build_precision(args: argparse.Namespace) -> str:
    return "int8" if args.int8 or args.best else ("fp16" if args.fp16 else "fp32")


def run(args: argparse.Namespace) -> int:
    from engine.runtime import Runtime

    logger = make_logger(args)
    check_outputs(args, "save_inputs", "save_outputs")
    stored = read_npz(args.load_outputs, "--load-outputs") if args.load_outputs else None
    proto = model_proto(args.model) if stored is None or args.per_layer else None
    custom = sorted({n.domain for n in proto.graph.node if n.domain not in ("", "ai.onnx")}) if proto else []
    if custom and stored is None:
        raise UnsupportedError(f"compare needs ONNX Runtime to run every node, and nodes of domain(s) "
                               f"{', '.join(custom)} run as hetrt plugins only; compare against stored outputs "
                               f"(--load-outputs) or check them against your own reference (hetrt run "
                               f"--save-outputs)")
    data = getattr(args, "prebuilt_plan", None) or build_plan(args.model, args, logger)
    engine = Runtime(logger).deserialize(data)
    feeds = load_inputs(args.load_inputs, random_inputs(engine_inputs(engine), args.seed))
    if args.save_inputs:
        write_npz(args.save_inputs, feeds)
        logger.info(f"Wrote inputs to {args.save_inputs}")
    ours = engine.create_execution_context().execute(feeds)
    if args.save_outputs:
        write_npz(args.save_outputs, ours)
        logger.info(f"Wrote hetrt's outputs to {args.save_outputs}")
    if stored is not None:
        ref, ref_name = stored, f"stored outputs {args.load_outputs}"
    else:
        ref, ref_name = onnxruntime_outputs(proto.SerializeToString(), feeds), "ONNX Runtime (CPU)"
    ok = compare_outputs(args, ours, ref, ref_name, logger)
    if args.per_layer:
        ok &= compare_per_layer(args, engine, proto, feeds, logger)
    return 0 if ok else 1


def compare_outputs(args, ours: dict, ref: dict, ref_name: str, logger: Logger) -> bool:
    tol = DEFAULT_TOLERANCES[build_precision(args)]
    rtol = tol.rtol if args.rtol is None else args.rtol
    logger.info(f"Comparing hetrt ({build_precision(args)} build) with {ref_name}: check {args.check_error_stat}, "
                f"rtol {rtol:g}, atol " + (f"{args.atol:g}" if args.atol is not None
                                            else f"{tol.atol_scale:g}·max|ref|"))
    missing = [n for n in ours if n not in ref]
    if missing:
        raise HetrtError(f"output '{missing[0]}' is missing from {ref_name} (it has: {', '.join(ref) or 'nothing'})")
    all_ok = True
    for name, value in ours.items():
        cmp = compare_arrays(name, value, ref[name], rtol, args.atol, args.check_error_stat, tol.atol_scale)
        all_ok &= cmp.passed
        for line in cmp.report().splitlines():
            logger.info(line)
    logger.info(("PASSED | All outputs matched" if all_ok else "FAILED | Some outputs differ")
                + f" | Outputs: {list(ours)}")
    return all_ok


@dataclass(frozen=True)
class LayerRow:
    layer: str
    kind: str
    precision: str
    tensor: str
    sqnr_db: float
    max_abs: float
    ref_max: float
    nonfinite: int  # elements non-finite in hetrt but finite in ONNX Runtime (or the reverse)
    size: int


def _capture(network, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every floating-point tensor hetrt's built network computes (the reference executor, layer precisions
    as built)."""
    from backends.reference.executor import execute
    from engine.ir.layers import LayerKind

    seen: dict[str, np.ndarray] = {}

    def observer(layer, outs) -> None:
        if layer.kind is not LayerKind.CONSTANT:
            seen.update((n, np.asarray(v)) for n, v in zip(layer.outputs, outs) if v.dtype.kind == "f")

    execute(network, feeds, observer=observer)
    return seen


def layer_rows(network, ours: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> list[LayerRow]:
    rows = []
    for layer in network.layers:
        for t in layer.outputs:
            if t not in ours or t not in ref or np.shape(ours[t]) != np.shape(ref[t]):
                continue
            g, r = np.asarray(ours[t], np.float64), np.asarray(ref[t], np.float64)
            fin_g, fin_r = np.isfinite(g), np.isfinite(r)
            both = fin_g & fin_r
            d = np.abs(g[both] - r[both])
            rows.append(LayerRow(layer.name, layer.kind.value, layer.precision.value if layer.precision else "fp32",
                                 t, sqnr_db(r, g), float(d.max()) if d.size else 0.0,
                                 float(np.abs(r[fin_r]).max()) if fin_r.any() else 0.0,
                                 int(np.count_nonzero(fin_g != fin_r)), int(g.size)))
    return rows


def compare_per_layer(args, engine, proto, feeds: dict[str, np.ndarray], logger: Logger) -> bool:
    """Every layer's output against ONNX Runtime's tensor of the same name, in execution order."""
    precision = build_precision(args)
    threshold = DEFAULT_SQNR_DB[precision] if args.sqnr_threshold is None else args.sqnr_threshold
    ref = onnxruntime_all_tensors(proto, feeds)
    rows = layer_rows(engine.network, _capture(engine.network, feeds), ref)
    if not rows:
        raise HetrtError("--per-layer: no layer output of the plan has a tensor of the same name in the ONNX model")
    logger.info(f"Per-layer comparison with ONNX Runtime's intermediate tensors ({len(rows)} layers, "
                f"SQNR threshold {threshold:g} dB)")
    for line in format_rows(rows, threshold, args.fp16 or args.best).splitlines():
        logger.info(line)
    bad = [r for r in rows if r.nonfinite or r.sqnr_db < threshold]
    logger.info(("PASSED" if not bad else "FAILED") + f" | {len(rows) - len(bad)}/{len(rows)} layers finite and at "
                f"SQNR >= {threshold:g} dB")
    return not bad


def _hint(row: LayerRow, fp16_allowed: bool) -> str:
    if row.precision == "int8":
        return f"--layer-precision {shlex.quote(row.layer + (':fp16' if fp16_allowed else ':fp32'))}"
    if row.precision == "fp16":
        return f"--layer-precision {shlex.quote(row.layer + ':fp32')}"
    return "the layer already runs in fp32 (shrink the model with 'hetrt debug reduce')"


def format_rows(rows: list[LayerRow], threshold: float, fp16_allowed: bool) -> str:
    lines = [f"{'layer':44s} {'kind':16s} {'prec':5s} {'SQNR dB':>8s} {'max|err|':>10s} {'max|ref|':>10s}"]
    for r in rows:
        flag = (f"  <-- {r.nonfinite} non-finite of {r.size}" if r.nonfinite else
                "  <-- below threshold" if r.sqnr_db < threshold else "")
        lines.append(f"{r.layer[:44]:44s} {r.kind:16s} {r.precision:5s} {r.sqnr_db:8.2f} {r.max_abs:10.4g} "
                     f"{r.ref_max:10.4g}{flag}")
    first_nan = next((r for r in rows if r.nonfinite), None)
    if first_nan is not None:
        lines.append(f"First non-finite layer: '{first_nan.layer}' ({first_nan.kind}, {first_nan.precision}), tensor "
                     f"'{first_nan.tensor}': {first_nan.nonfinite} of {first_nan.size} elements NaN/Inf where ONNX "
                     f"Runtime's are finite" + (" (beyond the fp16 range ±65504?)" if first_nan.precision == "fp16"
                                                 else "") + f" — try {_hint(first_nan, fp16_allowed)}")
    entry, prev = [], float("inf")
    for r in rows:
        if not r.nonfinite and r.sqnr_db < threshold and prev >= threshold:
            entry.append(r)
        prev = r.sqnr_db if not r.nonfinite else float("-inf")
    if entry:
        lines.append("Error enters at: " + ", ".join(f"'{r.layer}'" for r in entry[:5]) + " — try "
                     + " ".join(_hint(r, fp16_allowed) for r in entry[:3] if r.precision != "fp32")
                     + ("" if any(r.precision != "fp32" for r in entry[:3]) else _hint(entry[0], fp16_allowed)))
    return "\n".join(lines)
