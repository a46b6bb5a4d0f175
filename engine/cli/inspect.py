"""``hetrt inspect``: a plan's engine information and layers, or an ONNX model's contents and support.

A file starting with the plan magic is a plan, whatever its extension; anything else is read as ONNX.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter

import numpy as np
import onnx

from engine.cli.args import add_plugin_option
from engine.cli.common import is_plan_file, load_onnx, model_proto, read_bytes
from engine.ir.logger import Logger, Severity

NAME = "inspect"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("inspect", help="show a plan's I/O, layers and placement, or an ONNX model's contents",
                       description="PLAN: engine information and one line per layer (engine inspector). "
                                   "MODEL.onnx: inputs/outputs, opset, op histogram, parameter count, and every op "
                                   "hetrt cannot parse (all of them at once).")
    p.add_argument("file", metavar="PLAN|MODEL.onnx", help="a plan (any extension), an .onnx file or a bundled model")
    p.add_argument("--format", choices=("summary", "oneline", "json"), default="summary",
                   help="summary: overview + one line per layer; oneline: layers only; json: everything")
    add_plugin_option(p)
    return p


def run(args: argparse.Namespace) -> int:
    if not is_plan_file(args.file) and not args.file.endswith((".plan", ".engine")):
        proto = load_onnx(args.file, external_data=False) if os.path.exists(args.file) else model_proto(args.file)
        report = onnx_report(proto)
        if args.format == "json":
            print(json.dumps(report, indent=2))
        else:
            print(format_onnx_report(args.file, report, args.format == "oneline"))
        return 0
    from engine.runtime import Runtime

    engine = Runtime(Logger(Severity.WARNING)).deserialize(read_bytes(args.file, "plan"))
    if args.format == "json":
        print(json.dumps({"engine": json.loads(engine.engine_information()),
                          "layers": json.loads(engine.layer_information("json"))}, indent=2))
        return 0
    if args.format == "summary":
        print(plan_summary(engine))
    print(engine.layer_information("oneline"))
    return 0


def plan_summary(engine) -> str:
    """A few lines a person can read: what the plan is, its I/O, memory, devices and precisions."""
    info = json.loads(engine.engine_information())
    lines = [f"Engine '{info['Name']}': platform {info['Platform']}, plan format {info['PlanFormat']}, "
             f"built by {info['Producer']}, {info['NumLayers']} layers"]
    for b in info["Bindings"]:
        dims = "x".join(str(d) for d in b["Dimensions"])
        lines.append(f"  {b['Mode']:6s} {b['Name']}: {dims} {b['Datatype']}")
    for i, profile in enumerate(info.get("OptimizationProfiles", [])):
        lines.append(f"  optimization profile {i}: " + "; ".join(
            f"{n} min {'x'.join(map(str, r['min']))} opt {'x'.join(map(str, r['opt']))} max "
            f"{'x'.join(map(str, r['max']))}" for n, r in profile.items()))
    lines.append(f"  activation memory {info['DeviceMemorySize'] / 2**20:.2f} MiB "
                 f"(without reuse {info['ActivationBytesWithoutReuse'] / 2**20:.2f} MiB)")
    for p in info.get("Partitions", []):
        why = f" (host: {p['Reason']})" if p.get("Reason") else ""
        if "HostTimeUs" in p:
            why += (f", {p['HostClock']} {p['HostTimeUs']:.1f} us on the CPU + {p['HandoffUs']:.1f} us of "
                    f"hand-offs")
        lines.append(f"  partition {p['Name']}: {p['Device']} on the {p['Backend']} backend, {p['NumLayers']} "
                     f"layers{why}")
    precisions = Counter(str(la.precision.value if la.precision else "none") for la in engine.network.layers)
    lines.append("  precisions: " + ", ".join(f"{n} {k}" for k, n in sorted(precisions.items())))
    meta = engine.metadata
    timed = meta.get("precision_by_timing") or {}
    if timed:
        saved = sum(t["int8_ms"] - t["fp16_ms"] for t in timed.values())
        lines.append(f"  {len(timed)} INT8-capable layer(s) built FP16 by timing (their kernels {saved:.3f} ms faster "
                     f"than INT8, conversions counted in the choice): " + ", ".join(sorted(timed)[:6])
                     + (", ..." if len(timed) > 6 else ""))
    fallback = meta.get("int8_float_on_gpu") or {}
    if fallback:
        lines.append(f"  {len(fallback)} layer(s) in float on the GPU for want of a GPU INT8 kernel: "
                     + ", ".join(sorted(fallback)[:6]) + (", ..." if len(fallback) > 6 else ""))
    return "\n".join(lines) + "\n"


def _dims(vi: onnx.ValueInfoProto) -> str:
    if not vi.type.HasField("tensor_type"):
        return "(not a tensor)"
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return f"? {onnx.TensorProto.DataType.Name(tt.elem_type)}"
    dims = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
    return f"{'x'.join(dims) or 'scalar'} {onnx.TensorProto.DataType.Name(tt.elem_type)}"


def _walk_nodes(graph: onnx.GraphProto):
    """Every node, sub-graphs of If/Loop/Scan included."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _walk_nodes(g)


