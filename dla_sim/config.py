"""DLA hardware configurations as data.

Each configuration is a frozen :class:`DlaConfig`.  Every number carries a source key in
``DlaConfig.sources`` (field path -> key); keys refer to the source list of the project's DLA
reference notes (``[SPEC]`` nvdla/hw spec/defs, ``[IAS]`` unit description, ``[PG]`` programming
guide, ``[HWARCH]``, ``[PERF]`` performance spreadsheet, ``[FAQ]``/``[DLASW]`` NVIDIA DLA SW repo,
``[L4TX]`` Xavier power-management table, ``[ORINTB]`` Orin technical brief, ``[TRTH]`` TensorRT
headers).  ``[D]`` marks a value derived by arithmetic from cited numbers, ``[U]`` a value that is
unconfirmed (secondary source or assumption) -- these are the numbers a reviewer should check.

Assumptions stated here (and nowhere hidden in code):

* Xavier's DLA is nv_full (nvdlav1) silicon: 2048 INT8 / 1024 FP16 MACs, 512 KB CBUF [D],[U].
* Orin's DLA (v2) has 8192 dense INT8 MACs per cycle [D] (from 105 sparse TOPS for 2 DLAs at
  1.6 GHz).  The split into Atomic-C x Atomic-K (64 x 128), the CBUF size (1 MiB) and the FP16 rate
  (1024 MACs) are not published [U].
* ``dram_share`` (fraction of SoC DRAM bandwidth one DLA core achieves) is the only calibrated number
  in the Jetson configurations; it is fitted to the measured anchors of the reference notes §3 and
  nothing else (see ``CALIBRATION`` below).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from .ops import Precision


@dataclass(frozen=True)
class ConvCoreConfig:
    """CONV core geometry: atomic op = 1x1xatomic_c input x atomic_k kernels per cycle [IAS]."""

    atomic_c: int  # input channels per atomic op (INT8 elements)
    atomic_k: int  # kernels per atomic op (INT8)
    macs_int8: int
    macs_fp16: int
    stripe_min: int = 16  # atomic ops per stripe lower bound = weight reload time [IAS]
    stripe_max: int = 32  # upper bound = accumulator depth [IAS]
    winograd: bool = False
    # Compiler policy, not hardware: INT8 Winograd loses precision in the PRA truncation [PREC] and
    # NVIDIA's NVDLA compiler never selects it (conv_core module doc); True lowers 3x3/stride-1
    # INT8 convolutions that qualify to it anyway (PRA truncate 2), for what-if timing.
    winograd_int8: bool = False
    max_batch: int = 1
    weight_compression: bool = False
    sparsity_2_4: bool = False
    depthwise_unit: bool = False
    image_efficiency: float = 0.5  # average MAC utilisation of image (3-channel) input [HWARCH]
    pipeline_latency: int = 7  # CMAC pipeline depth [IAS]

    def macs(self, precision: Precision) -> int:
        return self.macs_int8 if precision is Precision.INT8 else self.macs_fp16

    def atoms(self, precision: Precision) -> tuple[int, int]:
        """(atomic_c, atomic_k) in elements for ``precision``: FP16/INT16 halve K [IAS]."""
        if precision is Precision.INT8:
            return self.atomic_c, self.atomic_k
        return self.atomic_c, max(1, self.atomic_k * self.macs_fp16 // self.macs_int8)


@dataclass(frozen=True)
class CbufConfig:
    """Convolution buffer: ``banks`` x ``entries`` x ``entry_bytes`` [SPEC],[PG]."""

    banks: int
    entries_per_bank: int
    entry_bytes: int

    @property
    def bank_bytes(self) -> int:
        return self.entries_per_bank * self.entry_bytes

    @property
    def size_bytes(self) -> int:
        return self.banks * self.bank_bytes


@dataclass(frozen=True)
class PostUnitConfig:
    """Throughputs in elements per cycle [SPEC]."""

    sdp_bs: int
    sdp_bn: int
    sdp_ew: int
    pdp: int
    cdp: int
    sdp_lut: bool
    sdp_eltwise: bool
    pdp_buffer_bytes: int = 7 * 1024  # share-line buffer: 512 entries x 112 bits [IAS]
    bdma: bool = False
    rubik: bool = False
    softmax: bool = False


@dataclass(frozen=True)
class MemoryConfig:
    """Memory interfaces of one DLA core.

    ``dbb_bits``/``sram_bits``: NVDLA interface widths [SPEC]; ``*_latency`` in DLA cycles [SPEC].
    ``dram_gbps``: SoC DRAM bandwidth; ``dram_share``: fraction of it one DLA core achieves.
    ``sram_bytes``: on-chip SRAM reachable through the secondary interface (0 = none).
    """

    dbb_bits: int
    dram_latency: int
    dram_gbps: float
    dram_share: float = 1.0
    sram_bits: int = 0
    sram_latency: int = 0
    sram_bytes: int = 0
    sram_read_gbps: float | None = None  # None: limited by the interface width only
    sram_write_gbps: float | None = None


@dataclass(frozen=True)
class EnergyConfig:
    """Technology node and static power used by ``dla_sim.energy``."""

    node_nm: float
    vdd: float
    static_mw: float  # leakage + clock tree of one core, [U]
    # DRAM access energy per byte, interface included. Default: Horowitz's DDR3-era 1.3 nJ per 64-bit
    # access [HOR]; the Jetson configs use their LPDDR's figure so DLA and GPU costs price DRAM alike.
    dram_pj_per_byte: float = 162.5
    # Whole-core dynamic energy per MAC (CBUF reads and clocking included) from a published power
    # figure, see ``jetson_mac_pj``; None keeps the per-operation [HOR] model of ``dla_sim.energy``.
    mac_pj_int8: float | None = None
    mac_pj_fp16: float | None = None


# [BLOG] NVIDIA on Xavier's DLA (translated copy, codestudyblog.com/8ten84/80426044521.html; the
# project's reference notes, dla.md §2 / scheduling.md §4): "up to 5 TOPS INT8 / 2.5 TFLOPS FP16 per
# DLA, 0.5-1.5 W". The top of the power range is read as one core at its peak rate [U: reading].
XAVIER_DLA_PEAK_W = 1.5
XAVIER_DLA_INT8_TOPS = 5.0
XAVIER_DLA_FP16_TFLOPS = 2.5
XAVIER_NODE = (12.0, 0.75)  # nm, V: TSMC 12 nm FFN [PLAT]; core voltage [U]
ORIN_NODE = (8.0, 0.7)  # nm, V: Samsung 8 nm [PLAT]; core voltage [U]


def cv2_scale(src: tuple[float, float], dst: tuple[float, float]) -> float:
    """Switching energy ratio C*V^2 between two (node nm, vdd) points; C taken proportional to the node
    (the same stated rule as ``dla_sim.energy.node_factor``) [U]."""
    return (dst[0] / src[0]) * (dst[1] / src[1]) ** 2


def jetson_mac_pj(static_w: float, node: tuple[float, float]) -> tuple[float, float]:
    """Dynamic pJ per INT8 and per FP16 MAC of a DLA core: ([BLOG] peak power - static) / MAC rate
    at Xavier's node, scaled by C*V^2 to ``node``. 2 ops per MAC."""
    k = cv2_scale(XAVIER_NODE, node)
    dyn_w = XAVIER_DLA_PEAK_W - static_w
    int8 = dyn_w / (XAVIER_DLA_INT8_TOPS * 1e12 / 2) * 1e12 * k
    fp16 = dyn_w / (XAVIER_DLA_FP16_TFLOPS * 1e12 / 2) * 1e12 * k
    return int8, fp16


