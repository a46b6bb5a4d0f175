"""``hetrt surgeon extract``: the sub-model between named tensors (Polygraphy's ``surgeon extract``)."""

from __future__ import annotations

import argparse

import onnx

from engine.cli.common import check_outputs, load_onnx
from engine.ir.errors import ParserError
from engine.ir.fileio import atomic_write_bytes

NAME = "surgeon"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("surgeon", help="edit ONNX models: extract a sub-model between tensors",
                       description="ONNX model surgery. 'extract' keeps the nodes between --inputs and --outputs "
                                   "(tensor names; default: the model's own inputs/outputs) and writes a new model.")
    ops = p.add_subparsers(dest="operation", metavar="OPERATION")
    ops.required = True
    e = ops.add_parser("extract", help="the sub-model between named tensors",
                       description="Write the sub-graph that computes --outputs from --inputs "
                                   "(onnx.utils.Extractor after shape inference).")
    e.add_argument("model", metavar="MODEL.onnx")
    e.add_argument("--inputs", default=None, metavar="A[,B]",
                   help="comma-separated tensor names that become the inputs (default: the model's inputs)")
    e.add_argument("--outputs", default=None, metavar="Y[,Z]",
                   help="comma-separated tensor names that become the outputs (default: the model's outputs)")
    e.add_argument("-o", "--output", required=True, metavar="SUB.onnx", help="the model to write")
    return p


def _names(spec: str | None, default: list[str]) -> list[str]:
    return [n.strip() for n in spec.split(",") if n.strip()] if spec else default


def tensor_names(model: onnx.ModelProto) -> set[str]:
    g = model.graph
    return ({vi.name for vi in g.input} | {i.name for i in g.initializer}
            | {o for n in g.node for o in n.output if o})


def extract(model: onnx.ModelProto, inputs: list[str], outputs: list[str]) -> onnx.ModelProto:
    """The sub-model computing ``outputs`` from ``inputs``; names are checked first, one error for all."""
    known = tensor_names(model)
    missing = [n for n in inputs + outputs if n not in known]
    if missing:
        raise ParserError(f"tensor(s) {', '.join(repr(n) for n in missing)} are not in the model")
    inferred = onnx.shape_inference.infer_shapes(model)
    typed = {vi.name for vi in list(inferred.graph.value_info) + list(inferred.graph.input)
             + list(inferred.graph.output)}
    untyped = [n for n in inputs + outputs if n not in typed and n not in {i.name for i in model.graph.initializer}]
    if untyped:
        raise ParserError(f"shape inference gives no type for tensor(s) {', '.join(map(repr, untyped))}; "
                          f"extract needs typed boundary tensors")
    try:
        sub = onnx.utils.Extractor(inferred).extract_model(inputs, outputs)
    except Exception as e:
        raise ParserError(f"cannot extract {inputs} -> {outputs}: {str(e).splitlines()[0]}") from None
    _check_closed(sub, inputs)
    return sub


def _check_closed(sub: onnx.ModelProto, inputs: list[str]) -> None:
    """Every node input must come from the given inputs, an initializer or another node."""
    have = set(inputs) | {i.name for i in sub.graph.initializer} | {o for n in sub.graph.node for o in n.output}
    need = sorted({t for n in sub.graph.node for t in n.input if t and t not in have})
    if need:
        raise ParserError(f"the sub-graph also needs tensor(s) {', '.join(map(repr, need))}: add them to --inputs")


def run(args: argparse.Namespace) -> int:
    check_outputs(args, "output")
    model = load_onnx(args.model)
    inits = {i.name for i in model.graph.initializer}
    inputs = _names(args.inputs, [vi.name for vi in model.graph.input if vi.name not in inits])
    outputs = _names(args.outputs, [vi.name for vi in model.graph.output])
    sub = extract(model, inputs, outputs)
    atomic_write_bytes(args.output, sub.SerializeToString())
    print(f"[I] Wrote {args.output}: {len(sub.graph.node)} of {len(model.graph.node)} nodes, inputs {inputs}, "
          f"outputs {outputs}")
    return 0
