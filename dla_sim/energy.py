"""Energy: per-operation + per-byte + static, with every constant cited.

Base constants are Horowitz, ISSCC 2014 [HOR] (45 nm, 0.9 V):
  INT8 multiply 0.2 pJ, INT32 add 0.1 pJ -> INT8 MAC into a wide accumulator 0.3 pJ;
  FP16 multiply 1.1 pJ, FP32 add 0.9 pJ -> FP16 MAC with FP32 accumulation 2.0 pJ;
  SRAM 64-bit access: 32 KB 20 pJ (CBUF bank size), 1 MB 100 pJ (on-chip SRAM);
  DRAM 64-bit access 1.3-2.6 nJ (we take the low end, 1.3 nJ = 162.5 pJ/B).
Scaling (assumption [U]): logic and SRAM energy scale with C*V^2, approximated as
  factor = (node_nm / 45) * (vdd / 0.9)^2   (e.g. 16 nm, 0.8 V -> 0.28; 8 nm, 0.7 V -> 0.11).
DRAM energy is not scaled with the logic node (the off-chip interface dominates it): each config
gives its DRAM's energy per byte, ``cfg.energy.dram_pj_per_byte`` — [HOR]'s DDR3-era figure for the
open NVDLA configs, LPDDR4x (~6 pJ/bit) for Xavier and LPDDR5 (~5 pJ/bit) for Orin, the same figures
the scheduler's platform models charge the GPU [U].
Post-processing element ops (SDP/PDP/CDP) cost one 32-bit add + one 8-bit-class multiply per element
per active sub-unit, 0.3 pJ at 45 nm [HOR] [U].  CBUF reads per conv compute cycle: one data atom
(atomic_c elements) plus an equal weight stream [U]; every byte fetched from memory is written once
into CBUF.  Static: ``cfg.energy.static_mw`` per core for the whole run [U].
Where a config gives a whole-core energy per MAC from a published power figure
(``cfg.energy.mac_pj_int8`` / ``mac_pj_fp16``, the Jetson configs: ``dla_sim.config.jetson_mac_pj``),
that figure replaces the [HOR] MAC energy, unscaled, and already holds the CBUF reads and writes and
the core's clocking, so CBUF is not charged again; post-processing, SRAM and DRAM stay as above.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import DlaConfig
from .ops import ConvOp, HwOp, Precision, UnitTiming

HOR_NODE_NM = 45.0
HOR_VDD = 0.9
E_MAC_INT8_PJ = 0.2 + 0.1
E_MAC_FP16_PJ = 1.1 + 0.9
E_ELEM_PJ = 0.2 + 0.1
E_CBUF_PJ_PER_BYTE = 20.0 / 8  # 32 KB SRAM, 64-bit access
E_SRAM_PJ_PER_BYTE = 100.0 / 8  # 1 MB SRAM, 64-bit access


def node_factor(cfg: DlaConfig) -> float:
    return (cfg.energy.node_nm / HOR_NODE_NM) * (cfg.energy.vdd / HOR_VDD) ** 2


@dataclass
class EnergyReport:
    per_op_j: float
    per_byte_j: float
    static_j: float
    breakdown_j: dict[str, float] = field(default_factory=dict)

    @property
    def total_j(self) -> float:
        return self.per_op_j + self.per_byte_j + self.static_j


class EnergyAccumulator:
    def __init__(self, cfg: DlaConfig) -> None:
        self.cfg = cfg
        self.f = node_factor(cfg)
        self.parts: dict[str, float] = {"mac": 0.0, "post": 0.0, "cbuf": 0.0, "dram": 0.0, "sram": 0.0}

    def add_group(self, group: list[HwOp], traffic: UnitTiming, cfg: DlaConfig) -> None:
        pj = 1e-12
        for op in group:
            if isinstance(op, ConvOp):
                mults = op.macs / (2.25 if op.mode == "winograd" else 1.0)
                int8 = op.input.precision is Precision.INT8
                published = cfg.energy.mac_pj_int8 if int8 else cfg.energy.mac_pj_fp16
                if published is not None:
                    self.parts["mac"] += mults * published * pj
                    continue
                e = E_MAC_INT8_PJ if int8 else E_MAC_FP16_PJ
                self.parts["mac"] += mults * e * self.f * pj
                ac, _ = cfg.conv.atoms(op.input.precision)
                cbuf_rd = traffic.compute_cycles * ac * op.input.precision.bytes * 2
                cbuf_wr = traffic.dram_read_bytes + traffic.sram_read_bytes
                self.parts["cbuf"] += (cbuf_rd + cbuf_wr) * E_CBUF_PJ_PER_BYTE * self.f * pj
            else:
                out = getattr(op, "output", None)
                elems = out.n * out.c * out.h * out.w if out is not None else 0
                self.parts["post"] += elems * E_ELEM_PJ * self.f * pj
        self.parts["dram"] += traffic.dram_bytes * cfg.energy.dram_pj_per_byte * pj
        self.parts["sram"] += traffic.sram_bytes * E_SRAM_PJ_PER_BYTE * self.f * pj

    def report(self, cycles: float, cores: int = 1) -> EnergyReport:
        k = float(cores)
        parts = {n: v * k for n, v in self.parts.items()}
        static = self.cfg.energy.static_mw * 1e-3 * cycles / self.cfg.clock_hz * k
        parts["static"] = static
        return EnergyReport(
            per_op_j=parts["mac"] + parts["post"] + parts["cbuf"],
            per_byte_j=parts["dram"] + parts["sram"],
            static_j=static,
            breakdown_j=parts,
        )
