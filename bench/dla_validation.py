"""Simulated vs reference numbers for the DLA simulator (spreadsheet mode and Jetson anchors through
the builder's path), and per network where the simulated DLA time goes (per hardware layer, MAC
utilisation): ResNet-50, MobileNetV2, ResNeXt-50 and a YOLOv5s backbone at 640x640.

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


def _networks():
    """(label, network) pairs: the bundled ResNet-50 and MobileNetV2, a ResNeXt and a detector backbone
    at detector resolution from bench/cnn_archs.py (built in memory)."""
    import tempfile

    import onnx

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import cnn_archs

    from engine.model_loading import load_network

    yield "ResNet-50 224 (bundled)", load_network("resnet50", 1)
    yield "MobileNetV2 224 (bundled)", load_network("mobilenet_v2", 1)
    with tempfile.TemporaryDirectory() as tmp:
        for label, name in (("ResNeXt-50 32x4d 224", "resnext50_32x4d"), ("YOLOv5s backbone+neck 640", "yolov5s_640")):
            path = Path(tmp) / f"{name}.onnx"
            onnx.save(cnn_archs.ARCHS[name](), path)
            yield label, load_network(str(path), 1)


def breakdown(top: int = 8) -> list[str]:
    """Per network: where the DLA time goes (per fused hardware layer) and the MAC utilisation."""
    from backends.dla.layerwise import layer_stats

    lines = ["", "Per-network breakdown: Orin DLA, one core, MAXN, INT8 planned, batch 1 (dla_sim, simulated clock)"]
    for label, net in _networks():
        rows = layer_stats(net, "int8", ORIN)
        total = rows[-1].end_us
        macs = sum(r.macs for r in rows)
        util = macs / (ORIN.conv.macs_int8 * total * ORIN.clock_mhz)
        by_bound: dict[str, float] = {}
        for r in rows:
            by_bound[r.bound] = by_bound.get(r.bound, 0.0) + (r.end_us - r.start_us)
        lines += ["", f"{label}: {total:.1f} us/image ({1e6 / total:.0f} img/s per core), {macs / 1e9:.2f} GMAC, "
                  f"network MAC utilisation {100 * util:.1f} %, {len(rows)} hardware layers",
                  "  time by limiting engine: " + ", ".join(f"{k or '-'} {100 * v / total:.0f} %" for k, v in
                                                             sorted(by_bound.items(), key=lambda kv: -kv[1])),
                  f"  {'hardware layer (first IR layer)':<44} {'us':>8} {'share':>6} {'MAC util':>8}  bound"]
        for r in sorted(rows, key=lambda r: r.start_us - r.end_us)[:top]:
            dur = r.end_us - r.start_us
            lines.append(f"  {r.layers[0][:44]:<44} {dur:8.2f} {100 * dur / total:5.1f}% "
                         f"{100 * r.mac_utilisation:7.1f}%  {r.bound}")
    return lines


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
    print("\n".join(breakdown()))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
