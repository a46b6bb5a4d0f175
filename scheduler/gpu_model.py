"""Target-GPU layer time and energy: a roofline per layer class plus launch overheads.

Efficiency by layer class (``layer_class``), each from the GPU's published geometry:

* tensor-core GEMM (dense and grouped convolution, FC, MatMul): peak tensor-core MACs x
  ``compute_efficiency`` x the tile/wave utilisation of CTA tiles over the active SMs
  (``tile_utilisation``) -- large-batch layers run near the efficiency, small ones below;
* CUDA-core (depthwise: reduction depth below 16, FP32): CUDA cores x MACs per core per cycle
  (dp4a 4 INT8, HFMA2 2 FP16, FFMA 1) x ``compute_efficiency``;
* elementwise: CUDA cores, usually bandwidth bound.

    time   = kernel_launch + max(MACs / class rate,
                                 elementwise_ops / (CUDA cores x clock x compute_efficiency),
                                 bytes / (DRAM bandwidth x bandwidth_efficiency))
    energy = gpu_active_w x t_compute + gpu_active_w x memory_bound_power_fraction x (time - t_compute)
             + bytes x dram_pj_per_byte

with ``t_busy`` (``busy_mac_s``) in place of ``t_compute`` in the energy: the layer's work at its
class's sustained rate on every active SM, tile/wave losses excluded. ``gpu_active_w`` is a full-load
(stress) power, all SMs busy; the time the layer holds beyond ``t_busy`` -- memory waits and SMs idled
by tile or wave quantization -- is charged at the reduced power of a memory-bound kernel. Peaks and
efficiencies come from the platform (``scheduler.platforms``), where each is sourced or marked as
an assumption. Static power is not in here: the CostGraph charges every rail's static power for
the whole inference. FP32 convolutions run on CUDA cores (``macs_per_sm_cycle['fp32']``).
Shape-only layers (reshape views) cost nothing but a launch when they are kernels at all.
"""

from __future__ import annotations

import math
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
    layer_class: str = ""  # see layer_class


# CTA tiles of the implicit-GEMM kernels (M, N, CTAs resident per SM): TensorRT times several tile
# configurations per layer and keeps the fastest, so a layer gets the best-utilised one [U: the set]
TILES = ((128, 128, 2), (64, 64, 4), (32, 32, 8))
# MACs per CUDA core per cycle by precision: dp4a (4 INT8 products into INT32), HFMA2, FFMA
CUDA_SIMD = {Precision.INT8: 4, Precision.FP16: 2, Precision.FP32: 1}
MIN_TENSOR_CORE_DEPTH = 16  # a GEMM reducing over fewer elements (depthwise: R*S) leaves the tensor cores


def layer_class(work: LayerWork, precision: Precision) -> str:
    """'tensor-core GEMM' (dense / grouped convolution, FC, MatMul), 'CUDA-core depthwise' (per-group
    depth below one tensor-core K step, e.g. depthwise 3x3: 9), 'elementwise' (no MACs)."""
    if not work.macs or work.gemm is None:
        return "elementwise"
    if precision is Precision.FP32 or work.gemm[2] < MIN_TENSOR_CORE_DEPTH:
        return "cuda-core"
    return "tensor-core"


def tile_utilisation(work: LayerWork, mode: PowerMode) -> float:
    """Useful share of the tensor cores over the kernel's waves: M x N is covered by CTA tiles, a few
    per SM at a time; partial tiles and a partial last wave idle the rest (tile and wave
    quantization), best over ``TILES``. Large-batch layers approach 1, small late layers and FCs at
    batch 1 fall below."""
    m, n, _ = work.gemm
    best = 0.0
    for tm, tn, per_sm in TILES:
        tiles = work.groups * math.ceil(m / tm) * math.ceil(n / tn)
        slots = mode.gpu_active_sms * per_sm
        waves = math.ceil(tiles / slots)
        best = max(best, work.groups * m * n / (waves * slots * tm * tn))
    return best


def busy_mac_s(work: LayerWork, platform: Platform, mode: PowerMode, precision: Precision, cls: str) -> float:
    """Seconds of full-power work in a layer's MACs: MACs at its class's sustained rate (peak x
    ``compute_efficiency``) on every active SM, without the tile/wave losses. Full-load rail power is a
    stress test's, all SMs busy; SMs idled by partial tiles or a partial wave are charged at the
    memory-bound fraction instead, so energy grows with the work done, not with the time held."""
    if not work.macs:
        return 0.0
    eff = platform.gpu.compute_efficiency
    if cls == "tensor-core":
        return work.macs / (platform.gpu_peak_macs_per_s(mode, precision) * eff)
    return work.macs / (platform.gpu_peak_macs_per_s(mode, Precision.FP32) * eff * CUDA_SIMD[Precision(precision)])


def gpu_layer_cost(work: LayerWork, platform: Platform, mode: PowerMode, precision: Precision) -> GpuLayerCost:
    g = platform.gpu
    eff = g.compute_efficiency
    cls = layer_class(work, precision)
    cuda_rate = platform.gpu_peak_macs_per_s(mode, Precision.FP32) * eff  # one op per CUDA core per cycle
    if cls == "tensor-core":
        mac_rate = platform.gpu_peak_macs_per_s(mode, precision) * eff * tile_utilisation(work, mode)
    else:
        mac_rate = cuda_rate * CUDA_SIMD[Precision(precision)]
    t_mac = work.macs / mac_rate if work.macs else 0.0
    t_elem = work.elem_ops / cuda_rate if work.elem_ops else 0.0
    t_compute = max(t_mac, t_elem)
    t_busy = max(busy_mac_s(work, platform, mode, precision, cls), t_elem)
    t_mem = work.bytes / platform.gpu_bandwidth(mode) if work.kernels else 0.0
    launch = g.kernel_launch_s * work.kernels
    body = max(t_compute, t_mem)
    time = launch + body
    energy = (mode.gpu_active_w * t_busy + mode.gpu_active_w * g.memory_bound_power_fraction * (body - t_busy)
              + work.bytes * platform.dram_pj_per_byte * 1e-12 * (1 if work.kernels else 0))
    bound = "launch" if launch >= body else ("compute" if t_compute >= t_mem else "memory")
    return GpuLayerCost(time, energy, t_compute, t_mem, bound, cls)
