"""The price of a host-placed layer: CPU time plus the hand-offs of the tensors it exchanges.

A layer the GPU backend has no kernel for runs on the host CPU (the reference backend; the builder
cuts it out of its GPU partition, ``engine.host_partitions``). The cost model prices such a layer,
on the device the placement gives it ("gpu" in the ``CostGraph``, shown as ``host``), as:

* CPU time: on the ``host`` platform the reference backend's time measured on this machine
  (``scheduler.host_measure``); on a Jetson target an estimate from the platform's ``HostCpu``:
  ``max((2 x MACs + elementwise ops) / sustained FLOP/s, bytes / CPU bandwidth)``, with the
  layer's work counted at FP32 (the reference backend computes in FP32, ``scheduler.layer_work``).
* Hand-offs: every tensor that crosses between the CPU and the GPU/DLA side -- an input not
  produced by another host layer (network inputs included: the GPU side owns the bindings), an
  output read by a non-host layer or bound as a network output -- costs
  ``sync_s + copies x bytes / link bandwidth``: on Jetson a cache flush + copy in the shared DRAM
  (read + write at the power mode's DRAM bandwidth), on a discrete GPU one copy over PCIe. Tensor
  bytes are the linear size at the build precision (what the GPU side stores).
* Energy: CPU time x the cluster's active power + the hand-off traffic and the layer's bytes at
  the platform's DRAM energy per byte.

Which layers are host layers: those the GPU backend's ``supports`` refuses, asked as the builder
asks it, with unpinned layers at the precision being costed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from engine.ir.dtypes import Precision
from engine.ir.layers import SHAPE_ONLY
from engine.ir.network import Network

from .layer_work import element_size, layer_work
from .platforms import Platform, PowerMode

HOST_DEVICE = "host"


@dataclass(frozen=True)
class HostLayerCost:
    """One host-placed layer's price (seconds, joules, bytes)."""

    name: str
    reason: str  # why the GPU backend cannot run it
    time_s: float  # on the CPU
    handoff_s: float  # all its crossing tensors, both directions
    in_bytes: int  # copied device -> host
    out_bytes: int  # copied host -> device
    handoffs: int  # crossing tensors
    energy_j: float
    measured: bool

    @property
    def total_s(self) -> float:
        return self.time_s + self.handoff_s

    def to_dict(self) -> dict:
        """The plan's record (``placement["host_layers"]``), in ms like the rest of the placement."""
        return {"device": HOST_DEVICE, "reason": self.reason, "time_ms": self.time_s * 1e3,
                "handoff_ms": self.handoff_s * 1e3, "in_bytes": self.in_bytes, "out_bytes": self.out_bytes,
                "handoffs": self.handoffs, "energy_mj": self.energy_j * 1e3,
                "clock": "measured" if self.measured else "estimated"}


def gpu_refusals(network: Network, precision: Precision | str | None = None) -> dict[str, str]:
    """Layer -> why the GPU backend cannot run it (``GpuBackend.supports``), for every refused layer.

    Layers without a precision are asked at ``precision`` (FP16 for INT8 requests: INT8 kernels need
    calibration scales, which a study before calibration does not have)."""
    try:
        from backends.gpu.backend import GpuBackend
    except ImportError:  # pragma: no cover - the GPU backend is part of the project
        return {}
    ask = Precision(precision) if precision is not None else None
    if ask is Precision.INT8:
        ask = Precision.FP16
    backend = GpuBackend()
    unset = [la for la in network.layers if la.precision is None and la.kind not in SHAPE_ONLY]
    for la in unset:
        la.precision = ask
    try:
        return {la.name: why for la in network.layers if (why := backend.supports(la, network)) is not None}
    finally:
        for la in unset:
            la.precision = None


def link_bytes_per_s(platform: Platform, mode: PowerMode) -> float:
    cpu = platform.cpu
    return cpu.link_bytes_per_s if cpu.link_bytes_per_s is not None else mode.dram_gbps * 1e9


def handoff_s(platform: Platform, mode: PowerMode, nbytes: int) -> float:
    """Seconds of one hand-off of ``nbytes`` between the CPU and the GPU/DLA side."""
    cpu = platform.cpu
    return cpu.sync_s + cpu.copies * nbytes / link_bytes_per_s(platform, mode)


