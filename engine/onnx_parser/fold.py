"""Build-time evaluation of nodes whose inputs are all known, with ONNX's own reference evaluator.

Exports compute shapes with ops hetrt never needs as layers (Mod, ScatterND, Range, Where,
Equal, Expand, ConstantOfShape, If on a known condition, ...). Once every input shape is fixed,
those nodes only ever see known values, so the parser evaluates them here with
``onnx.reference.ReferenceEvaluator``: every op of the ONNX standard is accepted in a constant
sub-graph, with exactly ONNX's semantics (integer arithmetic stays integer arithmetic), and only
the ops left on the run-time path have to be hetrt layers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator

# Folding these would freeze one random draw into the engine: they stay run-time ops.
NONDETERMINISTIC_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                                  "Bernoulli", "Multinomial"})


class FoldError(Exception):
    """The reference evaluator could not evaluate a node (unknown op, bad values, sequence output)."""


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    graphs = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            graphs.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            graphs.extend(attr.graphs)
    return graphs


def _graph_reads(graph: onnx.GraphProto, defined: set[str]) -> set[str]:
    """Names a (sub)graph reads that it does not define itself: its outer-scope dependencies."""
    defined = defined | {vi.name for vi in graph.input} | {init.name for init in graph.initializer}
    reads: set[str] = set()
    for node in graph.node:
        reads.update(t for t in node.input if t and t not in defined)
        for sub in _subgraphs(node):
            reads.update(_graph_reads(sub, defined | {o for o in node.output if o}))
        defined.update(o for o in node.output if o)
    reads.update(o.name for o in graph.output if o.name not in defined)
    return reads


def node_reads(node: onnx.NodeProto) -> list[str]:
    """Every value a node depends on: its inputs, then the outer-scope names its subgraphs read."""
    names = [t for t in node.input if t]
    for sub in _subgraphs(node):
        names.extend(sorted(_graph_reads(sub, set()) - set(names)))
    return list(dict.fromkeys(names))


def evaluate_node(node: onnx.NodeProto, values: Mapping[str, np.ndarray], opsets: Mapping[str, int],
                  functions: Sequence[onnx.FunctionProto] = ()) -> list[np.ndarray | None]:
    """The node's outputs computed from ``values`` (every name of ``node_reads``); None for absent outputs."""
    if node.op_type in NONDETERMINISTIC_OPS:
        raise FoldError(f"{node.op_type} draws random values at run time and is never folded")
    reads = node_reads(node)
    feeds = {name: values[name] for name in reads}
    try:
        if _subgraphs(node):
            inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype), None)
                      for n, v in feeds.items()]
            outputs = [helper.make_value_info(o, onnx.TypeProto()) for o in node.output if o]
            graph = helper.make_graph([node], "fold", inputs, outputs)
            proto = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                                      functions=list(functions))
            results = ReferenceEvaluator(proto).run(None, feeds)
        else:
            evaluator = ReferenceEvaluator(node, opsets=dict(opsets), functions=list(functions) or None)
            results = evaluator.run(None, {n: feeds[n] for n in node.input if n})
    except Exception as e:  # the evaluator raises anything from NotImplementedError to IndexError
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FoldError(f"{type(e).__name__}: {message}") from None
    out: list[np.ndarray | None] = []
    it = iter(results)
    for name in node.output:
        if not name:
            out.append(None)
            continue
        value = next(it)
        if not isinstance(value, (np.ndarray, np.generic)):
            raise FoldError(f"output '{name}' is a {type(value).__name__} (sequences, maps and optionals "
                            f"are not supported as values)")
        out.append(np.array(value, copy=True, order="C"))
    return out
