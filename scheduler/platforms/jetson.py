"""Jetson AGX Orin 64GB and Jetson AGX Xavier as data.

Source keys: [PLAT] the project's platform notes (spec-sheet table), [DLASW] NVIDIA
Deep-Learning-Accelerator-SW README (peak sparse INT8 TOPS per power mode, GPU vs 2 x DLA), [HAX]
HaX-CoNN artifact (GPU<->DLA transition 0.010-0.043 ms GPU side, 0.045-0.074 ms DLA side, Xavier
MAXN), [FORUM] forums.developer.nvidia.com/t/323456 (AGX Orin 32GB GPU stress power per mode),
[NVP] nvpmodel tables of the Jetson Linux Developer Guide ("Platform Power and Performance"),
recalled, not re-read [U]. [NVPCONF] NVIDIA's nvpmodel configuration files nvpmodel_p3701_0000.conf
and nvpmodel_p3701_0004.conf (Jetson Linux BSP; read in a public mirror, LineageOS
android_device_nvidia_concord, nvpmodel/). [D] = derived by arithmetic from cited numbers; [U] = assumption.

Derivations worth checking (``tests/scheduler_runtime/test_platforms.py`` re-derives them):

* Orin GPU dense INT8 MACs/SM/cycle: 171 sparse TOPS / 2 (sparsity) / 2 (ops per MAC) /
  (16 SMs x 1301.25 MHz) = 2053 -> 2048 [D]; FP16 half of that (Ampere tensor core ratio) [D];
  FP32 = 128 CUDA cores per SM [PLAT].
* Orin per-mode GPU clock and active TPCs (2 SMs each) [NVP][U]: MAXN 8 TPC @ 1301.25 MHz,
  50 W 8 TPC @ 828.75, 30 W 4 TPC @ 624.75, 15 W 2 TPC @ 420.75. They give 170.5 / 108.6 /
  40.9 / 13.8 sparse INT8 TOPS, within 2 % of [DLASW]'s 171 / 109 / 41 / 14 (whole TOPS).
* Xavier: 22.6 INT8 TOPS / (2 x 8 SMs x 1377 MHz) = 1026 -> 1024 INT8, 512 FP16 MACs/SM/cycle [D];
  64 FP32 CUDA cores per SM (512 / 8) [PLAT].
* DLA clocks per mode come from the dla_sim configurations (``dla_sim.config``) -- one source. They
  agree with NVIDIA's nvpmodel configuration files for AGX Orin modules [NVPCONF] (P3701-0000 and
  -0004, 32 GB; DLA0_CORE/DLA1_CORE MAX_FREQ): 15 W 614.4 MHz, 30 W 1369.6 MHz, MAXN uncapped (the
  clock table's top, 1.6 GHz on the 64 GB module [ORINTB]). The 64 GB module's 50 W cap (1404 MHz)
  is derived from [DLASW]'s 92 TOPS [D]; the 32 GB module's 50 W file caps at 1369.6 MHz.
* DLA voltage per mode (DVFS) [U]: no per-mode DLA voltage is published. The DLA rail is taken
  linear in the DLA clock between a floor at the slowest nvpmodel DLA clock and the top clock, whose
  voltage is the one the published per-MAC energy is stated at (``dla_sim.config`` ORIN_NODE /
  XAVIER_NODE): Orin 0.55 V at 614.4 MHz -> 0.70 V at 1600 MHz; Xavier 0.60 V at 550 MHz -> 0.75 V
  at 1395.2 MHz. The floors are assumptions (typical logic Vmin of 8 nm / 12 nm parts). On-chip DLA
  energy per operation scales with (V / V_top)^2, so DLA dynamic power at full load goes as f x V^2
  (``model.DvfsCurve``); DRAM energy and static power do not scale.
* Transition fixed costs [D from HAX]: into the DLA (reformat launch + DLA submission) 0.040 ms,
  out of it (completion + event) 0.008 ms, at Xavier MAXN; with the reformat of a GoogLeNet-size
  tensor (28x28x480 FP16, ~16 us at 70 % of 136.5 GB/s) that gives 0.056 / 0.024 ms, inside
  [HAX]'s DLA-side and GPU-side ranges. Orin uses the same fixed costs [U: no Orin measurement].
* Efficiency factors [U]: convolution/GEMM kernels sustain 50 % of tensor-core peak, streaming
  kernels 70 % of DRAM bandwidth; a CUDA-graph kernel node costs 4 us of launch, a graph launch
  (one per GPU partition) 10 us.
* Power [U unless noted]: Orin GPU dynamic power at full load scales with the mode's active TPCs and
  clock, P = e_cycle(mode) x TPCs x f, where e_cycle, the switching energy of one TPC-cycle
  (C x V^2 at the mode's voltage), comes from [FORUM]'s per-mode stress power of the VDD_GPU_SOC rail
  (40.4 / 18.4 / 7.6 / 5.2 W) minus the stated GPU static power (``orin_gpu_energy_per_tpc_cycle``).
  No per-mode voltage is published, so the voltage enters only through that measured per-mode rail
  power: e_cycle relative to MAXN is (V / V_MAXN)^2 (0.68 at 50 W, 0.70 at 30 W, consistent with DVFS;
  1.4 at 15 W, where the rail's SoC floor dominates the 2-TPC GPU -- an overestimate of the 15 W GPU).
  Xavier's GPU rail at full
  load is taken as 14 / 10 / 5 / 3.5 W (MAXN / 30 / 15 / 10 W) [U]. SoC + DRAM static (idle
  module power) 3-5 W [U]; DLA static per core = dla_sim's ``static_mw``. DRAM energy 5 pJ/bit
  (LPDDR5) and 6 pJ/bit (LPDDR4x), from [PLAT]'s 4-6 pJ/bit [U].
"""

