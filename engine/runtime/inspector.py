"""The engine inspector: per-layer and engine-wide descriptions (TensorRT's IEngineInspector)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from engine.ir.dtypes import DataType, Precision
from engine.ir.errors import ExecutionError

if TYPE_CHECKING:
    from .engine import Engine

DTYPE_NAMES = {DataType.FLOAT: "FP32", DataType.HALF: "FP16", DataType.INT8: "Int8", DataType.UINT8: "UInt8",
               DataType.INT32: "Int32", DataType.INT64: "Int64", DataType.BOOL: "Bool"}


def tensor_record(engine: Engine, name: str) -> dict[str, Any]:
    network, memory = engine.network, engine.memory_plan
    t = network.tensors[name]
    dtype = engine.storage_dtypes[name]
    rec: dict[str, Any] = {"Name": name, "Dimensions": list(t.shape),
                           "Format/Datatype": f"Row major linear {DTYPE_NAMES.get(dtype, dtype.value)}"}
    slot = memory.slots.get(name)
    if slot is not None:
        rec["Location"] = "Arena"
        rec["Offset"] = slot.offset
        rec["Bytes"] = slot.nbytes
    elif name in network.inputs or name in network.outputs:
        rec["Location"] = "Binding"
    else:
        rec["Location"] = "Constant"
    return rec


def layer_records(engine: Engine) -> list[dict[str, Any]]:
    """One dict per layer, the content of ``layer_information('json')``."""
    tactics = engine.tactics
    part_of = {name: p for p in engine.partitions for name in p.layers}
    memory = engine.memory_plan
    host = engine.placement.get("host_layers") or {}
    out = []
    for layer in engine.network.layers:
        part = part_of[layer.name]
        rec: dict[str, Any] = {
            "Name": layer.name,
            "LayerType": layer.kind.value,
            "Inputs": [tensor_record(engine, t) for t in layer.inputs],
            "Outputs": [tensor_record(engine, t) for t in layer.outputs],
            "Precision": (layer.precision or Precision.FP32).value.upper(),
            "Device": "HOST" if layer.name in host else (layer.device or part.device).upper(),
            "Partition": part.name,
            "Backend": part.backend,
            "Origin": list(layer.origin),
            "TacticName": tactics.get(layer.name) if isinstance(tactics, dict) else None,
            "Parameters": layer.params.to_dict(),
            "Weights": {k: {"Dimensions": list(w.shape), "Datatype": w.dtype.name}
                        for k, w in sorted(layer.weights.items())},
        }
        if layer.name in host:  # the cost model's price: CPU time + hand-offs (scheduler.host_cost)
            rec["HostCost"] = _host_cost(host[layer.name])
        if len(layer.origin) > 1:
            rec["Fused"] = " + ".join(layer.origin)
        decision = memory.concats.get(layer.name)
        if decision is not None:
            rec["ConcatElimination"] = {"InPlace": decision.in_place, "Reason": decision.reason}
        out.append(rec)
    return out


def _host_cost(c: dict) -> dict[str, Any]:
    return {"Clock": c["clock"], "TimeUs": c["time_ms"] * 1e3, "HandoffUs": c["handoff_ms"] * 1e3,
            "Handoffs": c["handoffs"], "InBytes": c["in_bytes"], "OutBytes": c["out_bytes"]}


def _oneline(records: list[dict[str, Any]]) -> str:
    def tensors(recs: list[dict]) -> str:
        return ", ".join(f"{r['Name']}[{'x'.join(map(str, r['Dimensions']))} "
                         f"{r['Format/Datatype'].rsplit(' ', 1)[-1]}]" for r in recs)

    lines = []
    for r in records:
        extra = f", fused: {r['Fused']}" if "Fused" in r else ""
        if "ConcatElimination" in r and r["ConcatElimination"]["InPlace"]:
            extra += ", eliminated (in place)"
        if "HostCost" in r:
            h = r["HostCost"]
            extra += (f", {h['Clock']} {h['TimeUs']:.1f} us on the CPU + {h['Handoffs']} hand-off(s) "
                      f"{h['HandoffUs']:.1f} us")
        tactic = r["TacticName"] if r["TacticName"] is not None else "-"
        lines.append(f"{r['Name']}: {r['LayerType']} [{r['Precision']}, {r['Device']}/{r['Backend']}, "
                     f"tactic {tactic}{extra}] {tensors(r['Inputs'])} -> {tensors(r['Outputs'])}")
    return "\n".join(lines)


def layer_information(engine: Engine, format: str = "json") -> str:
    records = layer_records(engine)
    if format == "json":
        return json.dumps({"Layers": records, "Bindings": [t.name for t in engine.io_tensors]}, indent=2)
    if format == "oneline":
        return _oneline(records)
    raise ExecutionError(f"unknown layer information format '{format}'; use 'json' or 'oneline'")


def _partition_info(p: Any, host: dict) -> dict[str, Any]:
    info = {"Name": p.name, "Device": p.device, "Backend": p.backend, "PlannedBackend": p.planned_backend,
            "NumLayers": len(p.layers)}
    if p.reason:
        info["Reason"] = p.reason
    priced = [host[n] for n in p.layers if n in host]
    if priced:  # a host partition: the cost model's CPU time and hand-off time of its layers
        info["Device"] = "host"
        info["HostTimeUs"] = sum(c["time_ms"] for c in priced) * 1e3
        info["HandoffUs"] = sum(c["handoff_ms"] for c in priced) * 1e3
        info["HostClock"] = priced[0]["clock"]
    return info


def engine_information(engine: Engine, format: str = "json") -> str:
    memory = engine.memory_plan
    info = {
        "Name": engine.name,
        "Platform": engine.platform,
        "PlanFormat": engine.format_version,
        "Producer": f"hetrt {engine.producer_version}",
        "NumLayers": engine.num_layers,
        "Bindings": [{"Name": t.name, "Mode": t.mode, "Dimensions": list(t.shape),
                      "Datatype": DTYPE_NAMES.get(t.dtype, t.dtype.value)} for t in engine.io_tensors],
        "DeviceMemorySize": engine.device_memory_size,
        "ActivationBytesWithoutReuse": memory.sum_of_tensor_bytes,
        "ConcatElimination": {n: d.in_place for n, d in memory.concats.items()},
        "Partitions": [_partition_info(p, engine.placement.get("host_layers") or {}) for p in engine.partitions],
        "NumLoadables": len(engine.loadables),
        "BuildConfig": engine.build_config,
    }
    if engine.num_optimization_profiles:
        info["OptimizationProfiles"] = [p.to_dict() for p in engine.profiles]
        fallback = engine.placement.get("fallback_reasons")
        if fallback:
            info["DynamicShapeFallback"] = fallback
    if format == "json":
        return json.dumps(info, indent=2)
    if format == "oneline":
        return "; ".join(f"{k}: {json.dumps(v)}" for k, v in info.items())
    raise ExecutionError(f"unknown engine information format '{format}'; use 'json' or 'oneline'")
