"""The ``replicate`` policy: whole images on the GPU and on each DLA core at once, as NVIDIA's MLPerf
harness runs an Orin (one engine per device, each processing its own stream of images).

Steady-state model (simulated target clock, the cost model's per-layer numbers):

* A device copy runs the whole network alone in ``T_d`` (the sum of its layer times) and would move
  ``bytes_d`` over DRAM per image (layer DRAM share x bandwidth x layer time). A DLA copy needs every
  layer on that DLA; a network the DLA cannot run wholly gets no DLA copy (the reason is reported).
* DRAM contention, the platforms' stated rule (``scheduler.platforms.model``): devices running
  together demand ``bytes_d / T_d`` each; when the demands sum above the effective bandwidth
  (``dram_gbps x bandwidth_efficiency``) every device progresses at ``bandwidth / sum(demand)`` of its
  alone speed, so each copy's image time becomes ``T_d x max(1, sum(demand) / bandwidth)``.
* Throughput = sum over copies of 1 / image time. Power = every rail's static power + each copy's
  dynamic energy per image x its image rate. Perf per watt = throughput / power.

Every combination of copies is reported (GPU alone, GPU + DLA0, GPU + both DLAs, the DLAs alone), so
a user sees whether adding the DLAs helps or hurts the GPU's throughput and the board's efficiency.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from ..cost import CostModel
from ..costgraph import GPU


@dataclass(frozen=True)
class Copy:
    device: str
    alone_ms: float  # one image, device alone
    energy_mj: float  # dynamic energy per image
    demand_gbps: float  # DRAM bandwidth it would draw alone


@dataclass(frozen=True)
class ReplicateRow:
    devices: tuple[str, ...]
    slowdown: float
    throughput_fps: float
    power_w: float
    per_device_fps: dict[str, float]

    @property
    def fps_per_w(self) -> float:
        return self.throughput_fps / self.power_w if self.power_w else 0.0


@dataclass(frozen=True)
class ReplicateReport:
    model: CostModel
    copies: dict[str, Copy]
    refused: dict[str, str]
    rows: tuple[ReplicateRow, ...]
    bandwidth_gbps: float


def _copy(model: CostModel, device: str) -> Copy | str:
    g = model.graph
    t = e = moved = 0.0
    for n in g.nodes:
        if n.pseudo:
            continue
        if not n.supports(device):
            return f"layer '{n.name}': {n.why_not(device)}"
        t += n.time[device]
        e += n.energy[device]
        moved += n.dram_share.get(device, 0.0) * model.mode.dram_gbps * n.time[device] / 1e3  # GB
    return Copy(device, t, e, moved / (t / 1e3) if t else 0.0)


def replicate_report(model: CostModel) -> ReplicateReport:
    devices = [d for d in ("gpu", "dla0", "dla1") if d == GPU or d in model.graph.static_power_w]
    copies: dict[str, Copy] = {}
    refused: dict[str, str] = {}
    for d in devices:
        c = _copy(model, d)
        if isinstance(c, Copy):
            copies[d] = c
        else:
            refused[d] = c
    bw = model.mode.dram_gbps * model.platform.gpu.bandwidth_efficiency
    static = sum(model.graph.static_power_w.values())
    rows = []
    names = list(copies)
    for k in range(1, len(names) + 1):
        for combo in combinations(names, k):
            demand = sum(copies[d].demand_gbps for d in combo)
            s = max(1.0, demand / bw)
            fps = {d: 1e3 / (copies[d].alone_ms * s) for d in combo}
            dyn = sum(copies[d].energy_mj / 1e3 * fps[d] for d in combo)
            rows.append(ReplicateRow(combo, s, sum(fps.values()), static + dyn, fps))
    return ReplicateReport(model, copies, refused, tuple(rows), bw)


def format_replicate(r: ReplicateReport) -> str:
    m = r.model
    lines = [f"hetrt place --policy replicate: '{m.graph.name}' on {m.platform.name} at {m.mode.name}, "
             f"{m.precision.value}: whole images on each device at once (MLPerf-style), simulated target clock",
             f"  DRAM: effective {r.bandwidth_gbps:.1f} GB/s shared; demands above it slow every device alike",
             f"  {'device':<6} {'alone ms/img':>12} {'img/s':>8} {'dyn mJ/img':>10} {'DRAM GB/s':>9}"]
    for d, c in r.copies.items():
        lines.append(f"  {d:<6} {c.alone_ms:12.3f} {1e3 / c.alone_ms:8.0f} {c.energy_mj:10.3f} {c.demand_gbps:9.1f}")
    for d, why in r.refused.items():
        lines.append(f"  {d:<6} no whole-network copy: {why}")
    lines += ["", f"  {'devices':<16} {'img/s':>8} {'slowdown':>8} {'power W':>8} {'img/s/W':>8}  per device img/s"]
    for row in r.rows:
        per = ", ".join(f"{d} {v:.0f}" for d, v in row.per_device_fps.items())
        lines.append(f"  {'+'.join(row.devices):<16} {row.throughput_fps:8.0f} {row.slowdown:8.3f} {row.power_w:8.2f} "
                     f"{row.fps_per_w:8.1f}  {per}")
    best = max(r.rows, key=lambda x: x.throughput_fps)
    lines.append(f"  highest throughput: {'+'.join(best.devices)}; best img/s/W: "
                 f"{'+'.join(max(r.rows, key=lambda x: x.fps_per_w).devices)}")
    return "\n".join(lines)


def replicate_json(r: ReplicateReport) -> dict:
    return {"model": r.model.graph.name, "platform": r.model.platform.name, "power_mode": r.model.mode.name,
            "precision": r.model.precision.value, "policy": "replicate", "bandwidth_gbps": r.bandwidth_gbps,
            "copies": {d: {"alone_ms": c.alone_ms, "energy_mj": c.energy_mj, "demand_gbps": c.demand_gbps}
                       for d, c in r.copies.items()},
            "refused": dict(r.refused),
            "rows": [{"devices": list(x.devices), "throughput_fps": x.throughput_fps, "slowdown": x.slowdown,
                      "power_w": x.power_w, "fps_per_w": x.fps_per_w, "per_device_fps": x.per_device_fps}
                     for x in r.rows]}


__all__ = ["ReplicateReport", "format_replicate", "replicate_json", "replicate_report"]
