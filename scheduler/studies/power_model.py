"""Throughput, power and perf-per-watt of a network on the GPU alone and on every DLA core at once, per
power mode, and the DLA / GPU perf-per-watt ratio -- each number out of the cost model, none chosen.

Where each quantity comes from (the inputs are the cited constants of ``scheduler.platforms.jetson``
and ``dla_sim.config``; nothing here is fitted):

* throughput: the replicate policy's steady state (``scheduler.studies.replicate``): GPU time per
  layer from ``scheduler.gpu_model`` (roofline by layer class), DLA time from ``dla_sim``'s timing
  (calibrated only to the two throughput anchors), DRAM contention between the DLA cores;
* dynamic power: energy per image x images per second. GPU: full-load power per TPC-cycle from the
  per-mode rail stress power, charged for the work at its layer class's sustained rate
  (``gpu_model.busy_mac_s``) plus DRAM bytes x pJ/byte. DLA: ``dla_sim.energy`` with the
  whole-core pJ per MAC of NVIDIA's published DLA power (``dla_sim.config.jetson_mac_pj``) plus
  post-processing, SRAM and DRAM bytes;
* static power: every rail powered for the whole run (GPU, each DLA core, SoC + DRAM), also while
  another device does the work -- the board's power as a power meter on the module would read it.

The ratio is computed two ways (``ModeRow.ratio`` from the rows' perf/W; ``ratio_from_energy`` from
energy per image and static power), so a test can check that it follows from the model's parts.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.ir.dtypes import Precision
from engine.ir.network import Network

from ..cost import build_cost_model
from .replicate import ReplicateRow, replicate_report


@dataclass(frozen=True)
class DeviceRun:
    devices: tuple[str, ...]
    throughput_fps: float
    static_w: float
    dynamic_w: float
    energy_mj_per_img: dict[str, float]  # dynamic, per device copy
    per_device_fps: dict[str, float]

    @property
    def power_w(self) -> float:
        return self.static_w + self.dynamic_w

    @property
    def fps_per_w(self) -> float:
        return self.throughput_fps / self.power_w


@dataclass(frozen=True)
class ModeRow:
    mode: str
    gpu_clock_mhz: float
    gpu_tpcs: int
    dla_clock_mhz: float
    gpu_full_load_w: float
    gpu: DeviceRun
    dla: DeviceRun | None  # None: the DLA cannot run the whole network
    dla_refused: str = ""

    @property
    def ratio(self) -> float | None:
        return self.dla.fps_per_w / self.gpu.fps_per_w if self.dla else None


def _run(row: ReplicateRow, static_w: float, energy: dict[str, float]) -> DeviceRun:
    return DeviceRun(row.devices, row.throughput_fps, static_w, row.power_w - static_w,
                     {d: energy[d] for d in row.devices}, dict(row.per_device_fps))


def ratio_from_energy(r: ModeRow) -> float | None:
    """Second derivation of the ratio, from energy per image: joules per image = static W / img/s +
    the copies' dynamic mJ per image weighted by their share of the images; perf/W = 1 / that."""
    if r.dla is None:
        return None

    def j_per_img(run: DeviceRun) -> float:
        fps = sum(run.per_device_fps.values())
        dyn = sum(run.energy_mj_per_img[d] / 1e3 * f / fps for d, f in run.per_device_fps.items())
        return run.static_w / fps + dyn

    return j_per_img(r.gpu) / j_per_img(r.dla)


def power_rows(net: Network, platform: str, modes: list[str], precision: Precision = Precision.INT8) -> list[ModeRow]:
    out = []
    for m in modes:
        model = build_cost_model(net, platform, m, precision)
        rep = replicate_report(model)
        static = sum(model.graph.static_power_w.values())
        energy = {d: c.energy_mj for d, c in rep.copies.items()}
        rows = {x.devices: x for x in rep.rows}
        dlas = tuple(d for d in ("dla0", "dla1") if d in model.graph.static_power_w)
        dla = _run(rows[dlas], static, energy) if dlas in rows else None
        mode = model.mode
        out.append(ModeRow(m, mode.gpu_clock_mhz, mode.gpu_active_sms // 2, mode.dla_clock_mhz, mode.gpu_active_w,
                           _run(rows[("gpu",)], static, energy), dla, "; ".join(rep.refused.values())))
    return out


__all__ = ["DeviceRun", "ModeRow", "power_rows", "ratio_from_energy"]
