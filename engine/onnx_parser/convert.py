"""Converting one node: fold it when everything it reads is known, else hand it to its converter.

The order of decisions for a node:

1. It reads a value that depends on an unsupported node: it is skipped (its outputs depend on
   that node too) and, if it is unsupported itself, recorded as well. ``Shape``/``Size`` still
   fold when ONNX shape inference knows the static shape of their input.
2. Everything it reads is known at build time: ONNX's reference evaluator computes it
   (``fold.evaluate_node``), whatever the op. Should the evaluator fail, a hetrt converter, if
   there is one, folds it with the reference kernels and says precisely what is wrong.
3. Otherwise a hetrt converter adds layers; without one (or when the converter finds a feature
   it does not implement) the node is recorded as unsupported and conversion goes on.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx

from engine.ir.errors import HetrtError, ParserError, UnsupportedError
from engine.onnx_parser import ops_plugin
from engine.onnx_parser.attributes import check_attributes
from engine.onnx_parser.context import NodeContext, ParseContext, Ref
from engine.onnx_parser.fold import FoldError, evaluate_node, node_reads
from engine.onnx_parser.registry import CONVERTERS
from engine.onnx_parser.unsupported import UnsupportedNode, strip_where

_DEFAULT_DOMAINS = ("", "ai.onnx")


def convert_node(ctx: ParseContext, node: onnx.NodeProto, name: str, report: list[UnsupportedNode]) -> None:
    """Fold or convert ``node``; unsupported nodes are appended to ``report`` (see module doc)."""
    reads = node_reads(node)
    default_domain = node.domain in _DEFAULT_DOMAINS
    builtin = default_domain and node.op_type in CONVERTERS
    plugin = None if builtin else ops_plugin.plugin_for(node)  # a registered custom layer
    has_converter = builtin or plugin is not None
    blocked = [t for t in reads if t in ctx.unresolved]
    if blocked:
        if default_domain and node.op_type in ("Shape", "Size") and _fold_shape_of_unresolved(ctx, node, name):
            return
        if not has_converter:
            report.append(_record(ctx, node, name, _no_converter_reason(node)))
        _mark_unresolved(ctx, node, ctx.unresolved[blocked[0]])
        return
    if plugin is None and all(t in ctx.values and ctx.values[t].is_const for t in reads):
        if default_domain and node.op_type == "Identity":  # same array: it becomes one Constant layer, not two
            _store(ctx, node, name, [ctx.values[node.input[0]]])
            return
        try:
            outs = evaluate_node(node, {t: ctx.values[t].const for t in reads}, ctx.opsets, ctx.functions)
        except FoldError as e:
            if not has_converter:
                report.append(_record(ctx, node, name, f"{_no_converter_reason(node)}, and its inputs are all "
                                                       f"known but it could not be evaluated at build time: {e}"))
                _mark_unresolved(ctx, node, name)
                return
        else:
            _store(ctx, node, name, [None if o is None else Ref(const=o) for o in outs])
            return
    if not has_converter:
        report.append(_record(ctx, node, name, _no_converter_reason(node)))
        _mark_unresolved(ctx, node, name)
        return
    nc = NodeContext(ctx, node, name)
    check_attributes(node, nc.where)
    try:
        refs = CONVERTERS[node.op_type](nc) if builtin else ops_plugin.convert(nc)
    except ParserError:  # NonConstantError included: callers may bind the input and parse again
        raise
    except UnsupportedError as e:
        report.append(_record(ctx, node, name, strip_where(str(e), nc.where)))
        _mark_unresolved(ctx, node, name)
        return
    except HetrtError:
        raise
    except Exception as e:  # a converter bug must still say which node it was converting
        raise ParserError(f"{nc.where}: internal error while converting: {type(e).__name__}: {e}") from e
    for i, out in enumerate(node.output):
        if out and (i >= len(refs) or refs[i] is None) and out in ctx.consumed:
            raise UnsupportedError(f"{nc.where}: output {i} '{out}' is used, but hetrt does not produce it")
    _store(ctx, node, name, refs)


def _store(ctx: ParseContext, node: onnx.NodeProto, name: str, refs: list[Ref | None]) -> None:
    for i, out in enumerate(node.output):
        ref = refs[i] if i < len(refs) else None
        if out and ref is not None:
            ctx.values[out] = ref
            ctx.producers[out] = name


def _no_converter_reason(node: onnx.NodeProto) -> str:
    if node.domain not in _DEFAULT_DOMAINS:
        return f"operators of domain '{node.domain}' are not supported by hetrt; {ops_plugin.describe_missing(node)}"
    if not onnx.defs.has(node.op_type):
        return f"op type {node.op_type} is not an ONNX operator and not supported by hetrt"
    return f"op type {node.op_type} is not supported by hetrt"


def _record(ctx: ParseContext, node: onnx.NodeProto, name: str, reason: str) -> UnsupportedNode:
    domain = node.domain or "ai.onnx"
    opset = ctx.opsets.get("" if domain == "ai.onnx" else domain, 0)
    return UnsupportedNode(name, node.op_type, domain, opset, reason)


def _mark_unresolved(ctx: ParseContext, node: onnx.NodeProto, cause: str) -> None:
    for out in node.output:
        if out:
            ctx.unresolved[out] = cause
            ctx.producers[out] = cause


def _fold_shape_of_unresolved(ctx: ParseContext, node: onnx.NodeProto, name: str) -> bool:
    """Shape/Size of a tensor behind an unsupported node, when shape inference knows its shape.

    This keeps a shape computation downstream of an unsupported op from being listed as
    unsupported itself: only the op that really blocks the model is reported.
    """
    shape = inferred_shapes(ctx).get(node.input[0])
    if shape is None:
        return False
    try:
        outs = evaluate_node(node, {node.input[0]: np.zeros(shape, np.float32)}, ctx.opsets)
    except FoldError:
        return False
    _store(ctx, node, name, [Ref(const=o) for o in outs])
    return True


def inferred_shapes(ctx: ParseContext) -> dict[str, tuple[int, ...]]:
    """Static shapes ONNX shape inference derives with the network's input shapes (computed once)."""
    if ctx.inferred_cache is not None:
        return ctx.inferred_cache
    ctx.inferred_cache = {}
    if ctx.model is None:
        return ctx.inferred_cache
    model = copy.deepcopy(ctx.model)
    for vi in model.graph.input:
        if vi.name in ctx.network.tensors and vi.type.HasField("tensor_type"):
            shape = ctx.network.tensors[vi.name].shape
            dims = vi.type.tensor_type.shape
            dims.ClearField("dim")
            for d in shape:
                dims.dim.add().dim_value = int(d)
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # inference is a best effort here: without it the node is reported as blocked
        return ctx.inferred_cache
    for vi in list(model.graph.value_info) + list(model.graph.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape") and all(d.HasField("dim_value")
                                                                            for d in tt.shape.dim):
            ctx.inferred_cache[vi.name] = tuple(int(d.dim_value) for d in tt.shape.dim)
    return ctx.inferred_cache