_JETSON_STATIC_MW = 150.0  # leakage + clock tree of one core [U]
_XAVIER_MAC_PJ = jetson_mac_pj(_JETSON_STATIC_MW / 1e3, XAVIER_NODE)
_ORIN_MAC_PJ = jetson_mac_pj(_JETSON_STATIC_MW / 1e3, ORIN_NODE)


@dataclass(frozen=True)
class DlaConfig:
    name: str
    conv: ConvCoreConfig
    cbuf: CbufConfig
    post: PostUnitConfig
    mem: MemoryConfig
    energy: EnergyConfig
    clocks_mhz: MappingProxyType  # power mode -> DLA clock
    power_mode: str
    cores: int = 1
    timing_model: str = "hardware"  # or "spreadsheet": the [PERF] per-layer formula set
    fc_batch: int = 1  # spreadsheet: FC layers evaluated at this batch [PERF]
    atom_bytes: int = 32  # memory atom: NVDLA_MEMORY_ATOMIC_SIZE, 8 on nv_small [SPEC]
    sources: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))

    @property
    def clock_mhz(self) -> float:
        return self.clocks_mhz[self.power_mode]

    @property
    def clock_hz(self) -> float:
        return self.clock_mhz * 1e6

    def dram_bytes_per_cycle(self) -> float:
        """Sustained DRAM bytes per DLA cycle: min(interface width, SoC share)."""
        soc = self.mem.dram_gbps * 1e9 * self.mem.dram_share / self.clock_hz
        return min(self.mem.dbb_bits / 8, soc)

    def sram_bytes_per_cycle(self, write: bool = False) -> float:
        if not self.mem.sram_bits:
            return 0.0
        lim = self.mem.sram_write_gbps if write else self.mem.sram_read_gbps
        iface = self.mem.sram_bits / 8
        return iface if lim is None else min(iface, lim * 1e9 / self.clock_hz)

    def with_mode(self, power_mode: str) -> DlaConfig:
        if power_mode not in self.clocks_mhz:
            raise KeyError(f"{self.name}: unknown power mode {power_mode!r}; known: {list(self.clocks_mhz)}")
        return replace(self, power_mode=power_mode)

    def source(self, key: str) -> str:
        return self.sources.get(key, "")

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(replace(self, clocks_mhz={}, sources={}))  # type: ignore[arg-type]
        d["clocks_mhz"] = dict(self.clocks_mhz)
        d["sources"] = dict(self.sources)
        return d