def _op_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


def onnx_report(proto: onnx.ModelProto) -> dict:
    """What a model holds and what hetrt makes of it (no build: op support and opset only)."""
    from engine.onnx_parser import MAX_OPSET, MIN_OPSET, supported_ops

    graph = proto.graph
    inits = {i.name for i in graph.initializer}
    supported = set(supported_ops())
    ops = Counter(_op_key(n) for n in _walk_nodes(graph))
    unsupported: dict[str, list[str]] = {}
    for n in _walk_nodes(graph):
        key = _op_key(n)
        if key not in supported:
            unsupported.setdefault(key, []).append(n.name or f"<unnamed {n.op_type}>")
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    params = sum(int(np.prod(i.dims)) for i in graph.initializer)
    return {
        "name": graph.name, "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "ir_version": proto.ir_version, "opset": opset, "supported_opsets": [MIN_OPSET, MAX_OPSET],
        "inputs": {vi.name: _dims(vi) for vi in graph.input if vi.name not in inits},
        "outputs": {vi.name: _dims(vi) for vi in graph.output},
        "nodes": sum(ops.values()), "op_histogram": dict(ops.most_common()), "parameters": params,
        "initializers": len(inits), "unsupported_ops": unsupported,
    }


def format_onnx_report(path: str, r: dict, brief: bool = False) -> str:
    lines = [f"ONNX model {path}: graph '{r['name']}', opset {r['opset']}, IR version {r['ir_version']}"
             + (f", producer {r['producer']}" if r["producer"] else "")]
    if not brief:
        lines += [f"  input  {n}: {d}" for n, d in r["inputs"].items()]
        lines += [f"  output {n}: {d}" for n, d in r["outputs"].items()]
        lines.append(f"  {r['nodes']} nodes, {r['parameters']:,} parameters in {r['initializers']} initializers")
        lines.append("  ops: " + ", ".join(f"{op} {n}" for op, n in r["op_histogram"].items()))
    lo, hi = r["supported_opsets"]
    if r["opset"] is not None and not lo <= r["opset"] <= hi:
        lines.append(f"  opset {r['opset']} is outside hetrt's range {lo}-{hi} (older opsets are converted)")
    if r["unsupported_ops"]:
        lines.append(f"  hetrt cannot parse {len(r['unsupported_ops'])} op type(s):")
        for op, nodes in r["unsupported_ops"].items():
            more = f" and {len(nodes) - 3} more" if len(nodes) > 3 else ""
            lines.append(f"    {op}: {len(nodes)} node(s) ({', '.join(nodes[:3])}{more})")
    else:
        lines.append("  hetrt supports every op of this model")
    return "\n".join(lines)
