"""ONNX → hetrt network definition (TensorRT's nvonnxparser).

``parse`` loads and checks the model, fixes every input shape statically, then converts the
nodes in order (``convert``). A node whose inputs are all known at build time is evaluated with
ONNX's reference evaluator, whatever its op (``fold``), so shape sub-graphs and generated weights
never reach the network; the others go to converters, which live in the ``ops_*`` modules, one
family each, and register themselves by ONNX op type. Nodes left unsupported are all reported
together in one ``UnsupportedOpsError`` (``unsupported``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from engine.ir.errors import HetrtError, NetworkError, ParserError, UnsupportedError
from engine.ir.layers import IdentityParams
from engine.ir.network import Network
from engine.onnx_parser import (  # noqa: F401 (registration)
    ops_conv,
    ops_depth,
    ops_einsum,
    ops_math,
    ops_plugin,
    ops_pointwise,
    ops_quant,  # noqa: F401 (registration: QuantizeLinear, DequantizeLinear)
    ops_recurrent,  # noqa: F401 (registration: RNN, LSTM, GRU)
    ops_shape,
    ops_tensor,
)
from engine.onnx_parser.attributes import check_attributes
from engine.onnx_parser.context import (
    NonConstantError,
    ParseContext,
    Ref,
    elem_type_name,
    hetrt_dtype,
    numpy_dtype_of,
)
from engine.onnx_parser.convert import convert_node
from engine.onnx_parser.loader import MAX_OPSET, MIN_OPSET, check_model, default_opset, load_model, normalize_opset
from engine.onnx_parser.registry import CONVERTERS
from engine.onnx_parser.unsupported import UnsupportedNode, UnsupportedOpsError

__all__ = ["parse", "supported_ops", "NonConstantError", "UnsupportedOpsError", "UnsupportedNode", "MIN_OPSET",
           "MAX_OPSET"]


def supported_ops() -> list[str]:
    """The ONNX op types (default domain) the parser converts."""
    return sorted(CONVERTERS)


def parse(model: onnx.ModelProto | str | Path, input_shapes: Mapping[str, tuple[int, ...]] | None = None,
          batch: int | None = None, constant_inputs: Mapping[str, np.ndarray] | None = None,
          check: bool = True) -> Network:
    """Parse an ONNX model into a static-shape ``Network``.

    ``input_shapes`` fixes the shape of graph inputs by name; otherwise a symbolic or unknown
    first dimension becomes ``batch`` (default 1) and any other unknown dimension is an error.
    ``constant_inputs`` binds graph inputs to values at build time (like TensorRT's shape-tensor
    inputs): they are folded as constants and are not inputs of the network.
    """
    proto, display = load_model(model)
    source_opset = default_opset(proto)
    # Our own structural checks first: they name the node, where onnx.checker would not.
    names = _node_names(proto.graph)
    _check_structure(proto.graph, names, source_opset)
    _check_known_ops(proto.graph, names, source_opset)
    for node, name in zip(proto.graph.node, names):  # attribute ranges before onnx's shape inference
        check_attributes(node, f"node '{name}' (op {node.op_type}, opset {source_opset})")
    if check:  # False only for a model hetrt itself checked before (a refit replays its recorded model)
        check_model(proto, display)
    proto, opset = normalize_opset(proto, display)
    graph = proto.graph
    input_shapes = dict(input_shapes or {})
    constant_inputs = dict(constant_inputs or {})
    node_names = _node_names(graph)
    if opset != source_opset:
        _check_structure(graph, node_names, opset)

    initializers = {init.name: init for init in graph.initializer}
    runtime_inputs = [vi for vi in graph.input if vi.name not in initializers]
    unknown = set(input_shapes) - {vi.name for vi in runtime_inputs}
    if unknown:
        raise ParserError(f"input_shapes names {sorted(unknown)}, which are not inputs of the model "
                          f"(inputs: {[vi.name for vi in runtime_inputs]})")

    reserved = {vi.name for vi in graph.input} | {o.name for o in graph.output} | set(initializers)
    for node in graph.node:
        reserved.update(node.input)
        reserved.update(node.output)
    network = Network(graph.name or "network")
    ctx = ParseContext(network, opset, {vi.name for vi in runtime_inputs} - set(constant_inputs), reserved)
    ctx.source_opset = source_opset
    ctx.opsets = {imp.domain or "": int(imp.version) for imp in proto.opset_import}
    ctx.opsets[""] = opset
    ctx.opsets.pop("ai.onnx", None)
    ctx.functions = list(proto.functions)
    ctx.model = proto
    ctx.consumed = {t for node in graph.node for t in node.input if t} | {o.name for o in graph.output}

    for name, init in initializers.items():
        try:
            ctx.values[name] = Ref(const=numpy_helper.to_array(init))
        except Exception as e:  # unusual element types the numpy helper cannot decode
            raise ParserError(f"initializer '{name}' cannot be read: {e}") from None
    for vi in runtime_inputs:
        if vi.name in constant_inputs:
            ctx.values[vi.name] = Ref(const=np.asarray(constant_inputs[vi.name]))
            continue
        shape, dtype = _input_signature(vi, input_shapes.get(vi.name), batch)
        try:
            network.add_input(vi.name, shape, dtype)
        except NetworkError as e:
            raise ParserError(f"graph input '{vi.name}': {e}") from None
        ctx.values[vi.name] = Ref(tensor=vi.name)

    report: list[UnsupportedNode] = []
    for node, name in zip(graph.node, node_names):
        try:
            convert_node(ctx, node, name, report)
        except HetrtError as e:
            if report:  # the nodes already found unsupported are the news; this error comes after them
                raise UnsupportedOpsError(report, also=str(e)) from None
            raise
    if report:
        raise UnsupportedOpsError(report)

    for out in graph.output:
        ref = ctx.values[out.name]
        if ref.is_const:
            tensor = ctx.materialize(ref, out.name, ctx.producers.get(out.name, out.name), exact=True)
        elif ref.tensor != out.name and out.name not in network.tensors:
            layer = network.add_layer(IdentityParams(), [ref.tensor], name=ctx.fresh_layer_name(f"{out.name}/output"),
                                      output_names=[out.name], origin=[ctx.producers.get(out.name, out.name)])
            tensor = layer.outputs[0]
        else:
            tensor = ref.tensor
        _check_declared_dtype(out, network.tensors[tensor].dtype)
        network.mark_output(tensor)
    return network


def _check_declared_dtype(vi: onnx.ValueInfoProto, got) -> None:
    """A graph output declared with one element type must not come out as another."""
    declared = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
    if not declared:
        return
    want = hetrt_dtype(numpy_dtype_of(declared)) if numpy_dtype_of(declared) is not None else None
    if want is None or want != got:
        raise ParserError(f"graph output '{vi.name}' is declared {elem_type_name(declared)}, but the graph "
                          f"computes {got.value}")


def _node_names(graph: onnx.GraphProto) -> list[str]:
    """Node names made unique; empty names become ``<op>_<index>``."""
    names: list[str] = []
    used: set[str] = set()
    for i, node in enumerate(graph.node):
        base = node.name or f"{node.op_type}_{i}"
        name, k = base, 0
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        names.append(name)
    return names


def _check_structure(graph: onnx.GraphProto, names: list[str], opset: int) -> None:
    """Dangling inputs and unsorted graphs, reported before any conversion.

    Op support is decided during conversion: a node of an op hetrt does not run as a layer is
    fine as long as its inputs are known at build time (it is folded).
    """
    available = {vi.name for vi in graph.input} | {init.name for init in graph.initializer}
    produced_later = {o for node in graph.node for o in node.output if o}
    for node, name in zip(graph.node, names):
        where = f"node '{name}' (op {node.op_type}, opset {opset})"
        for t in node.input:
            if not t or t in available:
                continue
            if t in produced_later:
                raise ParserError(f"{where}: input '{t}' is produced by a later node (graph not topologically sorted)")
            raise ParserError(f"{where}: input '{t}' is not a graph input, an initializer or the output of any "
                              f"node (missing initializer or dangling input)")
        available.update(o for o in node.output if o)
    for out in graph.output:
        if out.name not in available:
            raise ParserError(f"graph output '{out.name}' is not produced by any node")


def _check_known_ops(graph: onnx.GraphProto, names: list[str], opset: int) -> None:
    """Default-domain op types that ONNX does not define at all (onnx.checker would only name the first)."""
    unknown = [UnsupportedNode(name, node.op_type, "ai.onnx", opset,
                               f"op type {node.op_type} is not an ONNX operator and not supported by hetrt")
               for node, name in zip(graph.node, names)
               if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type)
               and ops_plugin.plugin_for(node) is None]
    if unknown:
        raise UnsupportedOpsError(unknown)


def _input_signature(vi: onnx.ValueInfoProto, override: tuple[int, ...] | None, batch: int | None):
    tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
    if tt is None:
        raise UnsupportedError(f"graph input '{vi.name}' is not a tensor "
                               f"(sequence, map and optional inputs are not supported)")
    np_dtype = numpy_dtype_of(tt.elem_type)
    dtype = hetrt_dtype(np_dtype) if np_dtype is not None else None
    if dtype is None:
        raise UnsupportedError(f"graph input '{vi.name}' has element type {elem_type_name(tt.elem_type)}; hetrt "
                               f"inputs may be float32, float16, int8, uint8, int32, int64 or bool")
    declared: list[int | None] = []
    if tt.HasField("shape"):
        declared = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    if override is not None:
        override = tuple(int(d) for d in override)
        if tt.HasField("shape"):
            if len(override) != len(declared):
                raise ParserError(f"input_shapes gives '{vi.name}' rank {len(override)} shape {override}, "
                                  f"the model declares rank {len(declared)}")
            for i, (d, o) in enumerate(zip(declared, override)):
                if d is not None and d != o:
                    raise ParserError(f"input_shapes gives '{vi.name}' dim {i} = {o}, the model fixes it to {d}")
        return override, dtype
    if not tt.HasField("shape"):
        raise ParserError(f"graph input '{vi.name}' has no shape; give it in input_shapes")
    shape = []
    for i, d in enumerate(declared):
        if d is None:
            if i == 0:
                d = 1 if batch is None else int(batch)
            else:
                sym = tt.shape.dim[i].dim_param or "?"
                raise ParserError(f"graph input '{vi.name}' dim {i} ('{sym}') is not fixed; give the shape in "
                                  f"input_shapes")
        shape.append(d)
    return tuple(shape), dtype
