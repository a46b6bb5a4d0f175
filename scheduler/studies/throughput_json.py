"""``hetrt place --policy pipeline|concurrent --json``: the stream policies' reports as data.

Same units and conventions as ``place_json`` (microseconds, microjoules, simulated target clock):
per layer its device, time, energy and why it sits there, and its cost on every device; per stage
(pipeline) or segment (concurrent) the layers, their time, the hand-offs into it and its energy;
totals (period, throughput, makespan, energy per frame or per run); each device's whole-network
time and energy. Every total is the sum of the parts listed beside it, so a script can check them.

Hand-off attribution follows the placement modules: a tensor is moved once per destination device,
charged to the first stage/segment on that device that reads it (``placement.pipeline`` charges
the receiving stage, ``placement.concurrent._segment`` the first reading segment).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..cost import CostModel
from ..costgraph import GPU, CostGraph
from .place_json import device_totals, header, host_fields, layer_devices
from .throughput_report import ConcurrentReport, PipelineReport


def _inbound(g: CostGraph, placed: Sequence[str], part: Sequence[int]) -> tuple[list[float], list[float]]:
    """Per part (stage or segment index of each layer): hand-off time and energy charged to it."""
    n_parts = max(part) + 1 if part else 0
    t, e = [0.0] * n_parts, [0.0] * n_parts
    for ten in g.tensors:
        p = g.index[ten.producer]
        src = placed[p]
        for dev in {placed[g.index[c]] for c in ten.consumers} - {src}:
            first = min(g.index[c] for c in ten.consumers if placed[g.index[c]] == dev)
            dt, de = g.tensor_transfer(ten, src, dev)
            t[part[first]] += dt
            e[part[first]] += de
    return t, e


def _only_gpu(g: CostGraph, node) -> str:
    refused = [d for d in layer_devices(g, node) if d != GPU and not node.supports(d)]
    return f"; only gpu can run it ({refused[0]}: {node.why_not(refused[0])})" if refused else ""


def _layers(m: CostModel, g: CostGraph, placed: Sequence[str], part: Sequence[int], what: str,
            why: str) -> list[dict]:
    """Per layer: its device in the plan, its time and energy there, the reason, its cost everywhere."""
    rows = {row.name: row for row in m.layers}
    n_parts = max(part) + 1 if part else 0
    out = []
    for i, node in enumerate(g.nodes):
        d, row = placed[i], rows[node.name]
        reason = f"in {what} {part[i]} of {n_parts}, on {d}: {why}{_only_gpu(g, node) if d == GPU else ''}"
        out.append({"name": node.name, "kind": row.kind, "device": row.device_label if d == GPU else d,
                    what: part[i], "time_us": node.time[d] * 1e3, "energy_uj": node.energy[d] * 1e3,
                    "reason": reason, "devices": layer_devices(g, node), **host_fields(row)})
    return out


def _parts(g: CostGraph, placed, part, spans, kind: str) -> list[dict]:
    """One record per stage/segment: device, layer range, layer time, hand-offs in, time and energy."""
    tin, ein = _inbound(g, placed, part)
    out = []
    for k, (dev, first, stop) in enumerate(spans):
        lt = sum(g.nodes[i].time[dev] for i in range(first, stop))
        le = sum(g.nodes[i].energy[dev] for i in range(first, stop))
        out.append({"index": k, "device": dev, "first_layer": g.nodes[first].name,
                    "last_layer": g.nodes[stop - 1].name, "layers": stop - first, "layer_time_us": lt * 1e3,
                    "inbound_transfer_us": tin[k] * 1e3, f"{kind}_time_us": (lt + tin[k]) * 1e3,
                    "layer_energy_uj": le * 1e3, "inbound_transfer_energy_uj": ein[k] * 1e3,
                    "dynamic_energy_uj": (le + ein[k]) * 1e3})
    return out


def pipeline_json(r: PipelineReport) -> dict:
    """The pipeline report as data: stages (the stream structure), per layer, throughput, energy."""
    m, p = r.model, r.plan
    g = m.graph.without_pseudo()
    placed = p.devices(g)
    part = [0] * len(g)
    for k, s in enumerate(p.stages):
        part[s.first:s.stop] = [k] * (s.stop - s.first)
    stages = _parts(g, placed, part, [(s.device, s.first, s.stop) for s in p.stages], "stage")
    dyn = sum(s["dynamic_energy_uj"] for s in stages)
    static = g.static_power * p.period_ms  # W x ms = mJ
    bottleneck = max(range(len(p.stages)), key=lambda k: p.stages[k].time)
    totals = {"frames": p.frames, "period_us": p.period_ms * 1e3, "bottleneck_stage": bottleneck,
              "latency_us": p.latency_ms * 1e3, "makespan_us": p.makespan_ms * 1e3,
              "throughput_fps": p.throughput_fps, "dynamic_energy_per_frame_uj": dyn,
              "static_energy_per_frame_uj": static * 1e3, "energy_per_frame_uj": p.energy_per_frame_mj * 1e3,
              "average_power_w": p.energy_per_frame_mj / p.period_ms if p.period_ms else 0.0,
              "simulated_fps": r.simulated_fps, "solver": p.solver}
    return {**header(m, "pipeline"), "objective": "makespan of the frame stream",
            "layers": _layers(m, g, placed, part, "stage",
                              f"the contiguous stages with the least makespan for {p.frames} frames"),
            "stages": stages, "totals": totals,
            "baselines": {"gpu-only": {"latency_us": r.gpu_only_ms * 1e3, "throughput_fps": 1e3 / r.gpu_only_ms},
                          "sequential-optimal": {"latency_us": r.sequential_ms * 1e3,
                                                 "throughput_fps": 1e3 / r.sequential_ms}},
            "devices": device_totals(m.graph),
            "notes": ["stage times exclude the hand-offs to and from the application's input/output buffers",
                      "energy per frame = dynamic energy of layers and hand-offs + all rails' static power x period"]}


def _network(m: CostModel, segs, latency: float, objective: str) -> dict:
    g = m.graph.without_pseudo()
    placed, part = [""] * len(g), [0] * len(g)
    for k, s in enumerate(segs):
        placed[s.first:s.stop] = [s.device] * (s.stop - s.first)
        part[s.first:s.stop] = [k] * (s.stop - s.first)
    records = _parts(g, placed, part, [(s.device, s.first, s.stop) for s in segs], "segment")
    for rec, s in zip(records, segs):
        rec["dram_share"] = s.share
    why = f"the joint segments and device orders with the least {objective} of the networks"
    return {"model": g.name, "layers": _layers(m, g, placed, part, "segment", why), "segments": records,
            "latency_us": latency * 1e3, "dynamic_energy_uj": sum(x["dynamic_energy_uj"] for x in records),
            "devices": device_totals(m.graph)}


def concurrent_json(r: ConcurrentReport) -> dict:
    """The concurrent report as data: each network's segments (the stream structure), device orders,
    makespan and run throughput, energy with static power over the makespan."""
    m0, p, c = r.models[0], r.plan, r.contention
    nets = [{"index": i, **_network(m, segs, lat, p.objective)}
            for i, (m, segs, lat) in enumerate(zip(r.models, p.segments, p.latencies))]
    dyn = sum(x["dynamic_energy_uj"] for x in nets)
    static = m0.graph.static_power * p.makespan * 1e3  # W x ms = mJ -> uJ
    totals = {"networks": len(nets), "makespan_us": p.makespan * 1e3,
              "sum_latency_us": sum(x["latency_us"] for x in nets),
              "throughput_runs_per_s": 1e3 / p.makespan if p.makespan else 0.0,
              "dynamic_energy_uj": dyn, "static_energy_uj": static, "energy_uj": dyn + static,
              "average_power_w": (dyn + static) / (p.makespan * 1e3) if p.makespan else 0.0,
              "combinations_evaluated": p.combinations_evaluated, "solver": p.solver}
    head = header(m0, "concurrent")
    del head["model"]
    naive = {"makespan_us": r.naive.makespan * 1e3,
             "assignment": [{"network": i, "model": m.graph.name, "device": segs[0].device}
                            for i, (m, segs) in enumerate(zip(r.models, r.naive.segments))]}
    return {**head, "models": [m.graph.name for m in r.models], "objective": p.objective,
            "contention": {"thresholds": list(c.thresholds), "gpu_slowdowns": list(c.gpu_slowdowns),
                           "dla_slowdowns": list(c.dla_slowdowns)},
            "networks": nets,
            "device_order": {d: [{"network": nt, "segment": sg} for nt, sg in seq] for d, seq in p.order.items()},
            "totals": totals,
            "baselines": {"gpu-serial": {"makespan_us": r.gpu_serial_ms * 1e3}, "naive": naive},
            "notes": ["all networks start at t = 0; a segment's time includes the hand-offs into it",
                      "latency includes the contention slowdown while segments of different networks overlap",
                      "energy = dynamic energy of layers and hand-offs + all rails' static power x makespan"]}


__all__ = ["concurrent_json", "pipeline_json"]