from __future__ import annotations

from dla_sim.config import ORIN, ORIN_NODE, XAVIER, XAVIER_NODE

from .model import DLA_TO_GPU, GPU_TO_DLA, DvfsCurve, GpuArch, HostCpu, Platform, PowerMode, TransitionSpec

_EFF_SRC = "[U] assumption: conv/GEMM kernels reach half of tensor-core peak"
_BW_SRC = "[U] assumption: streaming kernels reach 70 % of DRAM bandwidth"

AMPERE_ORIN = GpuArch(
    name="Orin AGX 64GB GPU", arch="Ampere sm_87", sms=16, cuda_cores=2048, tensor_cores=64,
    macs_per_sm_cycle={"int8": 2048, "fp16": 1024, "fp32": 128},
    kernel_launch_s=4e-6, graph_launch_s=10e-6,
    compute_efficiency=0.5, bandwidth_efficiency=0.7, memory_bound_power_fraction=0.3,
    sources={"sms": "[PLAT]", "cuda_cores": "[PLAT]", "tensor_cores": "[PLAT]",
             "macs_per_sm_cycle.int8": "[D] 171 sparse TOPS [DLASW] / 4 / (16 SM x 1301.25 MHz)",
             "macs_per_sm_cycle.fp16": "[D] half the INT8 rate (Ampere tensor cores)",
             "macs_per_sm_cycle.fp32": "[PLAT] 2048 CUDA cores / 16 SMs",
             "kernel_launch_s": "[U] CUDA-graph kernel node on Jetson, a few us",
             "graph_launch_s": "[U] one graph launch per GPU partition",
             "compute_efficiency": _EFF_SRC, "bandwidth_efficiency": _BW_SRC,
             "memory_bound_power_fraction": "[U] a memory-bound kernel draws ~30 % of full-load dynamic power"},
)

VOLTA_XAVIER = GpuArch(
    name="Xavier AGX GPU", arch="Volta sm_72", sms=8, cuda_cores=512, tensor_cores=64,
    macs_per_sm_cycle={"int8": 1024, "fp16": 512, "fp32": 64},
    kernel_launch_s=5e-6, graph_launch_s=12e-6,
    compute_efficiency=0.5, bandwidth_efficiency=0.7, memory_bound_power_fraction=0.3,
    sources={"sms": "[PLAT]", "cuda_cores": "[PLAT]", "tensor_cores": "[PLAT]",
             "macs_per_sm_cycle.int8": "[D] 22.6 TOPS [PLAT] / 2 / (8 SM x 1377 MHz)",
             "macs_per_sm_cycle.fp16": "[D] 11.3 TFLOPS [PLAT] / 2 / (8 SM x 1377 MHz)",
             "macs_per_sm_cycle.fp32": "[PLAT] 512 CUDA cores / 8 SMs",
             "kernel_launch_s": "[U] a few us per kernel (older CPU cores than Orin's)",
             "graph_launch_s": "[U]", "compute_efficiency": _EFF_SRC, "bandwidth_efficiency": _BW_SRC,
             "memory_bound_power_fraction": "[U] as Orin"},
)

