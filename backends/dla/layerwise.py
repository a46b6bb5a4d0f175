"""Per-layer DLA statistics in the spirit of cuDLA's layer-wise statistics: one row per fused hardware
layer (a CONV->SDP->PDP pipeline or a stand-alone unit pass) with its start and end time, the busy
time of each engine (convolution pipe, SDP, PDP, CDP, RUBIK, BDMA), DRAM and SRAM traffic, whether
the convolution runs INT8 and with 2:4 sparsity, and its MAC utilisation. Simulated (dla_sim), so
the rows can be laid beside a real Orin's dump layer by layer.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from dla_sim import simulator
from dla_sim.config import DlaConfig
from dla_sim.ops import ConvOp, Precision
from engine.ir.dtypes import Precision as IrPrecision
from engine.ir.errors import UnsupportedError
from engine.ir.network import Network

from .lower import lower
from .shuffle import lowering_units
from .support import supports

ENGINES = ("conv", "sdp", "pdp", "cdp", "rubik", "bdma")


@dataclass(frozen=True)
class LayerStat:
    index: int
    layers: tuple[str, ...]  # IR layers whose ops form this hardware layer
    ops: tuple[str, ...]
    start_us: float
    end_us: float
    busy_us: dict[str, float]
    dram_bytes: int
    sram_bytes: int
    int8: bool
    sparse_2_4: bool
    macs: int
    mac_utilisation: float  # MACs / (MACs per cycle * cycles of this hardware layer)
    bound: str


def layer_stats(network: Network, precision: IrPrecision | str, cfg: DlaConfig) -> list[LayerStat]:
    """Rows for every layer the DLA supports, lowered as one partition (each layer alone when they
    cannot share one), timed once on one core."""
    precision = IrPrecision(precision)
    names = [la.name for la in network.layers if supports(la, network, precision, cfg).ok]
    if not names:
        raise UnsupportedError(f"no layer of '{network.name}' runs on the {cfg.name} DLA")
    try:
        parts = [lower(network, names, precision, cfg, with_weights=False)]
    except UnsupportedError:
        parts = [lower(network, unit, precision, cfg, with_weights=False) for unit in lowering_units(network, names)]
    rows: list[LayerStat] = []
    t0 = 0.0
    for part in parts:
        t0 = _append_rows(rows, part.ops, part.owners, cfg, t0)
    return rows


def loadable_stats(loadables: list[bytes], cfg: DlaConfig) -> list[LayerStat]:
    """Rows for the DLA loadables of a built plan, in order (each timed once on one core)."""
    from dla_sim.loadable import Loadable

    rows: list[LayerStat] = []
    t0 = 0.0
    for blob in loadables:
        ld = Loadable.from_bytes(blob)
        owners = list(ld.meta.get("owners", [])) or [op.name for op in ld.ops]
        t0 = _append_rows(rows, list(ld.ops), owners, cfg, t0)
    return rows


def _append_rows(rows: list[LayerStat], ops: list, owners: list[str], cfg: DlaConfig, t0: float) -> float:
    """Time ``ops`` once and append one row per fused hardware layer; returns the end time (us)."""
    us = 1e6 / cfg.clock_hz
    res = simulator.simulate(ops, cfg, timing_only=True)
    groups: dict[int, list[int]] = {}
    for i, rec in enumerate(res.records):
        groups.setdefault(rec.group, []).append(i)
    for _, idx in sorted(groups.items()):
        recs = [res.records[i] for i in idx]
        gops = [ops[i] for i in idx]
        busy = {e: 0.0 for e in ENGINES}
        for rec in recs:
            busy[rec.unit] = busy.get(rec.unit, 0.0) + rec.busy * us
        convs = [op for op in gops if isinstance(op, ConvOp)]
        macs = sum(rec.macs for rec in recs)
        dur = recs[0].duration
        mpc = cfg.conv.macs(convs[0].input.precision) if convs else 0
        rows.append(LayerStat(
            index=len(rows), layers=tuple(dict.fromkeys(owners[i] for i in idx)),
            ops=tuple(op.name for op in gops), start_us=t0 + recs[0].start * us,
            end_us=t0 + (recs[0].start + dur) * us, busy_us=busy,
            dram_bytes=sum(rec.dram_bytes for rec in recs), sram_bytes=sum(rec.sram_bytes for rec in recs),
            int8=any(op.input.precision is Precision.INT8 for op in convs),
            sparse_2_4=any(op.sparse_2_4 for op in convs), macs=macs,
            mac_utilisation=macs / (mpc * dur) if convs and dur else 0.0, bound=recs[0].bound))
    return t0 + res.cycles * us


def to_csv(rows: list[LayerStat]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["index", "layers", "ops", "start_us", "end_us", *[f"{e}_busy_us" for e in ENGINES], "dram_bytes",
                "sram_bytes", "int8_conv", "sparse_2_4", "macs", "mac_utilisation", "bound"])
    for r in rows:
        w.writerow([r.index, " | ".join(r.layers), " | ".join(r.ops), f"{r.start_us:.3f}", f"{r.end_us:.3f}",
                    *[f"{r.busy_us.get(e, 0.0):.3f}" for e in ENGINES], r.dram_bytes, r.sram_bytes, int(r.int8),
                    int(r.sparse_2_4), r.macs, f"{r.mac_utilisation:.4f}", r.bound])
    return out.getvalue()


__all__ = ["ENGINES", "LayerStat", "layer_stats", "loadable_stats", "to_csv"]
