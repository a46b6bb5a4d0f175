"""``hetrt place --json``: the placement report as data (per layer device, time, energy and reason;
totals per policy; each device's whole-network time and energy), for scripts and for laying
simulated numbers beside measured ones. Units: microseconds and microjoules, simulated target clock
(the cost graph holds milliseconds and millijoules).
"""

from __future__ import annotations

from ..cost import CostModel, LayerCost
from ..costgraph import DEVICES, GPU, CostGraph, Node
from ..objectives import evaluate
from ..placement.result import Placement
from .place_report import PlaceReport, _flip_reasons


def _policy(p: Placement, n_dla: int) -> dict:
    return {"latency_us": p.latency * 1e3, "energy_uj": p.energy * 1e3,
            "edp_mj_ms": p.latency * p.energy, "average_power_w": p.energy / p.latency if p.latency else 0.0,
            "transitions": p.transitions, "loadables": dict(p.loadables), "dla_layers": n_dla, "solver": p.solver}


def device_totals(g: CostGraph) -> dict:
    """Every layer a device can run on it, alone: its whole-network time and energy (sequential model,
    static rails included); layers it refuses are counted and left on the GPU."""
    out = {}
    for d in DEVICES:
        if d not in g.static_power_w and d != GPU:
            continue
        assign = [d if n.supports(d) else GPU for n in g.nodes]
        refused = [n.name for n in g.nodes if not n.pseudo and not n.supports(d)]
        m = evaluate(g, assign)
        busy = sum(n.time[d] for n in g.nodes if n.supports(d))
        out[d] = {"latency_us": m.latency * 1e3, "energy_uj": m.energy * 1e3, "layers_busy_us": busy * 1e3,
                  "refused_layers": len(refused), "fallback_device": GPU if refused else None}
    return out


def layer_devices(g: CostGraph, node: Node) -> dict:
    """The layer's cost on every device of the platform, or that device's refusal."""
    return {x: ({"time_us": node.time[x] * 1e3, "energy_uj": node.energy[x] * 1e3}
                if node.supports(x) else {"refused": node.why_not(x)})
            for x in DEVICES if x in g.static_power_w or x == GPU}


def host_fields(row: LayerCost) -> dict:
    """``host``: how a layer the GPU backend has no kernel for runs on the CPU (its GPU-side time is
    host time + hand-offs); empty for every other layer."""
    if row.host is None:
        return {}
    h = row.host
    return {"host": {"reason": h.reason, "host_us": h.time_s * 1e6, "handoff_us": h.handoff_s * 1e6,
                     "handoffs": h.handoffs, "in_bytes": h.in_bytes, "out_bytes": h.out_bytes,
                     "clock": "measured" if h.measured else "estimated"}}


def header(m: CostModel, policy: str) -> dict:
    return {"model": m.graph.name, "platform": m.platform.name, "power_mode": m.mode.name,
            "precision": m.precision.value, "policy": policy, "clock": "simulated target",
            "units": {"time": "us", "energy": "uJ"}, "static_power_w": dict(m.graph.static_power_w)}


def report_json(r: PlaceReport) -> dict:
    m = r.model
    g = m.graph
    c = r.chosen
    reasons = _flip_reasons(r)
    layers = []
    for row in m.layers:
        node = g.nodes[g.index[row.name]]
        d = c.devices[row.name]
        rec = {
            "name": row.name, "kind": row.kind, "device": row.device_label if d == GPU else d,
            "time_us": node.time[d] * 1e3, "energy_uj": node.energy[d] * 1e3, "reason": reasons[row.name],
            "devices": layer_devices(g, node), **host_fields(row),
        }
        layers.append(rec)
    count = sum(1 for n in g.nodes if not n.pseudo and c.devices[n.name] != GPU)
    totals = {"chosen": _policy(c, count)}
    for name, p in r.baselines.items():
        totals[name] = _policy(p, sum(1 for n in g.nodes if not n.pseudo and p.devices[n.name] != GPU))
    tl = r.timeline.summary()
    return {
        **header(m, "optimal"), "objective": r.objective, "layers": layers, "totals": totals,
        "devices": device_totals(g),
        "timeline": {"latency_us": tl["latency_ms"] * 1e3, "energy_uj": tl["energy_per_inference_mj"] * 1e3,
                     "average_power_w": tl["average_power_w"]},
    }


__all__ = ["device_totals", "header", "host_fields", "layer_devices", "report_json"]