_HAX_TRANSITION = TransitionSpec(
    fixed_s={GPU_TO_DLA: 40e-6, DLA_TO_GPU: 8e-6}, reference_gpu_clock_mhz=1377.0,
    sources={"fixed_s": "[D] from [HAX] Xavier MAXN ranges (module docstring)",
             "reference_gpu_clock_mhz": "Xavier MAXN GPU clock: the [HAX] measurements' mode",
             "scaling": "[U] fixed costs scale with 1 / GPU clock (CPU/GPU launch paths slow down together)"},
)

_ORIN_STRESS_W = {"MAXN": 40.4, "50W": 18.4, "30W": 7.6, "15W": 5.2}  # [FORUM] VDD_GPU_SOC, GPU stress
_ORIN_GPU_STATIC_W = {"MAXN": 1.5, "50W": 1.5, "30W": 1.0, "15W": 0.8}  # [U]
_ORIN_SOC_STATIC_W = {"MAXN": 5.0, "50W": 4.5, "30W": 4.0, "15W": 3.0}  # [U]
_ORIN_GPU = {"MAXN": (1301.25, 16), "50W": (828.75, 16), "30W": (624.75, 8), "15W": (420.75, 4)}  # [NVP][U]
_ORIN_DRAM_GBPS = {"MAXN": 204.8, "50W": 204.8, "30W": 204.8, "15W": 136.5}  # EMC 3200 / 3200 / 3200 / 2133 MHz


SMS_PER_TPC = 2  # Ampere GA10x TPC = 2 SMs [PLAT]

_DVFS_SRC = {"f_lo_mhz": "slowest nvpmodel DLA clock", "f_hi_mhz": "top DLA clock (MAXN)",
             "v_hi": "the voltage the published per-MAC energy is stated at (dla_sim.config) [U]",
             "v_lo": "[U] assumed rail floor", "shape": "[U] V linear in f between the two points"}
ORIN_DLA_DVFS = DvfsCurve(f_lo_mhz=ORIN.clocks_mhz["15W"], v_lo=0.55, f_hi_mhz=ORIN.clocks_mhz["MAXN"],
                          v_hi=ORIN_NODE[1], sources={**_DVFS_SRC, "f_lo_mhz": "15 W cap 614.4 MHz [NVPCONF]",
                                                      "f_hi_mhz": "MAXN 1.6 GHz [ORINTB]"})
XAVIER_DLA_DVFS = DvfsCurve(f_lo_mhz=XAVIER.clocks_mhz["10W"], v_lo=0.60, f_hi_mhz=XAVIER.clocks_mhz["MAXN"],
                            v_hi=XAVIER_NODE[1], sources={**_DVFS_SRC, "f_lo_mhz": "10 W 550 MHz [L4TX]",
                                                          "f_hi_mhz": "MAXN 1395.2 MHz [L4TX]"})


def _dla_dvfs_fields(curve: DvfsCurve, clock_mhz: float) -> dict:
    return {"dla_vdd": curve.volts(clock_mhz), "dla_energy_scale": curve.energy_scale(clock_mhz)}


def orin_gpu_energy_per_tpc_cycle(name: str) -> float:
    """Joules per active TPC per GPU cycle at full load in mode ``name``: ([FORUM] rail stress power
    - GPU static) / (TPCs x clock). Holds the mode's C x V^2."""
    clock, sms = _ORIN_GPU[name]
    return (_ORIN_STRESS_W[name] - _ORIN_GPU_STATIC_W[name]) / (sms / SMS_PER_TPC * clock * 1e6)


def orin_gpu_dynamic_w(name: str) -> float:
    """Full-load GPU dynamic power: energy per TPC-cycle x active TPCs x clock."""
    clock, sms = _ORIN_GPU[name]
    return orin_gpu_energy_per_tpc_cycle(name) * (sms / SMS_PER_TPC) * clock * 1e6


