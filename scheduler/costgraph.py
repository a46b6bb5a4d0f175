"""Framework-independent placement problem: layers, tensors, device costs, transitions, power.

The placement algorithms see only this description, never the engine IR or the DLA simulator, so
they can be tested on random graphs and fed by any cost model (profiled, simulated, analytical).

Units: time in milliseconds, energy in millijoules, power in watts (W x ms = mJ), sizes in bytes.

Devices are ``"gpu"``, ``"dla0"`` and ``"dla1"``. A node that a device cannot run has ``None``
as its time on that device and a human-readable reason ("kernel 33x33 > 32") that the placement
report repeats to the user.

Tensors are hyperedges: one producer, any number of consumers. A tensor with fan-out is moved
once per destination device, however many consumers live there (the copy in DRAM is shared), so
the transition cost belongs to the (tensor, destination device) pair, not to consumer edges.

Transfers are priced per tensor: ``CostGraph.tensor_transfer(tensor, src, dst)``. By default the
price depends only on the tensor's ``nbytes`` (a ``TransitionModel`` of bytes and direction); a
``TensorTransitionModel`` sees the whole tensor, so a cost model can charge the reading side and
the writing side of a reformat with their own layouts (a linear GPU tensor is smaller than its
channel-padded DLA form).

Energy model (stated once, used everywhere):

    energy = sum of each layer's dynamic energy on its device
           + sum of each transfer's energy
           + (sum of all rails' static power) x makespan

All rails listed in ``static_power_w`` are powered for the whole inference (no power gating of
an idle DLA), which is what a Jetson module does between nvpmodel changes. Rails are the devices
plus any extra named rail (``"soc"``: DRAM, fabric, idle CPU) that belongs to no device; the
solvers only use the sum, reports show each rail.

Pseudo nodes (``Node.pseudo``) are zero-cost bookkeeping layers, e.g. the network's inputs and
outputs, pinned to the devices that own them so that a hand-off into or out of the network is
priced like any other. Policies never log fallback messages for them and reports leave them out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

GPU = "gpu"
DLA0 = "dla0"
DLA1 = "dla1"
DEVICES: tuple[str, ...] = (GPU, DLA0, DLA1)
DLA_CORES: tuple[str, ...] = (DLA0, DLA1)
DEVICE_INDEX: Mapping[str, int] = MappingProxyType({d: i for i, d in enumerate(DEVICES)})

#: TensorRT can keep at most this many DLA loadables per core ("DLA Supported Layers and Restrictions").
TRT_MAX_LOADABLES_PER_CORE = 16


def is_dla(device: str) -> bool:
    return device in DLA_CORES


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


@dataclass(frozen=True)
class Node:
    """One layer: its time and dynamic energy on each device, and why a device cannot run it.

    ``time[d]`` is ``None`` (or inf) when device ``d`` cannot run the layer; ``reason[d]`` then says
    why. ``dram_share[d]`` is the fraction of DRAM bandwidth the layer uses while running on ``d``;
    only the concurrent-placement contention model reads it. ``pseudo`` marks a zero-cost
    bookkeeping node (see the module doc): it is pinned, silent and left out of reports.
    """

    name: str
    time: Mapping[str, float | None]
    energy: Mapping[str, float | None]
    reason: Mapping[str, str] = field(default_factory=dict)
    dram_share: Mapping[str, float] = field(default_factory=dict)
    pseudo: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "time", MappingProxyType(dict(self.time)))
        object.__setattr__(self, "energy", MappingProxyType(dict(self.energy)))
        object.__setattr__(self, "reason", MappingProxyType(dict(self.reason)))
        object.__setattr__(self, "dram_share", MappingProxyType(dict(self.dram_share)))
        for d in self.time:
            if d not in DEVICES:
                raise ValueError(f"layer {self.name!r}: unknown device {d!r} (devices are {DEVICES})")
        for d in DEVICES:
            t = self.time.get(d)
            if _finite(t):
                if t < 0:
                    raise ValueError(f"layer {self.name!r}: negative time {t} on {d}")
                e = self.energy.get(d)
                if not _finite(e) or e < 0:
                    raise ValueError(f"layer {self.name!r}: runs on {d} but has no non-negative energy there")

    def supports(self, device: str) -> bool:
        return _finite(self.time.get(device))

    def why_not(self, device: str) -> str:
        return self.reason.get(device, f"not supported on {device}")

    @property
    def allowed(self) -> tuple[str, ...]:
        return tuple(d for d in DEVICES if self.supports(d))


@dataclass(frozen=True)
class Tensor:
    """A tensor produced by one node and read by ``consumers`` (a hyperedge)."""

    name: str
    producer: str
    consumers: tuple[str, ...]
    nbytes: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "consumers", tuple(dict.fromkeys(self.consumers)))
        if self.nbytes < 0:
            raise ValueError(f"tensor {self.name!r}: negative size")


@dataclass(frozen=True)
class LinkCost:
    """Cost of one transfer on one directed device pair: ``fixed + per_byte * bytes``."""

    time_fixed: float = 0.0
    time_per_byte: float = 0.0
    energy_fixed: float = 0.0
    energy_per_byte: float = 0.0


@dataclass(frozen=True)
class TransitionTable:
    """Direction-dependent transfer costs between devices.

    ``gpu_to_dla`` and ``dla_to_gpu`` describe the two hand-off directions (reformat into/out of
    the DLA's native layout plus the DRAM round trip). DLA0 <-> DLA1 has no direct path: the tensor
    is written to DRAM by one core and read by the other, so it costs a DLA->GPU-style write-out
    plus a GPU->DLA-style read-in unless ``dla_to_dla`` is given explicitly. Moving a tensor to
    the device it is already on costs nothing.
    """

    gpu_to_dla: LinkCost = LinkCost()
    dla_to_gpu: LinkCost = LinkCost()
    dla_to_dla: LinkCost | None = None

    def link(self, src: str, dst: str) -> LinkCost | None:
        if src == dst:
            return None
        if src == GPU:
            return self.gpu_to_dla
        if dst == GPU:
            return self.dla_to_gpu
        if self.dla_to_dla is not None:
            return self.dla_to_dla
        a, b = self.dla_to_gpu, self.gpu_to_dla
        return LinkCost(
            a.time_fixed + b.time_fixed,
            a.time_per_byte + b.time_per_byte,
            a.energy_fixed + b.energy_fixed,
            a.energy_per_byte + b.energy_per_byte,
        )

    def __call__(self, nbytes: int, src: str, dst: str) -> tuple[float, float]:
        link = self.link(src, dst)
        if link is None:
            return 0.0, 0.0
        return (link.time_fixed + link.time_per_byte * nbytes, link.energy_fixed + link.energy_per_byte * nbytes)


#: (bytes, source device, destination device) -> (time ms, energy mJ); must return (0, 0) for src == dst.
TransitionModel = Callable[[int, str, str], tuple[float, float]]

#: (tensor, source device, destination device) -> (time ms, energy mJ); (0, 0) for src == dst.
TensorTransitionModel = Callable[[Tensor, str, str], tuple[float, float]]


class CostGraph:
    """The placement problem for one network.

    ``nodes`` must be listed in a topological order of the tensor graph; that order is the
    execution order of the sequential model (see ``scheduler.objectives``) and the order along
    which DLA loadables and single-cut placements are defined.
    """

    def __init__(
        self,
        nodes: Iterable[Node],
        tensors: Iterable[Tensor],
        transition: TransitionModel | None = None,
        static_power_w: Mapping[str, float] | None = None,
        name: str = "network",
        tensor_transition: TensorTransitionModel | None = None,
    ) -> None:
        self.name = name
        self.tensor_transition = tensor_transition
        self.nodes: tuple[Node, ...] = tuple(nodes)
        self.tensors: tuple[Tensor, ...] = tuple(tensors)
        self.transition: TransitionModel = transition if transition is not None else TransitionTable()
        self.static_power_w: Mapping[str, float] = MappingProxyType(dict(static_power_w or {}))
        self.index: Mapping[str, int] = MappingProxyType({n.name: i for i, n in enumerate(self.nodes)})
        if len(self.index) != len(self.nodes):
            raise ValueError("duplicate layer names")
        for d, p in self.static_power_w.items():
            if not isinstance(d, str) or not d or not p >= 0:
                raise ValueError(f"bad static power entry {d!r}: {p} (rails are named, powers >= 0 W)")
        for t in self.tensors:
            if t.producer not in self.index:
                raise ValueError(f"tensor {t.name!r}: unknown producer {t.producer!r}")
            for c in t.consumers:
                if c not in self.index:
                    raise ValueError(f"tensor {t.name!r}: unknown consumer {c!r}")
                if self.index[c] <= self.index[t.producer]:
                    raise ValueError(
                        f"tensor {t.name!r}: consumer {c!r} is not after producer {t.producer!r}; "
                        "nodes must be in topological order"
                    )
        self._transfer_cache: dict[tuple[int, str, str], tuple[float, float]] = {}
        self._tensor_cache: dict[tuple[str, str, str], tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def static_power(self) -> float:
        """Total static power (W) of all rails, paid for the whole makespan."""
        return float(sum(self.static_power_w.values()))

    @property
    def extra_rails(self) -> tuple[str, ...]:
        """Static rails that belong to no device (e.g. ``soc``), in the order given."""
        return tuple(r for r in self.static_power_w if r not in DEVICES)

    def transfer(self, nbytes: int, src: str, dst: str) -> tuple[float, float]:
        """Time and energy of moving ``nbytes`` from ``src`` to ``dst`` (cached)."""
        if src == dst:
            return 0.0, 0.0
        key = (nbytes, src, dst)
        hit = self._transfer_cache.get(key)
        if hit is None:
            t, e = self.transition(nbytes, src, dst)
            if t < 0 or e < 0:
                raise ValueError(f"negative transfer cost {src}->{dst} for {nbytes} B")
            hit = self._transfer_cache[key] = (float(t), float(e))
        return hit

    def tensor_transfer(self, tensor: Tensor, src: str, dst: str) -> tuple[float, float]:
        """Time and energy of moving ``tensor`` from ``src`` to ``dst`` (cached per tensor).

        Uses the per-tensor model when the graph has one, else the byte-count model."""
        if src == dst:
            return 0.0, 0.0
        if self.tensor_transition is None:
            return self.transfer(tensor.nbytes, src, dst)
        key = (tensor.name, src, dst)
        hit = self._tensor_cache.get(key)
        if hit is None:
            t, e = self.tensor_transition(tensor, src, dst)
            if t < 0 or e < 0:
                raise ValueError(f"negative transfer cost {src}->{dst} for tensor {tensor.name!r}")
            hit = self._tensor_cache[key] = (float(t), float(e))
        return hit

    def unplaceable(self) -> list[Node]:
        return [n for n in self.nodes if not n.allowed]

    def dla_cores_interchangeable(self) -> bool:
        """True when swapping dla0 and dla1 maps every placement to one with equal costs.

        Then a symmetry argument applies (see ``scheduler.placement.exact``). Static power is paid
        whatever runs where, so it never breaks the symmetry."""
        for n in self.nodes:
            differs = n.time.get(DLA0) != n.time.get(DLA1) or n.energy.get(DLA0) != n.energy.get(DLA1)
            if differs and (n.supports(DLA0) or n.supports(DLA1)):
                return False
        for t in self.tensors:
            tr = self.tensor_transfer
            if tr(t, GPU, DLA0) != tr(t, GPU, DLA1) or tr(t, DLA0, GPU) != tr(t, DLA1, GPU):
                return False
            if tr(t, DLA0, DLA1) != tr(t, DLA1, DLA0):
                return False
        return True

    def subgraph_devices(self, devices: Iterable[str]) -> CostGraph:
        """A copy in which only ``devices`` may run layers (others get reason 'device not used')."""
        keep = set(devices)
        nodes = []
        for n in self.nodes:
            time = {d: (n.time.get(d) if d in keep else None) for d in DEVICES}
            reason = dict(n.reason)
            for d in DEVICES:
                if d not in keep:
                    reason[d] = f"{d} is not used by this placement"
            nodes.append(Node(n.name, time, n.energy, reason, n.dram_share, n.pseudo))
        return CostGraph(nodes, self.tensors, self.transition, self.static_power_w, self.name, self.tensor_transition)

    def without_pseudo(self) -> CostGraph:
        """A copy without pseudo nodes; tensors they produced or read are dropped from them.

        For stage-based schedules (pipeline, concurrent) whose stages cover real layers only: the
        network's input is taken where the first stage runs and its output left where the last one
        ran, so hand-offs to and from the application's buffers are not part of the stage times."""
        keep = [n for n in self.nodes if not n.pseudo]
        names = {n.name for n in keep}
        tensors = []
        for t in self.tensors:
            cons = tuple(c for c in t.consumers if c in names)
            if t.producer in names and cons:
                tensors.append(Tensor(t.name, t.producer, cons, t.nbytes))
        return CostGraph(keep, tensors, self.transition, self.static_power_w, self.name, self.tensor_transition)
