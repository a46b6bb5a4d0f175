"""Simulated vs reference numbers for the DLA simulator (spreadsheet mode and Jetson anchors).

Run:  python bench/dla_validation.py [--calibrate]
Output committed in bench/results/dla_validation.txt.  ``--calibrate`` re-derives the two DRAM-share
calibration constants of ``dla_sim.config.CALIBRATION`` from the two measured anchors.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataclasses import replace

from dla_sim import conv_core, networks, simulator  # noqa: E402
from dla_sim.config import CALIBRATION, ORIN, SPREADSHEET, XAVIER  # noqa: E402

ROWS: list[tuple[str, float, float, float, str]] = []


def row(name: str, sim: float, ref: float, tol: float, unit: str) -> None:
    ROWS.append((name, sim, ref, tol, unit))


def spreadsheet_rows() -> None:
    net = networks.resnet50(hw_modes=False)
    op = next(o for o in net.ops if o.name == "res2a_branch2b")
    row("res2a_branch2b MAC cycles (sheet)", conv_core.spreadsheet_timing(op, SPREADSHEET).compute_cycles,
        25088, 0.0, "cycles")
    r = simulator.simulate(net, SPREADSHEET, timing_only=True)
    row("ResNet-50 (sheet, 2048 MAC, 1 GHz, 10 GB/s)", r.ms_per_frame, 7.11, 0.03, "ms")
    r = simulator.simulate(networks.alexnet(hw_modes=False), SPREADSHEET, timing_only=True)
    row("AlexNet (sheet)", r.fps, 1117, 0.05, "fps")
    r = simulator.simulate(networks.googlenet(hw_modes=False), SPREADSHEET, timing_only=True)
    row("GoogLeNet (sheet)", r.fps, 818, 0.05, "fps")


def _throughput(cfg, batch: int, cores: int) -> float:
    from backends.dla.throughput import network_throughput
    from engine.model_loading import load_network

    return network_throughput(load_network("resnet50", batch), "int8", cfg, cores).fps


def anchor_rows() -> None:
    """The anchors through the builder's path: bundled ResNet-50 ONNX -> parser -> optimizer -> lowering."""
    row("ResNet-50 INT8 Orin 2 cores b2 MAXN [calibrated]", _throughput(ORIN, 2, 2), 2037, 0.05, "img/s")
    row("ResNet-50 INT8 Xavier 1 core b32 MAXN [calibrated]", _throughput(XAVIER, 32, 1), 396, 0.05, "img/s")


def calibrate() -> None:
    for key, cfg, batch, cores, target in (("xavier.dram_share", XAVIER, 32, 1, 396.0),
                                           ("orin.dram_share", ORIN, 2, 2, 2037.0)):
        lo, hi = 0.01, 1.0
        for _ in range(16):
            mid = (lo + hi) / 2
            fps = _throughput(replace(cfg, mem=replace(cfg.mem, dram_share=mid)), batch, cores)
            lo, hi = (mid, hi) if fps < target else (lo, mid)
        print(f"{key}: fitted {mid:.4f} (configured {CALIBRATION[key]})")


def main() -> int:
    if "--calibrate" in sys.argv:
        calibrate()
        return 0
    spreadsheet_rows()
    anchor_rows()
    ok = True
    print(f"{'quantity':52s} {'simulated':>12s} {'reference':>12s} {'error':>8s} {'tol':>6s}  result")
    for name, sim, ref, tol, unit in ROWS:
        err = sim / ref - 1
        passed = abs(err) <= tol + 1e-12
        ok &= passed
        print(f"{name:52s} {sim:12.2f} {ref:12.2f} {err * 100:+7.2f}% {tol * 100:5.1f}%  "
              f"{'PASS' if passed else 'FAIL'}  ({unit})")
    print()
    print("Spreadsheet rows: [PERF] formula set (DRAM-only configuration). Jetson rows: hardware model;")
    print(f"their DRAM share per core is calibrated on exactly these two anchors ({dict(CALIBRATION)}),")
    print("so they are reproduced by construction.")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