def _orin_mode(name: str) -> PowerMode:
    clock, sms = _ORIN_GPU[name]
    return PowerMode(
        name=name, gpu_clock_mhz=clock, gpu_active_sms=sms, dla_clock_mhz=ORIN.clocks_mhz[name],
        dram_gbps=_ORIN_DRAM_GBPS[name], gpu_active_w=orin_gpu_dynamic_w(name),
        gpu_static_w=_ORIN_GPU_STATIC_W[name], dla_static_w=ORIN.energy.static_mw / 1e3,
        soc_static_w=_ORIN_SOC_STATIC_W[name], **_dla_dvfs_fields(ORIN_DLA_DVFS, ORIN.clocks_mhz[name]),
        sources={"gpu_clock_mhz": "[NVP][U], consistent with [DLASW] TOPS (module docstring)",
                 "gpu_active_sms": "[NVP][U] TPCs x 2",
                 "dla_clock_mhz": "dla_sim ORIN clocks_mhz; 15 W / 30 W caps as [NVPCONF]",
                 "dla_vdd": "ORIN_DLA_DVFS at the mode's DLA clock [U]",
                 "dla_energy_scale": "(dla_vdd / 0.70 V)^2: C x V^2 at the mode's voltage",
                 "dram_gbps": "204.8 GB/s LPDDR5 [PLAT]; 15 W caps EMC at 2133 MHz [NVP][U]",
                 "gpu_active_w": "energy per TPC-cycle x TPCs x clock; energy from [FORUM] VDD_GPU_SOC stress "
                                 "power per mode (AGX Orin 32GB) minus gpu_static_w [S][U]",
                 "gpu_static_w": "[U]", "dla_static_w": "dla_sim ORIN energy.static_mw [U]",
                 "soc_static_w": "[U] module idle power"},
    )


# Host CPUs (the reference backend runs the layers the GPU backend has no kernel for).
# [ORIN-DS] Jetson AGX Orin Series Data Sheet (DS-10662-001): 12-core Arm Cortex-A78AE v8.2, up to 2.2 GHz.
# [XAV-DS] Jetson AGX Xavier Series Data Sheet (DS-09654-001): 8-core NVIDIA Carmel ARMv8.2, up to 2.26 GHz.
# [A78] Arm Cortex-A78 Software Optimization Guide: two 128-bit FP/ASIMD pipes, each with FMA, so
# 2 x 4 FP32 lanes x 2 FLOP = 16 FP32 FLOP per cycle per core; Carmel is taken to match it [U].
# Sustained fractions [U]: the numpy reference backend reaches 10 % of that peak and 20 / 15 GB/s of
# DRAM bandwidth. A hand-off over the shared DRAM: a cache flush + copy (read + write at the mode's
# DRAM bandwidth) plus 20 us of stream synchronisation and cache maintenance [U]. Cluster dynamic
# power 8 W (Orin) / 6 W (Xavier) [U]. CPU clocks are MAXN's; lower nvpmodel modes take cores
# offline and lower clocks, which this model does not follow [U].
ORIN_CPU = HostCpu(
    name="12 x Cortex-A78AE @ 2.2 GHz", cores=12, flops_per_s=0.10 * 12 * 2.2e9 * 16, bytes_per_s=20e9,
    link="shared DRAM", link_bytes_per_s=None, copies=2, sync_s=20e-6, active_w=8.0,
    sources={"name": "[ORIN-DS]", "flops_per_s": "[A78] 16 FLOP/cycle/core x 12 x 2.2 GHz x 10 % [U]",
             "bytes_per_s": "[U]", "sync_s": "[U]", "active_w": "[U]"})
XAVIER_CPU = HostCpu(
    name="8 x Carmel @ 2.26 GHz", cores=8, flops_per_s=0.10 * 8 * 2.2656e9 * 16, bytes_per_s=15e9,
    link="shared DRAM", link_bytes_per_s=None, copies=2, sync_s=20e-6, active_w=6.0,
    sources={"name": "[XAV-DS]", "flops_per_s": "[A78][U] 16 FLOP/cycle/core x 8 x 2.2656 GHz x 10 % [U]",
             "bytes_per_s": "[U]", "sync_s": "[U]", "active_w": "[U]"})