def _m(d: dict) -> MappingProxyType:
    return MappingProxyType(dict(d))


_NVDLA_SRC = {
    "conv.atomic_c": "[SPEC]",
    "conv.atomic_k": "[SPEC]",
    "conv.macs_int8": "[SPEC],[IAS]",
    "conv.macs_fp16": "[IAS]",
    "conv.stripe_min": "[IAS]",
    "conv.stripe_max": "[IAS]",
    "conv.image_efficiency": "[HWARCH]",
    "cbuf": "[SPEC],[PG]",
    "post": "[SPEC]",
    "post.pdp_buffer_bytes": "[IAS]",
    "mem.dbb_bits": "[SPEC]",
    "mem.dram_latency": "[SPEC]",
    "mem.sram_bits": "[SPEC]",
    "mem.sram_latency": "[SPEC]",
    "energy": "[HOR] scaled, see dla_sim.energy [U]",
}

NV_SMALL = DlaConfig(
    name="nv_small",
    conv=ConvCoreConfig(atomic_c=8, atomic_k=8, macs_int8=64, macs_fp16=0, stripe_min=16, stripe_max=32),
    # 32 banks x 8 B x 512 entries = 128 KB [SPEC]
    cbuf=CbufConfig(banks=32, entries_per_bank=512, entry_bytes=8),
    post=PostUnitConfig(sdp_bs=1, sdp_bn=1, sdp_ew=0, pdp=1, cdp=1, sdp_lut=False, sdp_eltwise=False),
    mem=MemoryConfig(dbb_bits=64, dram_latency=64, dram_gbps=8.0),  # 8 GB/s system DRAM: [U] example
    energy=EnergyConfig(node_nm=16, vdd=0.8, static_mw=5.0),
    clocks_mhz=_m({"default": 1000.0}),  # [U] nominal; the RTL is clock-agnostic
    power_mode="default",
    atom_bytes=8,
    sources=_m({**_NVDLA_SRC, "mem.dram_gbps": "[U] example system", "clocks_mhz": "[U]",
                "atom_bytes": "[SPEC]"}),
)

NV_FULL = DlaConfig(
    name="nv_full",
    conv=ConvCoreConfig(
        atomic_c=64, atomic_k=32, macs_int8=2048, macs_fp16=1024, winograd=True, max_batch=32,
        weight_compression=True,
    ),
    # 16 banks x 256 entries x 128 B = 512 KB (each bank two 512-bit x 256-entry SRAMs) [IAS],[PG]
    cbuf=CbufConfig(banks=16, entries_per_bank=256, entry_bytes=128),
    post=PostUnitConfig(
        sdp_bs=16, sdp_bn=16, sdp_ew=4, pdp=8, cdp=8, sdp_lut=True, sdp_eltwise=True, bdma=True, rubik=True
    ),
    mem=MemoryConfig(dbb_bits=512, dram_latency=1200, dram_gbps=25.6, sram_bits=512, sram_latency=128,
                     sram_bytes=0),
    energy=EnergyConfig(node_nm=16, vdd=0.8, static_mw=30.0),
    clocks_mhz=_m({"default": 1000.0, "sdc": 1111.0}),  # 0.9 ns synthesis constraint [SDC]
    power_mode="default",
    sources=_m({**_NVDLA_SRC, "mem.dram_gbps": "[U] example system", "clocks_mhz": "[PERF],[SDC]"}),
)

