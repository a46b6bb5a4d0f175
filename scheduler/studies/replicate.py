"""The ``replicate`` policy: whole images on the GPU and on each DLA core at once, as NVIDIA's MLPerf
harness runs an Orin (one engine per device, each processing its own stream of images).

Steady-state model (simulated target clock, the cost model's per-layer numbers):

* A device copy runs the whole network alone in ``T_d`` (the sum of its layer times) and would move
  ``bytes_d`` over DRAM per image (layer DRAM share x bandwidth x layer time).
* A DLA copy needs every layer on that DLA. Without GPU fallback a network the DLA cannot run wholly
  gets no DLA copy (excluded, with the first refused layer and its reason). With GPU fallback
  (TensorRT's ``allowGPUFallback``), the layers the DLA core refuses run on the GPU inside the DLA
  copy's engine: per image the copy spends ``D`` ms on its DLA core, ``G`` ms of work on the GPU (its
  fallback layers and the reformat kernels of the GPU<->DLA hand-offs between its partitions, each
  tensor moved once per destination device, priced by the platform's transition model) and ``L``
  ms of fixed hand-off latency, one image after another.
* Sharing the GPU (processor sharing): the GPU serves every client with GPU work at once, each at
  an equal share. The GPU copy always has work; a fallback copy has GPU work a fraction
  ``p = s G / (D + s G + L)`` of its time, where ``s`` is the slowdown of its GPU work = 1 + the
  GPU copy (if running) + the mean number of other fallback copies in their GPU phase (``p`` of
  each, solved by fixed-point iteration). A fallback copy then runs ``1 / (D + s G + L)`` images
  per ms and the GPU copy gets the GPU time left: ``(1 - sum of fallback copies' rate x G) /
  T_gpu`` (the GPU stays busy, work is conserved). Of a hand-off, the reformat kernel (the
  transition model's per-byte part) is GPU work in ``G``; its fixed part (launch, DLA submission,
  completion event) is latency ``L`` that occupies neither device [stated assumption].
* DRAM contention, the platforms' stated rule (``scheduler.platforms.model``): the copies demand
  ``rate_d x bytes_d`` together; when that sums above the effective bandwidth (``dram_gbps x
  bandwidth_efficiency``) every copy progresses at ``bandwidth / sum(demand)`` of its speed.
* Throughput = sum over copies of their image rates. Power = every rail's static power + each copy's
  dynamic energy per image (DLA layers, fallback GPU layers and hand-offs) x its image rate. Perf per
  watt = throughput / power.

Every combination of copies is reported (GPU alone, GPU + DLA0, GPU + both DLAs, the DLAs alone), so
a user sees whether adding the DLAs helps or hurts the GPU's throughput and the board's efficiency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

from ..cost import CostModel
from ..costgraph import GPU, CostGraph


@dataclass(frozen=True)
class Copy:
    device: str
    alone_ms: float  # one image, copy alone on the board (DLA part + fallback GPU part + hand-offs)
    energy_mj: float  # dynamic energy per image
    demand_gbps: float  # DRAM bandwidth it would draw alone
    gpu_ms: float = 0.0  # GPU work per image of a DLA copy: fallback layers + reformat kernels (0: none)
    wait_ms: float = 0.0  # fixed hand-off latency per image (launch, submission, events): no device busy
    handoff_ms: float = 0.0
    handoff_mj: float = 0.0
    fallback_layers: tuple[str, ...] = ()
    transitions: int = 0
    dram_gb: float = 0.0  # DRAM traffic per image
    layer_devices: dict[str, str] = field(default_factory=dict)  # layer -> device it runs on in this copy

    @property
    def device_ms(self) -> float:
        """Time per image on the copy's own device (its DLA core; the GPU for the GPU copy)."""
        return self.alone_ms - self.gpu_ms - self.wait_ms


@dataclass(frozen=True)
class ReplicateRow:
    devices: tuple[str, ...]
    slowdown: float  # DRAM contention
    throughput_fps: float
    power_w: float
    per_device_fps: dict[str, float]
    gpu_slowdown: dict[str, float] = field(default_factory=dict)  # fallback copy -> slowdown of its GPU work
    gpu_busy: float = 0.0  # fraction of GPU time used (before DRAM contention)

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
    fallback: bool = False


