"""``host``: this machine's GPU, measured, with two simulated DLA cores attached.

GPU layer times are measured here: through CuPy kernels (``backends.gpu``) when a CUDA GPU is
present, otherwise through the numpy reference backend on the CPU -- the report says which. No
roofline is used for the host GPU, so its ``GpuArch`` peak table is empty.

The attached DLA cores are dla_sim's ``orin`` configuration (2 x DLA v2) at its MAXN clock, so a
host plan exercises the same DLA lowering, limits and simulated timing as an Orin plan.

Power [U, all]: no rail sensor is read here. The measured device is taken to draw 30 W of dynamic
power while it computes and 10 W static; SoC/DRAM static 5 W; DRAM traffic 5 pJ/bit. These only
make host energies comparable in order of magnitude; the Jetson platforms are the ones to study.
Transitions reuse the Jetson fixed costs (HaX-CoNN, Xavier MAXN) with a 20 GB/s reformat copy [U].

Host CPU: layers the GPU backend has no kernel for are timed on the reference backend here
(measured, like the GPU). Their hand-offs cross PCIe to a discrete GPU: PCIe 4.0 x16 moves
16 GT/s x 16 lanes x 128/130 / 8 = 31.5 GB/s (PCI Express Base Specification 4.0); 25 GB/s
sustained [U], one copy per hand-off, plus 10 us of synchronisation per hand-off [U]; the CPU
draws 15 W while it computes [U].
"""

from __future__ import annotations

from dla_sim.config import ORIN

from .jetson import _HAX_TRANSITION
from .model import GpuArch, HostCpu, Platform, PowerMode, TransitionSpec

HOST_GPU = GpuArch(
    name="host (measured)", arch="measured", sms=1, cuda_cores=0, tensor_cores=0, macs_per_sm_cycle={},
    kernel_launch_s=0.0, graph_launch_s=0.0, compute_efficiency=1.0, bandwidth_efficiency=1.0,
    memory_bound_power_fraction=1.0,
    sources={"*": "layer times are measured on this machine (backends.gpu or backends.reference)"},
)

HOST_CPU = HostCpu(
    name="this machine's CPU (measured)", cores=0, flops_per_s=0.0, bytes_per_s=0.0, link="PCIe",
    link_bytes_per_s=25e9, copies=1, sync_s=10e-6, active_w=15.0, measured=True,
    sources={"link_bytes_per_s": "PCIe 4.0 x16, 31.5 GB/s (PCI Express Base Specification 4.0), 25 sustained [U]",
             "sync_s": "[U]", "active_w": "[U]", "*": "layer times measured on the reference backend"})

HOST = Platform(
    name="host", description="this machine: measured GPU (or CPU reference backend) + 2 simulated DLA v2 cores",
    gpu=HOST_GPU, dla_config=ORIN.name, dla_cores=ORIN.cores, dla_version=2, dram_pj_per_byte=40.0,
    transition=TransitionSpec(fixed_s=_HAX_TRANSITION.fixed_s,
                              reference_gpu_clock_mhz=_HAX_TRANSITION.reference_gpu_clock_mhz,
                              sources={"fixed_s": "[HAX] Xavier MAXN reused [U]"}),
    modes={"default": PowerMode(
        name="default", gpu_clock_mhz=_HAX_TRANSITION.reference_gpu_clock_mhz, gpu_active_sms=1,
        dla_clock_mhz=ORIN.clocks_mhz["MAXN"], dram_gbps=20.0 / HOST_GPU.bandwidth_efficiency,
        gpu_active_w=30.0, gpu_static_w=10.0, dla_static_w=ORIN.energy.static_mw / 1e3, soc_static_w=5.0,
        sources={"*": "[U] see module docstring", "dla_clock_mhz": "dla_sim ORIN MAXN clock"})},
    default_mode="default", measured_gpu=True, cpu=HOST_CPU,
    sources={"dla_config": "dla_sim ORIN (2 x DLA v2) attached [stated choice]"},
)
