"""Power model report: ResNet-50 INT8 (bundled model) on Jetson AGX Orin 64GB at every power mode.

Prints, per mode, the GPU's full-load power (energy per TPC-cycle x TPCs x clock), the DLA core's
rail voltage at the mode's DLA clock (the platform's DVFS curve) and full-load power (static +
whole-core pJ per MAC at that voltage x MAC array x clock, i.e. ~ f x V^2), GPU-only and 2 x DLA
throughput, average board power, perf/W and the DLA / GPU perf-per-watt ratio (computed two ways),
with where each number comes from. Writes bench/results/power_model.json.

    PYTHONPATH=$PWD python bench/power_model.py [--model resnet50] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dla_sim.config import ORIN
from engine.ir.fileio import atomic_write_text
from engine.model_loading import load_network
from scheduler.dla_source import mode_energy
from scheduler.platforms import PLATFORMS
from scheduler.platforms.jetson import ORIN_DLA_DVFS, orin_gpu_energy_per_tpc_cycle
from scheduler.studies.power_model import ModeRow, power_rows, ratio_from_energy

MODES = ["15W", "30W", "50W", "MAXN"]
SOURCES = {
    "gpu_full_load_w": "energy per TPC-cycle ([FORUM] VDD_GPU_SOC stress power per mode - GPU static [U]) "
                       "x active TPCs x GPU clock ([NVP]); scheduler/platforms/jetson.py",
    "dla_full_load_w_per_core": "static 0.15 W [U] + pJ/MAC(V) x 8192 INT8 MACs x DLA clock; pJ/MAC at the top "
                                "clock = NVIDIA's Xavier DLA 5 INT8 TOPS at 1.5 W per core [BLOG] scaled by C*V^2 "
                                "to 8 nm / 0.7 V (dla_sim/config.py jetson_mac_pj), then x (V/0.7 V)^2 at the mode",
    "dla_vdd": "DLA rail voltage at the mode's DLA clock: linear 0.55 V @ 614.4 MHz -> 0.70 V @ 1600 MHz [U] "
               "(scheduler/platforms/jetson.py ORIN_DLA_DVFS); DLA clocks per mode: nvpmodel [NVPCONF]",
    "throughput": "replicate policy steady state: GPU roofline by layer class (scheduler/gpu_model.py), "
                  "dla_sim timing (calibrated only to dla.md §3 anchors), DRAM contention",
    "dynamic_w": "dynamic energy per image (GPU: full-load power x work at class rate + DRAM bytes x 5 pJ/bit; "
                 "DLA: dla_sim.energy pJ/MAC + post + SRAM + DRAM bytes) x images per second",
    "static_w": "every rail for the whole run: GPU static + 2 DLA static + SoC/DRAM idle [U]",
    "ratio": "(2xDLA img/s/W) / (GPU img/s/W); checked against 1/(J per image) from per-copy energies",
}


def dla_full_load_w(mode: str) -> float:
    e = mode_energy(ORIN.energy, PLATFORMS["orin-agx-64gb"].mode(mode))
    return e.static_mw / 1e3 + e.mac_pj_int8 * 1e-12 * ORIN.conv.macs_int8 * ORIN.clocks_mhz[mode] * 1e6


def dla_vdd(mode: str) -> float:
    return ORIN_DLA_DVFS.volts(ORIN.clocks_mhz[mode])


def row_json(r: ModeRow) -> dict:
    def run(x):
        return None if x is None else {
            "devices": list(x.devices), "throughput_fps": x.throughput_fps, "static_w": x.static_w,
            "dynamic_w": x.dynamic_w, "power_w": x.power_w, "fps_per_w": x.fps_per_w,
            "energy_mj_per_img": x.energy_mj_per_img, "per_device_fps": x.per_device_fps}
    return {"mode": r.mode, "gpu_clock_mhz": r.gpu_clock_mhz, "gpu_tpcs": r.gpu_tpcs,
            "gpu_nj_per_tpc_cycle": orin_gpu_energy_per_tpc_cycle(r.mode) * 1e9,
            "gpu_full_load_w": r.gpu_full_load_w, "dla_clock_mhz": r.dla_clock_mhz, "dla_vdd": dla_vdd(r.mode),
            "dla_mac_pj_int8": mode_energy(ORIN.energy, PLATFORMS["orin-agx-64gb"].mode(r.mode)).mac_pj_int8,
            "dla_full_load_w_per_core": dla_full_load_w(r.mode), "gpu": run(r.gpu), "dla": run(r.dla),
            "dla_refused": r.dla_refused, "ratio": r.ratio, "ratio_from_energy": ratio_from_energy(r)}


def format_rows(model: str, rows: list[ModeRow]) -> str:
    e = ORIN.energy
    lines = [f"Power model: {model} INT8 on orin-agx-64gb (simulated; no measured power is an input)",
             f"  DLA whole-core energy at the top clock ({e.vdd:.2f} V): {e.mac_pj_int8:.4f} pJ per INT8 MAC, "
             f"{e.mac_pj_fp16:.4f} per FP16 MAC, x (V/{e.vdd:.2f} V)^2 per mode; "
             f"static {e.static_mw / 1e3:.2f} W per core",
             f"  {'mode':<5} {'GPU MHz':>7} {'TPC':>3} {'nJ/TPC-cyc':>10} {'GPU full W':>10} {'DLA MHz':>7} "
             f"{'DLA V':>5} {'DLA full W':>10} | {'GPU img/s':>9} {'W':>6} {'img/s/W':>7} | "
             f"{'2xDLA img/s':>11} {'W':>6} {'img/s/W':>7} | {'DLA/GPU':>7} {'(check)':>7}"]
    for r in rows:
        g, d = r.gpu, r.dla
        dla = (f"{d.throughput_fps:11.0f} {d.power_w:6.2f} {d.fps_per_w:7.1f} | {r.ratio:7.2f} "
               f"{ratio_from_energy(r):7.2f}") if d else f"refused: {r.dla_refused}"
        lines.append(f"  {r.mode:<5} {r.gpu_clock_mhz:7.1f} {r.gpu_tpcs:3d} "
                     f"{orin_gpu_energy_per_tpc_cycle(r.mode) * 1e9:10.3f} {r.gpu_full_load_w:10.2f} "
                     f"{r.dla_clock_mhz:7.1f} {dla_vdd(r.mode):5.3f} {dla_full_load_w(r.mode):10.2f} | "
                     f"{g.throughput_fps:9.0f} "
                     f"{g.power_w:6.2f} {g.fps_per_w:7.1f} | {dla}")
    lines.append("  where each number comes from:")
    lines += [f"    {k}: {v}" for k, v in SOURCES.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "power_model.json"))
    args = ap.parse_args(argv)
    rows = power_rows(load_network(args.model), "orin-agx-64gb", MODES)
    print(format_rows(args.model, rows))
    doc = {"model": args.model, "platform": "orin-agx-64gb", "precision": "int8", "sources": SOURCES,
           "modes": [row_json(r) for r in rows]}
    atomic_write_text(args.json, json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