# The NVDLA open-source performance spreadsheet's default assumptions [PERF]: 2048 MACs, 1 GHz,
# 512 KB CBUF, DRAM 10 GB/s, SRAM 25/25 GB/s (unused by default), FC batch 16, post-ops fused.
SPREADSHEET = replace(
    NV_FULL,
    name="spreadsheet",
    mem=MemoryConfig(dbb_bits=512, dram_latency=0, dram_gbps=10.0, sram_bits=512, sram_latency=0,
                     sram_bytes=0, sram_read_gbps=25.0, sram_write_gbps=25.0),
    clocks_mhz=_m({"default": 1000.0}),
    timing_model="spreadsheet",
    fc_batch=16,
    sources=_m({**_NVDLA_SRC, "mem": "[PERF]", "clocks_mhz": "[PERF]", "fc_batch": "[PERF]"}),
)

# Calibration (the only fitted numbers): effective share of SoC DRAM bandwidth per DLA core, fitted by
# bisection so that ResNet-50 INT8 matches the two measured anchors (reference notes §3) and nothing
# else. The fit runs on the path users' networks take: the bundled ResNet-50 ONNX model through the
# parser, the optimizer and the DLA lowering (``backends.dla.throughput``); bench/dla_validation.py
# re-derives them (``--calibrate``).  Two numbers for two anchors: the anchors are reproduced by
# construction, so they check plausibility (15 GB/s per Xavier DLA while the MLPerf harness also runs
# the GPU; 60 GB/s per Orin DLA), not the model's accuracy.
CALIBRATION = MappingProxyType({"xavier.dram_share": 0.110, "orin.dram_share": 0.291})

XAVIER = DlaConfig(
    name="xavier",
    conv=ConvCoreConfig(
        atomic_c=64, atomic_k=32, macs_int8=2048, macs_fp16=1024, winograd=True, max_batch=32,
        weight_compression=True,
    ),
    cbuf=CbufConfig(banks=16, entries_per_bank=256, entry_bytes=128),  # nv_full-like [U]
    post=PostUnitConfig(
        sdp_bs=16, sdp_bn=16, sdp_ew=4, pdp=8, cdp=8, sdp_lut=True, sdp_eltwise=True, bdma=True, rubik=True
    ),
    mem=MemoryConfig(
        dbb_bits=512, dram_latency=1200, dram_gbps=136.5, dram_share=CALIBRATION["xavier.dram_share"],
        sram_bits=512, sram_latency=128, sram_bytes=4 * 1024 * 1024 // 4,  # 4 MiB shared by 2 DLA + 2 PVA
    ),
    energy=EnergyConfig(node_nm=XAVIER_NODE[0], vdd=XAVIER_NODE[1], static_mw=_JETSON_STATIC_MW,
                        dram_pj_per_byte=48.0,  # LPDDR4x ~6 pJ/bit [U]
                        mac_pj_int8=_XAVIER_MAC_PJ[0], mac_pj_fp16=_XAVIER_MAC_PJ[1]),
    clocks_mhz=_m({"MAXN": 1395.2, "30W": 1050.0, "15W": 750.0, "10W": 550.0}),
    power_mode="MAXN",
    cores=2,
    sources=_m({
        **_NVDLA_SRC,
        "conv": "nv_full [SPEC]; 2048 INT8 MACs implied by 11.4 TOPS / 2 DLAs @1395 MHz [D]",
        "cbuf": "nv_full assumed [U]",
        "mem.dram_gbps": "LPDDR4x 256-bit @ 2133 MHz = 136.5 GB/s (Jetson AGX Xavier data sheet) [U]",
        "mem.dram_share": "calibrated to the 396 img/s anchor (reference notes §3)",
        "mem.sram_bytes": "4 MiB shared by 2 DLA + 2 PVA [FAQ]; a quarter per DLA assumed [U]",
        "clocks_mhz": "[L4TX]",
        "cores": "[FAQ]",
        "energy": "12 nm FFN process; static power [U]; pJ/MAC from [BLOG] 5 TOPS at 1.5 W per core [D]",
    }),
)

