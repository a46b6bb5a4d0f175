"""The cost model: IR network + platform + power mode + precision -> the placement ``CostGraph``.

Per layer (after the optimizer's fusions, so a node is a fused group: conv+bias+act+residual):

* GPU time/energy: the platform's roofline (``scheduler.gpu_model``), or, on ``host``, measured on
  this machine (``scheduler.host_measure``) with the host's stated power.
* DLA time/energy: ``DlaBackend.layer_costs`` on dla_sim at the mode's DLA clock and DRAM bandwidth
  (``scheduler.dla_source``) -- the layer in its context (fusion, CBUF fit); or the ``supports``
  reason, which the report repeats so a user can act on it. FP32 never runs on the DLA.
* Tensors: hyperedges with the bytes of the tensor in the DLA's native format (channels padded to
  16 for FP16, 32 for INT8: kCHW16/kCHW32) as ``nbytes``; hand-offs are priced per tensor
  (``TensorTransitions``): the reformat reads one side's layout and writes the other's, so the
  GPU side counts the linear size and the DLA side the padded one.
* Network inputs and outputs live in linear buffers the GPU owns; pseudo nodes ``<in:NAME>`` and
  ``<out:NAME>`` (zero cost, GPU only) make a DLA layer that reads an input or writes an output pay
  its reformat like any other hand-off. Reports drop the pseudo nodes.
* Transitions: ``TransitionTable`` with, per direction, fixed = platform fixed cost x clock scale
  (+ one GPU graph launch when control returns to the GPU) and a reformat term = (source-layout
  bytes + destination-layout bytes) over the GPU's streaming bandwidth; energy = that traffic x
  DRAM energy + the memory-bound GPU power for the reformat's duration.
* Static power: the platform's rails (``Platform.static_power_w``: gpu, soc, each DLA core).
* Network I/O pseudo nodes are marked ``Node.pseudo``: pinned to the GPU, silent in dla-first.
* Host layers: a layer the GPU backend has no kernel for runs on the host CPU when placed on the
  GPU side; its "gpu" time is the CPU time plus the hand-offs of the tensors it exchanges with the
  GPU/DLA side (``scheduler.host_cost``: measured on ``host``, estimated from the platform's
  ``HostCpu`` on Jetson), and its row carries that breakdown (``LayerCost.host``).

INT8 costs need only shapes (calibration scales change values, not time), so INT8 placement works
before calibration; the model's ``notes`` say so.

Units: the CostGraph takes ms and mJ (its convention); everything here is computed in s and J.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from engine.ir.dtypes import Precision
from engine.ir.errors import BuildError
from engine.ir.network import Network

from .costgraph import DLA_CORES, GPU, CostGraph, LinkCost, Node, Tensor, TransitionTable, is_dla
from .dla_source import FP32_ON_DLA, BackendDlaSource, DlaCostSource
from .gpu_model import gpu_layer_cost
from .host_cost import HOST_DEVICE, HostLayerCost, host_layer_costs
from .layer_work import element_size, layer_work
from .platforms import DLA_TO_GPU, GPU_TO_DLA, Platform, PowerMode, get_platform

IN_PREFIX = "<in:"
OUT_PREFIX = "<out:"
IO_REASON = "network inputs and outputs live in linear buffers the GPU side owns"


def is_pseudo(name: str) -> bool:
    return name.startswith(IN_PREFIX) or name.startswith(OUT_PREFIX)


@dataclass(frozen=True)
class LayerCost:
    """One layer's row of the per-layer report (seconds and joules)."""

    name: str
    kind: str
    macs: int
    bytes: int
    gpu_time_s: float
    gpu_energy_j: float
    gpu_bound: str
    dla_time_s: float | None
    dla_energy_j: float | None
    dla_reason: str
    host: HostLayerCost | None = None  # set when the GPU backend has no kernel: the time above is the host's

    @property
    def device_label(self) -> str:
        """What a report calls this layer's GPU-side device: ``host`` when the CPU runs it."""
        return HOST_DEVICE if self.host is not None else GPU