def estimated_cpu_s(network: Network, layer, platform: Platform) -> float:
    """The stated CPU model's time for one layer (Jetson targets)."""
    work = layer_work(layer, network, Precision.FP32)
    cpu = platform.cpu
    return max((2 * work.macs + work.elem_ops) / cpu.flops_per_s, work.bytes / cpu.bytes_per_s)


def _tensor_maps(network: Network) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(tensor -> producing layer, tensor -> reading layers)."""
    producer = {t: la.name for la in network.layers for t in la.outputs}
    readers: dict[str, list[str]] = {}
    for la in network.layers:
        for t in la.inputs:
            readers.setdefault(t, []).append(la.name)
    return producer, readers


def crossing_tensors(network: Network, name: str, host: set[str],
                     maps: tuple[dict[str, str], dict[str, list[str]]] | None = None) -> tuple[list[str], list[str]]:
    """(inputs copied to the host, outputs copied back) of host layer ``name``; ``maps``: the
    network's ``_tensor_maps`` when the caller has them."""
    layer = network.layer(name)
    producer, readers = maps or _tensor_maps(network)
    ins = [t for t in dict.fromkeys(layer.inputs)
           if (t in network.inputs or t in producer) and producer.get(t) not in host]
    outs = [t for t in layer.outputs
            if t in network.outputs or any(r not in host for r in readers.get(t, []))]
    return ins, outs


def host_layer_costs(network: Network, platform: Platform, mode: PowerMode, precision: Precision | str,
                     refusals: Mapping[str, str], measured: Mapping[str, float] | None = None
                     ) -> dict[str, HostLayerCost]:
    """Price every layer of ``refusals`` as a host layer. ``measured``: CPU seconds per layer on
    this machine (the ``host`` platform; measured here when not given)."""
    if not refusals or platform.cpu is None:
        return {}
    cpu = platform.cpu
    if cpu.measured and (measured is None or any(n not in measured for n in refusals)):
        from .host_measure import measure_layers_cpu

        measured = {**(measured or {}), **measure_layers_cpu(network, only=set(refusals))}
    es = element_size(precision)
    host = set(refusals)
    maps = _tensor_maps(network)
    out: dict[str, HostLayerCost] = {}
    for name, why in refusals.items():
        layer = network.layer(name)
        ins, outs = crossing_tensors(network, name, host, maps)
        nbytes = {t: math.prod(network.tensors[t].shape) * es for t in (*ins, *outs)}
        t_cpu = measured[name] if cpu.measured else estimated_cpu_s(network, layer, platform)
        t_hand = sum(handoff_s(platform, mode, nbytes[t]) for t in (*ins, *outs))
        traffic = cpu.copies * sum(nbytes.values()) + layer_work(layer, network, Precision.FP32).bytes
        energy = t_cpu * cpu.active_w + traffic * platform.dram_pj_per_byte * 1e-12
        out[name] = HostLayerCost(name, why, t_cpu, t_hand, sum(nbytes[t] for t in ins),
                                  sum(nbytes[t] for t in outs), len(ins) + len(outs), energy, cpu.measured)
    return out


def record_host_layers(network: Network, placement: dict, platform: Platform | str, power_mode: str | None,
                       precision: Precision | str, backend: str = "reference") -> dict[str, dict]:
    """Price the layers a plan's placement runs on the host (partitions of ``backend`` that carry
    ``reasons``: the builder's host partitions) and write them to ``placement["host_layers"]``.

    Returns that record: layer -> {device "host", reason, time_ms, handoff_ms, bytes, energy_mj}."""
    from .platforms import get_platform

    refusals = {name: why for rec in placement.get("partitions", [])
                if rec.get("backend") == backend for name, why in (rec.get("reasons") or {}).items()}
    if isinstance(platform, str):
        platform = get_platform(platform)
    if not refusals or platform.cpu is None:
        return {}
    mode = platform.mode(power_mode)
    costs = host_layer_costs(network, platform, mode, precision, refusals)
    placement["host_layers"] = {n: c.to_dict() for n, c in costs.items()}
    return placement["host_layers"]
