"""``hetrt debug reduce``: shrink a model that fails a comparison to a small sub-graph that still fails.

Bisection over the graph's nodes in topological order (Polygraphy's ``debug reduce --mode bisect``):
first the smallest prefix whose last tensor already fails against ONNX Runtime, then the latest
start whose boundary tensors, fed with ONNX Runtime's own values of the full model, still give a
failing sub-graph. The bisection assumes that once a tensor fails, the tensors computed from it fail
too, as with an overflow or an error that grows downstream.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import onnx

from engine.cli.args import add_build_options, nonneg_float, nonneg_int
from engine.cli.common import (
    check_outputs,
    config_from_args,
    load_inputs,
    load_onnx,
    make_logger,
    random_inputs,
    write_npz,
)
from engine.cli.compare import build_precision
from engine.cli.surgeon import extract
from engine.compare import DEFAULT_TOLERANCES, ERROR_STATS, compare_arrays, onnxruntime_all_tensors
from engine.ir.errors import HetrtError
from engine.ir.fileio import atomic_write_bytes
from engine.ir.logger import Logger, Severity

NAME = "debug"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("debug", help="debugging tools: reduce a failing model to a small failing sub-graph",
                       description="Debugging tools for models that fail 'hetrt compare'.")
    ops = p.add_subparsers(dest="operation", metavar="OPERATION")
    ops.required = True
    r = ops.add_parser("reduce", help="shrink a model that fails a comparison",
                       description="Bisect over the nodes (topological order) for the smallest sub-graph whose "
                                   "hetrt output still fails the comparison with ONNX Runtime; inner boundary "
                                   "tensors get ONNX Runtime's values of the full model. Writes the sub-model and, "
                                   "with --save-inputs, its inputs (for 'hetrt compare SUB --load-inputs FILE').")
    r.add_argument("model", metavar="MODEL.onnx")
    r.add_argument("-o", "--output", required=True, metavar="MIN.onnx", help="the reduced model to write")
    r.add_argument("--save-inputs", metavar="FILE.npz", help="write the reduced model's inputs")
    r.add_argument("--rtol", type=nonneg_float, default=None, help="relative tolerance (default by precision)")
    r.add_argument("--atol", type=nonneg_float, default=None, help="absolute tolerance (default by precision)")
    r.add_argument("--check-error-stat", choices=ERROR_STATS, default="elemwise", help="as in hetrt compare")
    r.add_argument("--seed", type=nonneg_int, default=0, help="seed of the random inputs (default 0)")
    r.add_argument("--load-inputs", action="append", metavar="NAME:FILE.npy|FILE.npz",
                   help="inputs of the full model")
    add_build_options(r)
    return p


@dataclass
class Checker:
    """Builds a candidate with the user's flags and compares it with ONNX Runtime's values."""

    args: argparse.Namespace
    ref: dict[str, np.ndarray]
    runs: int = 0

    def fails(self, model: onnx.ModelProto, inputs: list[str], output: str) -> bool:
        from engine.builder import build_from_onnx
        from engine.runtime import Runtime

        self.runs += 1
        sub = extract(model, inputs, [output])
        quiet = Logger(Severity.INTERNAL_ERROR)
        try:
            engine = Runtime(quiet).deserialize(build_from_onnx(sub, config_from_args(self.args, sub), quiet))
            got = engine.create_execution_context().execute({n: self.ref[n] for n in inputs})[output]
        except HetrtError:
            return False  # a candidate hetrt cannot build is not the failure being reduced
        tol = DEFAULT_TOLERANCES[build_precision(self.args)]
        rtol = tol.rtol if self.args.rtol is None else self.args.rtol
        return not compare_arrays(output, got, self.ref[output], rtol, self.args.atol, self.args.check_error_stat,
                                  tol.atol_scale).passed


def _float_output(node: onnx.NodeProto, ref: dict[str, np.ndarray]) -> str | None:
    return next((o for o in node.output if o in ref and np.asarray(ref[o]).dtype.kind == "f"), None)


def _boundary(nodes: list[onnx.NodeProto], start: int, stop: int, initializers: set[str]) -> list[str]:
    """Tensors that nodes[start:stop] read but do not produce (excluding initializers)."""
    made = {o for n in nodes[start:stop] for o in n.output}
    seen: dict[str, None] = {}
    for n in nodes[start:stop]:
        for t in n.input:
            if t and t not in made and t not in initializers:
                seen.setdefault(t)
    return list(seen)


def reduce_model(model: onnx.ModelProto, checker: Checker, logger: Logger) -> tuple[onnx.ModelProto, list[str]]:
    nodes = list(model.graph.node)
    inits = {i.name for i in model.graph.initializer}
    ends = [(i, t) for i, n in enumerate(nodes) if (t := _float_output(n, checker.ref)) is not None]
    if not ends:
        raise HetrtError("no node of the model has a floating-point output to compare")
    graph_inputs = [vi.name for vi in model.graph.input if vi.name not in inits]
    if not checker.fails(model, graph_inputs, ends[-1][1]):
        raise HetrtError("the model passes the comparison with these flags: nothing to reduce "
                         "(check with 'hetrt compare')")
    lo, hi = 0, len(ends) - 1  # the smallest prefix ending at a failing tensor
    while lo < hi:
        mid = (lo + hi) // 2
        if checker.fails(model, graph_inputs, ends[mid][1]):
            hi = mid
        else:
            lo = mid + 1
    stop, output = ends[lo][0] + 1, ends[lo][1]
    logger.info(f"Reduced the end to tensor '{output}' (node {stop} of {len(nodes)}, '{nodes[stop - 1].name}')")
    lo, hi = 0, stop - 1  # the latest start that still fails
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if checker.fails(model, _boundary(nodes, mid, stop, inits), output):
            lo = mid
        else:
            hi = mid - 1
    inputs = _boundary(nodes, lo, stop, inits)
    logger.info(f"Reduced the start to node {lo + 1} ('{nodes[lo].name}'): inputs {inputs}")
    return extract(model, inputs, [output]), inputs


def run(args: argparse.Namespace) -> int:
    logger = make_logger(args)
    check_outputs(args, "output", "save_inputs")
    model = load_onnx(args.model)
    inits = {i.name for i in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (args.batch or 1) for d in vi.type.tensor_type.shape.dim]
        specs.append((vi.name, tuple(dims), onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)))
    feeds = load_inputs(args.load_inputs, random_inputs(specs, args.seed))
    ref = {**feeds, **onnxruntime_all_tensors(model, feeds)}
    checker = Checker(args, ref)
    sub, inputs = reduce_model(model, checker, logger)
    atomic_write_bytes(args.output, sub.SerializeToString())
    if args.save_inputs:
        write_npz(args.save_inputs, {n: ref[n] for n in inputs})
    logger.info(f"Wrote {args.output}: {len(sub.graph.node)} of {len(model.graph.node)} nodes still fail the "
                f"comparison ({checker.runs} candidates built)")
    return 0