ORIN_AGX_64GB = Platform(
    name="orin-agx-64gb", description="NVIDIA Jetson AGX Orin 64GB (Ampere GPU, 2 DLA v2 cores)",
    gpu=AMPERE_ORIN, dla_config=ORIN.name, dla_cores=ORIN.cores, dla_version=2,
    dram_pj_per_byte=5.0 * 8, transition=_HAX_TRANSITION,
    modes={m: _orin_mode(m) for m in ("15W", "30W", "50W", "MAXN")}, default_mode="MAXN",
    sources={"dla_cores": "[PLAT] 2 x DLA v2", "dram_pj_per_byte": "[PLAT] LPDDR5 4-6 pJ/bit, 5 taken [U]",
             "transition": "[HAX] Xavier numbers reused [U]", "dla_dvfs": "module docstring [U]"},
    dla_dvfs=ORIN_DLA_DVFS,
    cpu=ORIN_CPU,
)

_XAVIER_GPU = {"MAXN": 1377.0, "30W": 1236.75, "15W": 670.0, "10W": 520.2}  # [NVP][U]
_XAVIER_DRAM_GBPS = {"MAXN": 136.5, "30W": 136.5, "15W": 85.3, "10W": 68.2}  # EMC 2133/2133/1333/1066 MHz [U]
_XAVIER_ACTIVE_W = {"MAXN": 14.0, "30W": 10.0, "15W": 5.0, "10W": 3.5}  # [U]
_XAVIER_GPU_STATIC_W = {"MAXN": 1.0, "30W": 0.9, "15W": 0.6, "10W": 0.5}  # [U]
_XAVIER_SOC_STATIC_W = {"MAXN": 4.0, "30W": 3.5, "15W": 3.0, "10W": 2.5}  # [U]


def _xavier_mode(name: str) -> PowerMode:
    return PowerMode(
        name=name, gpu_clock_mhz=_XAVIER_GPU[name], gpu_active_sms=8, dla_clock_mhz=XAVIER.clocks_mhz[name],
        dram_gbps=_XAVIER_DRAM_GBPS[name], gpu_active_w=_XAVIER_ACTIVE_W[name],
        gpu_static_w=_XAVIER_GPU_STATIC_W[name], dla_static_w=XAVIER.energy.static_mw / 1e3,
        soc_static_w=_XAVIER_SOC_STATIC_W[name], **_dla_dvfs_fields(XAVIER_DLA_DVFS, XAVIER.clocks_mhz[name]),
        sources={"gpu_clock_mhz": "MAXN 1377 MHz [PLAT]; others [NVP][U]", "gpu_active_sms": "[PLAT] 8 SMs",
                 "dla_clock_mhz": "dla_sim XAVIER clocks_mhz ([L4TX])",
                 "dla_vdd": "XAVIER_DLA_DVFS at the mode's DLA clock [U]",
                 "dla_energy_scale": "(dla_vdd / 0.75 V)^2: C x V^2 at the mode's voltage",
                 "dram_gbps": "136.5 GB/s LPDDR4x [PLAT]; EMC caps of 15 W / 10 W [NVP][U]",
                 "gpu_active_w": "[U]", "gpu_static_w": "[U]", "dla_static_w": "dla_sim XAVIER energy.static_mw [U]",
                 "soc_static_w": "[U] module idle power"},
    )


XAVIER_AGX = Platform(
    name="xavier-agx", description="NVIDIA Jetson AGX Xavier (Volta GPU, 2 DLA v1 cores)",
    gpu=VOLTA_XAVIER, dla_config=XAVIER.name, dla_cores=XAVIER.cores, dla_version=1,
    dram_pj_per_byte=6.0 * 8, transition=_HAX_TRANSITION,
    modes={m: _xavier_mode(m) for m in ("10W", "15W", "30W", "MAXN")}, default_mode="MAXN",
    sources={"dla_cores": "[PLAT] 2 x DLA v1", "dram_pj_per_byte": "[PLAT] LPDDR4x 4-6 pJ/bit, 6 taken [U]",
             "transition": "[HAX]", "dla_dvfs": "module docstring [U]"},
    dla_dvfs=XAVIER_DLA_DVFS,
    cpu=XAVIER_CPU,
)