@dataclass(frozen=True)
class CostModel:
    platform: Platform
    mode: PowerMode
    precision: Precision
    graph: CostGraph
    layers: tuple[LayerCost, ...]
    tensor_bytes: dict[str, int]
    gpu_clock: str  # where GPU numbers come from
    dla_clock: str
    build_s: float
    notes: tuple[str, ...] = field(default=())

    def layer(self, name: str) -> LayerCost:
        for row in self.layers:
            if row.name == name:
                return row
        raise KeyError(name)


def dla_format_bytes(shape: tuple[int, ...], precision: Precision) -> int:
    """Bytes of a tensor in the DLA's native layout: C padded to 16 (FP16) / 32 (INT8) elements."""
    es = element_size(precision)
    if len(shape) >= 2 and precision in (Precision.FP16, Precision.INT8):
        atom = 32 if precision is Precision.INT8 else 16
        c = -(-shape[1] // atom) * atom
        return shape[0] * c * math.prod(shape[2:]) * es
    return math.prod(shape) * es


def transition_table(platform: Platform, mode: PowerMode) -> TransitionTable:
    """The platform's hand-off model in CostGraph units (ms, mJ)."""
    bw = platform.gpu_bandwidth(mode)
    scale = platform.clock_scale(mode)
    per_byte_s = 2.0 / bw
    reformat_w = mode.gpu_active_w * platform.gpu.memory_bound_power_fraction
    per_byte_j = 2.0 * platform.dram_pj_per_byte * 1e-12 + reformat_w * per_byte_s
    fixed = platform.transition.fixed_s
    to_dla = LinkCost(fixed[GPU_TO_DLA] * scale * 1e3, per_byte_s * 1e3, 0.0, per_byte_j * 1e3)
    to_gpu = LinkCost((fixed[DLA_TO_GPU] * scale + platform.gpu.graph_launch_s) * 1e3, per_byte_s * 1e3, 0.0,
                      per_byte_j * 1e3)
    return TransitionTable(gpu_to_dla=to_dla, dla_to_gpu=to_gpu)


def transition_cost_s(platform: Platform, mode: PowerMode, nbytes: int, src: str, dst: str) -> tuple[float, float]:
    """(seconds, joules) of one hand-off of ``nbytes`` (DLA-format bytes)."""
    t, e = transition_table(platform, mode)(nbytes, src, dst)
    return t / 1e3, e / 1e3


@dataclass(frozen=True)
class TensorTransitions:
    """Per-tensor hand-off prices: the reformat reads the source layout and writes the destination's.

    A GPU-side tensor is linear (``linear_bytes``); a DLA-side one is channel-padded
    (``dla_bytes``, kCHW16/kCHW32). Reformat traffic is the sum of the two sides' sizes, so a
    tensor whose channels are not a multiple of the DLA atom is not over-counted on its GPU side.
    DLA -> DLA has no direct path: it is a write-out to the GPU layout plus a read-in (both sides
    padded, plus the linear copy twice). Units: ms and mJ (the CostGraph's)."""

    table: TransitionTable
    linear_bytes: Mapping[str, int]
    dla_bytes: Mapping[str, int]

    def _side(self, tensor: Tensor, device: str) -> int:
        sizes = self.dla_bytes if is_dla(device) else self.linear_bytes
        return sizes.get(tensor.name, tensor.nbytes)

    def __call__(self, tensor: Tensor, src: str, dst: str) -> tuple[float, float]:
        if src == dst:
            return 0.0, 0.0
        if is_dla(src) and is_dla(dst):
            a = self(tensor, src, GPU)
            b = self(tensor, GPU, dst)
            return a[0] + b[0], a[1] + b[1]
        link = self.table.link(src, dst)
        traffic = (self._side(tensor, src) + self._side(tensor, dst)) / 2.0  # the table prices 2 bytes per byte
        return (link.time_fixed + link.time_per_byte * traffic, link.energy_fixed + link.energy_per_byte * traffic)


def default_host_layers(network: Network, platform: Platform, precision: Precision) -> dict[str, str]:
    """Layer -> why the GPU backend cannot run it, where such layers run on a host CPU: on a Jetson
    target (it has the GPU) and on ``host`` when the GPU backend runs here; without one every
    ``host`` layer already runs on the reference backend, so nothing crosses."""
    if platform.cpu is None:
        return {}
    if platform.measured_gpu:
        from .host_measure import gpu_ok

        if not gpu_ok():
            return {}
    from .host_cost import gpu_refusals

    return gpu_refusals(network, precision)


@dataclass
class _Sources:
    """Where one build of the cost model gets its per-layer answers."""

    platform: Platform
    mode: PowerMode
    precision: Precision
    dla: DlaCostSource | None
    dla_costs: dict[str, tuple[float, float]]
    measured: dict[str, float]
    host: dict[str, HostLayerCost]


def _layer_node(network: Network, layer, src: _Sources) -> tuple[Node, LayerCost]:
    platform, mode, precision = src.platform, src.mode, src.precision
    work = layer_work(layer, network, precision if layer.precision is not Precision.FP32 else layer.precision)
    host = src.host.get(layer.name)
    if host is not None:  # no GPU kernel: the CPU runs it, its tensors cross (scheduler.host_cost)
        gt, ge, bound, body = host.total_s, host.energy_j, "host", host.total_s
    elif platform.measured_gpu:
        gt = body = src.measured[layer.name]
        ge = gt * mode.gpu_active_w + work.bytes * platform.dram_pj_per_byte * 1e-12
        bound = "measured"
    else:
        gc = gpu_layer_cost(work, platform, mode, precision)
        gt, ge, bound, body = gc.time_s, gc.energy_j, gc.bound, max(gc.compute_s, gc.memory_s)
    time_ms: dict[str, float | None] = {GPU: gt * 1e3}
    energy_mj: dict[str, float | None] = {GPU: ge * 1e3}
    reason: dict[str, str] = {}
    share = {GPU: min(1.0, work.bytes / max(body, 1e-12) / (mode.dram_gbps * 1e9))}
    dt = de = None
    if src.dla is None:
        why = FP32_ON_DLA if precision is Precision.FP32 else f"platform {platform.name} has no DLA"
    else:
        ok, why = src.dla.supports(layer, network, precision)
        if ok and layer.name in src.dla_costs:
            dt, de = src.dla_costs[layer.name]
        else:
            why = why or "the DLA backend gave no cost for this layer"
    cores = DLA_CORES[:platform.dla_cores]
    for c in DLA_CORES:
        if c in cores and dt is not None:
            time_ms[c], energy_mj[c] = dt * 1e3, de * 1e3
            share[c] = min(1.0, work.bytes / max(dt, 1e-12) / (mode.dram_gbps * 1e9))
        else:
            time_ms[c], energy_mj[c] = None, None
            reason[c] = why or f"platform {platform.name} has {platform.dla_cores} DLA cores"
    row = LayerCost(layer.name, layer.kind.value, work.macs, work.bytes, gt, ge, bound, dt, de,
                    "" if dt is not None else why, host)
    return Node(layer.name, time_ms, energy_mj, reason, share), row


def _tensor_edges(network: Network, precision: Precision) -> tuple[list[Tensor], dict[str, int], dict[str, int]]:
    """Hyperedges (pseudo I/O nodes included), their DLA-format bytes and their linear bytes."""
    consumers: dict[str, list[str]] = {}
    for layer in network.layers:
        for t in layer.inputs:
            consumers.setdefault(t, []).append(layer.name)
    for name in network.outputs:
        consumers.setdefault(name, []).append(f"{OUT_PREFIX}{name}>")
    producers = {t: layer.name for layer in network.layers for t in layer.outputs}
    producers.update({n: f"{IN_PREFIX}{n}>" for n in network.inputs})
    tensors: list[Tensor] = []
    tensor_bytes: dict[str, int] = {}
    linear_bytes: dict[str, int] = {}
    for tname, cons in consumers.items():
        if tname not in producers:
            continue  # constants folded into weights
        shape = network.tensors[tname].shape
        nbytes = dla_format_bytes(shape, precision)
        tensor_bytes[tname] = nbytes
        linear_bytes[tname] = math.prod(shape) * element_size(precision)
        tensors.append(Tensor(tname, producers[tname], tuple(cons), nbytes))
    return tensors, tensor_bytes, linear_bytes


def build_cost_model(network: Network, platform: Platform | str, power_mode: str | None = None,
                     precision: Precision | str = Precision.FP16, *, dla: DlaCostSource | None = None,
                     gpu_times: Callable[[Network], dict[str, float]] | None = None,
                     host_layers: Mapping[str, str] | None = None) -> CostModel:
    """Cost every layer of ``network`` on every device of ``platform`` at ``power_mode``.

    ``dla``: where DLA answers come from (default: the DLA backend on dla_sim). ``gpu_times``: a
    measurement function for the host (default: ``scheduler.host_measure.measure_layers``).
    ``host_layers``: layer -> why the GPU backend cannot run it (default ``default_host_layers``);
    those are priced as host CPU layers with their hand-offs (``scheduler.host_cost``)."""
    t0 = time.perf_counter()
    if isinstance(platform, str):
        platform = get_platform(platform)
    mode = platform.mode(power_mode)
    precision = Precision(precision)
    notes: list[str] = []
    use_dla = precision is not Precision.FP32 and platform.dla_cores > 0
    if use_dla and dla is None:
        dla = BackendDlaSource(platform, mode)
    dla_costs = dla.layer_costs(network, precision, 0) if use_dla else {}
    if precision is Precision.INT8:
        notes.append("INT8 costs depend on shapes only (calibration scales change values, not time)")
    measured: dict[str, float] = {}
    if platform.measured_gpu:
        from .host_measure import measure_layers, measured_backend

        measured = (gpu_times or measure_layers)(network)
        gpu_clock = f"measured on this machine ({measured_backend()})"
    else:
        gpu_clock = f"modelled {platform.gpu.name} roofline at {mode.gpu_clock_mhz:g} MHz"
    if host_layers is None:
        host_layers = default_host_layers(network, platform, precision)
    host = host_layer_costs(network, platform, mode, precision, host_layers, measured or None)
    if host:
        notes.append(f"{len(host)} layer(s) have no GPU kernel: priced on the host CPU ({platform.cpu.name}, "
                     f"{'measured' if platform.cpu.measured else 'estimated'}) plus {platform.cpu.link} hand-offs")
    dla_clock = (f"simulated ({dla.name}, {mode.dla_clock_mhz:g} MHz)" if use_dla else "none")
    src = _Sources(platform, mode, precision, dla if use_dla else None, dla_costs, measured, host)
    io_node = {GPU: 0.0}
    nodes = [Node(f"{IN_PREFIX}{name}>", io_node, io_node, {c: IO_REASON for c in DLA_CORES}, pseudo=True)
             for name in network.inputs]
    rows: list[LayerCost] = []
    for layer in network.layers:
        node, row = _layer_node(network, layer, src)
        nodes.append(node)
        rows.append(row)
    nodes += [Node(f"{OUT_PREFIX}{name}>", io_node, io_node, {c: IO_REASON for c in DLA_CORES}, pseudo=True)
              for name in network.outputs]
    tensors, tensor_bytes, linear_bytes = _tensor_edges(network, precision)
    if any(not n.allowed for n in nodes):
        bad = next(n for n in nodes if not n.allowed)
        raise BuildError(f"layer '{bad.name}' can run on no device of {platform.name}")
    table = transition_table(platform, mode)
    graph = CostGraph(nodes, tensors, table, platform.static_power_w(mode), name=network.name,
                      tensor_transition=TensorTransitions(table, linear_bytes, tensor_bytes))
    return CostModel(platform, mode, precision, graph, tuple(rows), tensor_bytes, gpu_clock, dla_clock,
                     time.perf_counter() - t0, tuple(notes))