def _copy(model: CostModel, device: str, fallback: bool) -> Copy | str:
    g = model.graph.without_pseudo()
    placed: list[str] = []
    for n in g.nodes:
        if n.supports(device):
            placed.append(device)
        elif fallback and n.supports(GPU):
            placed.append(GPU)
        else:
            why = n.why_not(device)
            return (f"layer '{n.name}': {why}" if device == GPU or fallback else
                    f"no GPU fallback: layer '{n.name}' cannot run on {device} ({why}); "
                    "--allow-gpu-fallback runs such layers on the GPU")
    t = gpu = e = moved = 0.0
    for n, d in zip(g.nodes, placed):
        t += n.time[d]
        e += n.energy[d]
        gpu += n.time[d] if d != device else 0.0
        moved += n.dram_share.get(d, 0.0) * model.mode.dram_gbps * n.time[d] / 1e3  # GB
    ht, hfix, he, hops = _handoffs(g, placed)
    t, e = t + ht, e + he
    gpu = gpu + ht - hfix if device != GPU else 0.0
    return Copy(device, t, e, moved / (t / 1e3) if t else 0.0, gpu, hfix, ht, he,
                tuple(n.name for n, d in zip(g.nodes, placed) if d != device), hops, moved,
                {n.name: d for n, d in zip(g.nodes, placed)})


def _handoffs(g: CostGraph, placed: list[str]) -> tuple[float, float, float, int]:
    """Time (ms), its fixed part (ms), energy (mJ) and count of the hand-offs: each tensor once per
    other device reading it. The fixed part is the transition table's per-link constant (all of the
    time when the graph's transition model has no table)."""
    t = fixed = e = 0.0
    hops = 0
    link = getattr(g.transition, "link", None)
    for ten in g.tensors:
        src = placed[g.index[ten.producer]]
        for dst in {placed[g.index[c]] for c in ten.consumers} - {src}:
            dt, de = g.tensor_transfer(ten, src, dst)
            cost = link(src, dst) if link is not None else None
            fixed += min(dt, cost.time_fixed) if cost is not None else dt
            t, e, hops = t + dt, e + de, hops + 1
    return t, fixed, e, hops


def _chain(c: Copy, s: float) -> float:
    """ms per image of a DLA copy whose GPU work runs ``s`` times slower than alone."""
    return c.device_ms + s * c.gpu_ms + c.wait_ms


def _rates(combo: tuple[str, ...], copies: dict[str, Copy]) -> tuple[dict[str, float], dict[str, float]]:
    """Images per ms of each copy sharing the GPU (processor sharing, see module doc), and the slowdown
    of each fallback copy's GPU work."""
    gpu_copy = GPU in combo
    fb = [d for d in combo if d != GPU and copies[d].gpu_ms > 0]
    p = dict.fromkeys(fb, 0.0)
    s: dict[str, float] = {}
    for _ in range(200):
        s = {d: 1.0 + gpu_copy + sum(p[o] for o in fb if o != d) for d in fb}
        new = {d: s[d] * copies[d].gpu_ms / _chain(copies[d], s[d]) for d in fb}
        done = all(abs(new[d] - p[d]) < 1e-12 for d in fb)
        p = new
        if done:
            break
    rate = {d: 1.0 / _chain(copies[d], s.get(d, 1.0)) for d in combo if d != GPU}
    if gpu_copy:
        rate[GPU] = (1.0 - sum(rate[d] * copies[d].gpu_ms for d in fb)) / copies[GPU].alone_ms
    return {d: rate[d] for d in combo}, s


def replicate_report(model: CostModel, fallback: bool = False) -> ReplicateReport:
    """Every combination of whole-network copies; ``fallback``: DLA copies run refused layers on the GPU."""
    devices = [d for d in ("gpu", "dla0", "dla1") if d == GPU or d in model.graph.static_power_w]
    copies: dict[str, Copy] = {}
    refused: dict[str, str] = {}
    for d in devices:
        c = _copy(model, d, fallback)
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
            rate, s_gpu = _rates(combo, copies)
            demand = sum(rate[d] * 1e3 * copies[d].dram_gb for d in combo)  # GB/s
            s = max(1.0, demand / bw)
            fps = {d: rate[d] * 1e3 / s for d in combo}
            dyn = sum(copies[d].energy_mj / 1e3 * fps[d] for d in combo)
            busy = sum(rate[d] * (copies[d].alone_ms if d == GPU else copies[d].gpu_ms) for d in combo)
            rows.append(ReplicateRow(combo, s, sum(fps.values()), static + dyn, fps, s_gpu, busy))
    return ReplicateReport(model, copies, refused, tuple(rows), bw, fallback)