ORIN = DlaConfig(
    name="orin",
    conv=ConvCoreConfig(
        atomic_c=64, atomic_k=128, macs_int8=8192, macs_fp16=1024, winograd=True, max_batch=32,
        weight_compression=True, sparsity_2_4=True, depthwise_unit=True,
    ),
    cbuf=CbufConfig(banks=32, entries_per_bank=256, entry_bytes=128),  # 1 MiB "larger local buffer" [U]
    post=PostUnitConfig(
        sdp_bs=32, sdp_bn=32, sdp_ew=8, pdp=16, cdp=16, sdp_lut=True, sdp_eltwise=True, bdma=True,
        rubik=True, softmax=True,
    ),
    mem=MemoryConfig(
        dbb_bits=512, dram_latency=1200, dram_gbps=204.8, dram_share=CALIBRATION["orin.dram_share"],
        sram_bits=512, sram_latency=128, sram_bytes=1024 * 1024,
    ),
    energy=EnergyConfig(node_nm=ORIN_NODE[0], vdd=ORIN_NODE[1], static_mw=_JETSON_STATIC_MW,
                        dram_pj_per_byte=40.0,  # LPDDR5 ~5 pJ/bit [U]
                        mac_pj_int8=_ORIN_MAC_PJ[0], mac_pj_fp16=_ORIN_MAC_PJ[1]),
    clocks_mhz=_m({"MAXN": 1600.0, "50W": 1404.0, "30W": 1369.6, "15W": 614.4}),
    power_mode="MAXN",
    cores=2,
    sources=_m({
        **_NVDLA_SRC,
        "conv.macs_int8": "105 sparse TOPS / 2 DLA / 2 (sparse) / 2 ops / 1.6 GHz = 8192 [D]",
        "conv.atomic_c": "64 assumed (2:4 sparsity needs C > 64 [FAQ]) [U]",
        "conv.atomic_k": "8192 / 64 [D],[U]",
        "conv.macs_fp16": "not published; TRT notes FP16 conv up to 2x slower than Xavier [U]",
        "conv.sparsity_2_4": "[FAQ]",
        "conv.depthwise_unit": "[ORINTB]",
        "cbuf": "size not published ('increased local buffering' [ORINTB]) [U]",
        "post": "doubled vs nv_full to match the 4x MAC array [U]",
        "post.softmax": "TRT: softmax on Orin only [TRTDOC]",
        "mem.dram_gbps": "LPDDR5 256-bit @ 3200 MHz = 204.8 GB/s (AGX Orin 64 GB data sheet) [U]",
        "mem.dram_share": "calibrated to the 2037 img/s anchor (reference notes §3)",
        "mem.sram_bytes": "1 MiB per DLA [TRTH]",
        "clocks_mhz": "MAXN 1.6 GHz [ORINTB]; 50W from 92 TOPS [D]; 30W 1369.6, 15W 614.4 (nvpmodel) [U]",
        "cores": "[FAQ]",
        "energy": "8 nm process; static power [U]; pJ/MAC: [BLOG] Xavier figure scaled by C*V^2 "
                  "12 nm 0.75 V -> 8 nm 0.7 V [D],[U]",
    }),
)

CONFIGS: MappingProxyType = MappingProxyType(
    {c.name: c for c in (NV_SMALL, NV_FULL, XAVIER, ORIN, SPREADSHEET)}
)


def get_config(name: str, power_mode: str | None = None) -> DlaConfig:
    """Look up a named configuration (case-insensitive), optionally at another power mode."""
    key = name.lower().replace("-", "_")
    aliases = {"nvdlav1": "nv_full", "xavier_dla": "xavier", "orin_dla": "orin", "dla_v1": "xavier",
               "dla_v2": "orin"}
    key = aliases.get(key, key)
    if key not in CONFIGS:
        raise KeyError(f"unknown DLA configuration {name!r}; known: {sorted(CONFIGS)}")
    cfg = CONFIGS[key]
    return cfg.with_mode(power_mode) if power_mode else cfg
