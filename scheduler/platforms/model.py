"""The SoC model a platform is made of: GPU, DLA cores, shared DRAM, transitions, power rails.

Every number of a concrete platform lives in its own module (``orin``, ``xavier``, ``host``) next to
its source; this module only defines the shapes and the few formulas that turn them into times and
energies, so the formulas are stated once:

* GPU peak: ``MACs/cycle/SM x active SMs x clock`` per precision (dense tensor-core rates for
  FP16/INT8, CUDA cores for FP32). Efficiency factors (``compute_efficiency``,
  ``bandwidth_efficiency``) are assumptions, stated by each platform, never fitted to a workload.
* DRAM contention rule (stated here, applied by ``scheduler.timeline``): while several devices
  stream from DRAM at once, each gets a share of the mode's effective bandwidth proportional to its
  demand (bytes it would move per second running alone); if the demands sum to less than the
  bandwidth nobody slows down, otherwise every memory phase stretches by ``sum(demand) / bandwidth``.
* Transition (one GPU<->DLA hand-off of one tensor): ``fixed(direction) x clock scale + reformat
  traffic / reformat bandwidth``. The reformat kernel reads the source layout and writes the
  destination layout; the DLA layout pads channels to 16 (FP16) or 32 (INT8) elements (kCHW16 /
  kCHW32, the DLA's native formats).
* Power: every rail has a static power paid for the whole inference; the GPU's dynamic power at
  full utilisation is ``gpu_active_w``; a memory-bound phase draws ``memory_bound_power_fraction``
  of it; DRAM traffic costs ``dram_pj_per_byte``.
* DLA voltage/frequency scaling: the DLA's switching energy per operation is ``C x V^2``, so at a
  mode's DLA clock ``f`` with rail voltage ``V(f)`` (the platform's ``DvfsCurve``) the on-chip
  dynamic energy of a DLA operation is the published one x ``(V(f) / V_ref)^2`` and the dynamic
  power at full load ``~ f x V(f)^2``. DRAM energy (off-chip interface) and static power do not
  scale (``scheduler.dla_source.dla_config`` applies the rule).
* Host CPU (``HostCpu``): a layer the GPU backend has no kernel for runs on the host CPU (the
  reference backend). Its time is ``max(2 x MACs + elementwise ops) / sustained FLOP/s, bytes /
  CPU bandwidth)``; each tensor crossing between the CPU and the GPU/DLA side costs one hand-off,
  ``sync_s + copies x bytes / link bandwidth`` (``scheduler.host_cost`` applies it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from engine.ir.dtypes import Precision

GPU_TO_DLA = "gpu->dla"
DLA_TO_GPU = "dla->gpu"


def frozen_map(d: Mapping | None = None) -> MappingProxyType:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class GpuArch:
    """The GPU silicon, independent of the power mode."""

    name: str
    arch: str
    sms: int
    cuda_cores: int
    tensor_cores: int
    macs_per_sm_cycle: Mapping[str, int]  # precision value -> dense MACs per SM per cycle
    kernel_launch_s: float  # per kernel as a CUDA-graph node
    graph_launch_s: float  # per GPU partition (one graph launch / stream submission)
    compute_efficiency: float  # fraction of peak MACs a conv/GEMM kernel sustains
    bandwidth_efficiency: float  # fraction of DRAM bandwidth a streaming kernel sustains
    memory_bound_power_fraction: float
    sources: Mapping[str, str] = field(default_factory=frozen_map)

    def __post_init__(self) -> None:
        object.__setattr__(self, "macs_per_sm_cycle", frozen_map(self.macs_per_sm_cycle))
        object.__setattr__(self, "sources", frozen_map(self.sources))
        for name in ("compute_efficiency", "bandwidth_efficiency", "memory_bound_power_fraction"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise ValueError(f"{self.name}: {name} must be in (0, 1], got {v}")


@dataclass(frozen=True)
class DvfsCurve:
    """Rail voltage of a clock domain against its clock: linear between ``(f_lo_mhz, v_lo)`` and
    ``(f_hi_mhz, v_hi)``, flat at ``v_lo`` below ``f_lo_mhz`` (the rail's floor), and no clock above
    ``f_hi_mhz`` (the domain's maximum). ``v_hi`` is the voltage the published energy figures hold."""

    f_lo_mhz: float
    v_lo: float
    f_hi_mhz: float
    v_hi: float
    sources: Mapping[str, str] = field(default_factory=frozen_map)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", frozen_map(self.sources))
        if not (0 < self.f_lo_mhz < self.f_hi_mhz and 0 < self.v_lo <= self.v_hi):
            raise ValueError(f"DVFS curve needs 0 < f_lo < f_hi and 0 < v_lo <= v_hi, got {self}")

    def volts(self, f_mhz: float) -> float:
        if not 0 < f_mhz <= self.f_hi_mhz * (1 + 1e-9):
            raise ValueError(f"clock {f_mhz} MHz outside the DVFS curve (0, {self.f_hi_mhz}] MHz")
        if f_mhz <= self.f_lo_mhz:
            return self.v_lo
        return self.v_lo + (self.v_hi - self.v_lo) * (f_mhz - self.f_lo_mhz) / (self.f_hi_mhz - self.f_lo_mhz)

    def energy_scale(self, f_mhz: float) -> float:
        """Switching energy per operation at ``f_mhz`` relative to the curve's top: (V(f) / v_hi)^2."""
        return (self.volts(f_mhz) / self.v_hi) ** 2


@dataclass(frozen=True)
class PowerMode:
    """One nvpmodel mode: clocks, active GPU SMs, DRAM bandwidth, rail powers."""

    name: str
    gpu_clock_mhz: float
    gpu_active_sms: int
    dla_clock_mhz: float
    dram_gbps: float
    gpu_active_w: float  # GPU dynamic power at full utilisation
    gpu_static_w: float
    dla_static_w: float  # per DLA core (powered for the whole inference)
    soc_static_w: float  # DRAM + SoC fabric + CPU idle, paid for the whole inference
    sources: Mapping[str, str] = field(default_factory=frozen_map)
    dla_vdd: float = 0.0  # DLA rail voltage at dla_clock_mhz (the platform's DvfsCurve); 0: no DLA
    dla_energy_scale: float = 1.0  # (dla_vdd / DVFS v_hi)^2: on-chip DLA energy per op vs the published figure

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", frozen_map(self.sources))


@dataclass(frozen=True)
class TransitionSpec:
    """GPU<->DLA hand-off: fixed overheads by direction (at the reference clock) + reformat."""

    fixed_s: Mapping[str, float]  # direction -> seconds at the reference GPU clock
    reference_gpu_clock_mhz: float
    sources: Mapping[str, str] = field(default_factory=frozen_map)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fixed_s", frozen_map(self.fixed_s))
        object.__setattr__(self, "sources", frozen_map(self.sources))


@dataclass(frozen=True)
class HostCpu:
    """The CPU that runs host-placed layers, and the link their tensors cross to reach it.

    ``flops_per_s``: sustained FP32 FLOP/s of the reference backend on all cores (peak x stated
    efficiency); ``bytes_per_s``: the DRAM bandwidth the CPU sustains. ``link``: ``"shared DRAM"``
    (Jetson: a hand-off is a cache flush + copy in the one DRAM, ``copies`` = 2: read and write,
    at ``link_bytes_per_s``, None = the power mode's DRAM bandwidth) or ``"PCIe"`` (a discrete
    GPU: one copy over the bus). ``sync_s``: the fixed cost of one hand-off (stream synchronise /
    event + cache maintenance). ``active_w``: the cluster's dynamic power while it computes."""

    name: str
    cores: int
    flops_per_s: float
    bytes_per_s: float
    link: str
    link_bytes_per_s: float | None
    copies: int
    sync_s: float
    active_w: float
    measured: bool = False  # True: layer times are measured on this machine (the ``host`` platform)
    sources: Mapping[str, str] = field(default_factory=frozen_map)


@dataclass(frozen=True)
class Platform:
    """A Jetson-class SoC (or the host): GPU, DLA cores, DRAM, transitions and power modes."""

    name: str
    description: str
    gpu: GpuArch
    dla_config: str  # dla_sim configuration name ("" when the platform has no DLA)
    dla_cores: int
    dla_version: int  # 1 = Xavier (nvdlav1), 2 = Orin
    dram_pj_per_byte: float
    transition: TransitionSpec
    modes: Mapping[str, PowerMode]
    default_mode: str
    measured_gpu: bool = False  # True: GPU layer times are measured on this machine, not modelled
    sources: Mapping[str, str] = field(default_factory=frozen_map)
    dla_dvfs: DvfsCurve | None = None  # DLA rail voltage against the DLA clock
    cpu: HostCpu | None = None  # where layers without a GPU kernel run (None: nowhere modelled)

    def __post_init__(self) -> None:
        object.__setattr__(self, "modes", frozen_map(self.modes))
        object.__setattr__(self, "sources", frozen_map(self.sources))

    def mode(self, name: str | None = None) -> PowerMode:
        from engine.ir.errors import BuildError

        key = self.default_mode if name is None else _canon_mode(name, self.modes)
        if key not in self.modes:
            raise BuildError(f"platform '{self.name}' has no power mode '{name}'; its modes: "
                             f"{', '.join(self.modes)}")
        return self.modes[key]

    # ------------------------------------------------------------------ derived numbers

    def gpu_peak_macs_per_s(self, mode: PowerMode, precision: Precision) -> float:
        per_sm = self.gpu.macs_per_sm_cycle[Precision(precision).value]
        return per_sm * mode.gpu_active_sms * mode.gpu_clock_mhz * 1e6

    def gpu_peak_tops(self, mode: PowerMode, precision: Precision) -> float:
        """Dense peak in tera-operations per second (one MAC = two operations)."""
        return 2 * self.gpu_peak_macs_per_s(mode, precision) / 1e12

    def gpu_bandwidth(self, mode: PowerMode) -> float:
        """Bytes per second a streaming GPU kernel sustains in this mode."""
        return mode.dram_gbps * 1e9 * self.gpu.bandwidth_efficiency

    def clock_scale(self, mode: PowerMode) -> float:
        """Fixed overheads (launch, submission) scale with the inverse GPU clock [U]."""
        return self.transition.reference_gpu_clock_mhz / mode.gpu_clock_mhz

    def static_power_w(self, mode: PowerMode) -> dict[str, float]:
        """Static power by rail: the CostGraph device keys plus ``soc`` (DRAM, fabric, idle CPU),
        which has no device of its own; every rail is paid for the whole inference."""
        out = {"gpu": mode.gpu_static_w, "soc": mode.soc_static_w}
        for k in range(self.dla_cores):
            out[f"dla{k}"] = mode.dla_static_w
        return out

    def to_dict(self) -> dict:
        def gpu() -> dict:
            g = self.gpu
            return {"name": g.name, "arch": g.arch, "sms": g.sms, "cuda_cores": g.cuda_cores,
                    "tensor_cores": g.tensor_cores, "macs_per_sm_cycle": dict(g.macs_per_sm_cycle),
                    "kernel_launch_s": g.kernel_launch_s, "graph_launch_s": g.graph_launch_s,
                    "compute_efficiency": g.compute_efficiency, "bandwidth_efficiency": g.bandwidth_efficiency,
                    "memory_bound_power_fraction": g.memory_bound_power_fraction, "sources": dict(g.sources)}

        return {
            "name": self.name, "description": self.description, "gpu": gpu(), "dla_config": self.dla_config,
            "dla_cores": self.dla_cores, "dla_version": self.dla_version, "dram_pj_per_byte": self.dram_pj_per_byte,
            "transition": {"fixed_s": dict(self.transition.fixed_s),
                           "reference_gpu_clock_mhz": self.transition.reference_gpu_clock_mhz,
                           "sources": dict(self.transition.sources)},
            "modes": {n: {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in m.__dict__.items()}
                      for n, m in self.modes.items()},
            "default_mode": self.default_mode, "measured_gpu": self.measured_gpu, "sources": dict(self.sources),
            "dla_dvfs": None if self.dla_dvfs is None else {
                k: (dict(v) if isinstance(v, Mapping) else v) for k, v in self.dla_dvfs.__dict__.items()},
            "cpu": None if self.cpu is None else {k: (dict(v) if isinstance(v, Mapping) else v)
                                                  for k, v in self.cpu.__dict__.items()},
        }


def _canon_mode(name: str, modes: Mapping[str, PowerMode]) -> str:
    """'30w', '30W', 'maxn' and 'MAXN' name the same mode."""
    for key in modes:
        if key.lower() == str(name).strip().lower():
            return key
    return str(name)
