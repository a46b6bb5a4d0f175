"""Target-GPU layer time and energy: a roofline per layer plus launch overheads.

    time   = kernel_launch + max(MACs / (peak_MACs(precision) x compute_efficiency),
                                 elementwise_ops / (CUDA cores x clock x compute_efficiency),
                                 bytes / (DRAM bandwidth x bandwidth_efficiency))
    energy = gpu_active_w x t_compute + gpu_active_w x memory_bound_power_fraction x (time - t_compute)
             + bytes x dram_pj_per_byte

``t_compute`` is the larger of the two compute terms; the second energy term charges the part of
the layer spent waiting on memory at the reduced power of a memory-bound kernel. Peaks and
efficiencies come from the platform (``scheduler.platforms``), where each is sourced or marked as
an assumption. Static power is not in here: the CostGraph charges every rail's static power for
the whole inference. FP32 convolutions run on CUDA cores (``macs_per_sm_cycle['fp32']``).
Shape-only layers (reshape views) cost nothing but a launch when they are kernels at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.ir.dtypes import Precision

from .layer_work import LayerWork
from .platforms import Platform, PowerMode


@dataclass(frozen=True)
class GpuLayerCost:
    time_s: float
    energy_j: float
    compute_s: float
    memory_s: float
    bound: str  # "compute" | "memory" | "launch"


def gpu_layer_cost(work: LayerWork, platform: Platform, mode: PowerMode, precision: Precision) -> GpuLayerCost:
    g = platform.gpu
    eff = g.compute_efficiency
    mac_rate = platform.gpu_peak_macs_per_s(mode, precision) * eff
    cuda_rate = platform.gpu_peak_macs_per_s(mode, Precision.FP32) * eff  # one op per CUDA core per cycle
    t_mac = work.macs / mac_rate if work.macs else 0.0
    t_elem = work.elem_ops / cuda_rate if work.elem_ops else 0.0
    t_compute = max(t_mac, t_elem)
    t_mem = work.bytes / platform.gpu_bandwidth(mode) if work.kernels else 0.0
    launch = g.kernel_launch_s * work.kernels
    body = max(t_compute, t_mem)
    time = launch + body
    energy = (mode.gpu_active_w * t_compute + mode.gpu_active_w * g.memory_bound_power_fraction * (body - t_compute)
              + work.bytes * platform.dram_pj_per_byte * 1e-12 * (1 if work.kernels else 0))
    bound = "launch" if launch >= body else ("compute" if t_compute >= t_mem else "memory")
    return GpuLayerCost(time, energy, t_compute, t_mem, bound)