def format_replicate(r: ReplicateReport) -> str:
    m = r.model
    fb = "on (refused layers run on the GPU, sharing it)" if r.fallback else "off"
    lines = [f"hetrt place --policy replicate: '{m.graph.name}' on {m.platform.name} at {m.mode.name}, "
             f"{m.precision.value}: whole images on each device at once (MLPerf-style), simulated target clock",
             f"  DRAM: effective {r.bandwidth_gbps:.1f} GB/s shared; demands above it slow every device alike",
             f"  GPU fallback: {fb}",
             f"  {'copy':<6} {'alone ms/img':>12} {'img/s':>8} {'dyn mJ/img':>10} {'DRAM GB/s':>9} "
             f"{'GPU work ms':>11} {'hand-offs':>9} {'wait ms':>7} {'fallback layers':>15}"]
    for d, c in r.copies.items():
        gpu = f"{c.gpu_ms:11.3f}" if d != GPU else f"{'-':>11}"
        lines.append(f"  {d:<6} {c.alone_ms:12.3f} {1e3 / c.alone_ms:8.0f} {c.energy_mj:10.3f} {c.demand_gbps:9.1f} "
                     f"{gpu} {c.transitions:9d} {c.wait_ms:7.3f} {len(c.fallback_layers) if d != GPU else 0:15d}")
    for d, why in r.refused.items():
        lines.append(f"  {d:<6} excluded, no whole-network copy: {why}")
    lines += ["", f"  {'devices':<16} {'img/s':>8} {'DRAM x':>8} {'GPU busy':>8} {'power W':>8} {'img/s/W':>8}  "
                  "per copy img/s"]
    for row in r.rows:
        per = ", ".join(f"{d} {v:.0f}" for d, v in row.per_device_fps.items())
        lines.append(f"  {'+'.join(row.devices):<16} {row.throughput_fps:8.0f} {row.slowdown:8.3f} "
                     f"{100 * row.gpu_busy:7.1f}% {row.power_w:8.2f} {row.fps_per_w:8.1f}  {per}")
    if not r.rows:
        lines.append("  no device can run a whole copy")
        return "\n".join(lines)
    best = max(r.rows, key=lambda x: x.throughput_fps)
    lines.append(f"  highest throughput: {'+'.join(best.devices)}; best img/s/W: "
                 f"{'+'.join(max(r.rows, key=lambda x: x.fps_per_w).devices)}")
    return "\n".join(lines)


def _layers_json(r: ReplicateReport) -> list[dict]:
    """Per layer: where it runs in each copy, its time and energy there, and why."""
    from .place_json import host_fields

    g = r.model.graph
    out = []
    for row in r.model.layers:
        node = g.nodes[g.index[row.name]]
        per = {}
        for d, c in r.copies.items():
            dev = c.layer_devices[row.name]
            why = (f"whole image on {d}" if dev == d else
                   f"GPU fallback of the {d} copy ({d}: {node.why_not(d)})")
            per[d] = {"device": row.device_label if dev == GPU else dev, "time_us": node.time[dev] * 1e3,
                      "energy_uj": node.energy[dev] * 1e3, "reason": why}
        out.append({"name": row.name, "kind": row.kind, "copies": per, **host_fields(row)})
    return out


def replicate_json(r: ReplicateReport) -> dict:
    from .place_json import device_totals, header

    return {**header(r.model, "replicate"), "bandwidth_gbps": r.bandwidth_gbps, "gpu_fallback": r.fallback,
            "layers": _layers_json(r),
            "copies": {d: {"alone_ms": c.alone_ms, "alone_us": c.alone_ms * 1e3, "energy_mj": c.energy_mj,
                           "energy_uj": c.energy_mj * 1e3, "demand_gbps": c.demand_gbps,
                           "device_us": c.device_ms * 1e3, "gpu_us": c.gpu_ms * 1e3, "wait_us": c.wait_ms * 1e3,
                           "handoff_us": c.handoff_ms * 1e3, "handoff_energy_uj": c.handoff_mj * 1e3,
                           "transitions": c.transitions, "fallback_layers": list(c.fallback_layers),
                           "dram_gb_per_image": c.dram_gb}
                       for d, c in r.copies.items()},
            "refused": dict(r.refused),
            "rows": [{"devices": list(x.devices), "throughput_fps": x.throughput_fps, "slowdown": x.slowdown,
                      "gpu_busy": x.gpu_busy, "gpu_slowdown": dict(x.gpu_slowdown),
                      "power_w": x.power_w, "fps_per_w": x.fps_per_w, "per_device_fps": x.per_device_fps}
                     for x in r.rows],
            "devices": device_totals(r.model.graph)}


__all__ = ["Copy", "ReplicateReport", "ReplicateRow", "format_replicate", "replicate_json", "replicate_report"]
