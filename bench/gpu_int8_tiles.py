"""The best INT8 tactic of ResNet-50's 1x1 and 3x3 layer shapes at one batch, as the builder times
them (``tactics.time_conv8`` over ``candidate_tactics8``), with output rates.

Why: the INT8 engine's time is mostly these layers, and their epilogue (bias, residual converter,
requant) is a per-output cost; this is the quick before/after check of a kernel change. Run it on
two trees on one GPU for an A/B (the epilogue parameters are random but seeded, with the bound on
|acc| a real layer has, so the layer takes the path a real engine takes: ``general`` in the output
says which).

Usage: python bench/gpu_int8_tiles.py [--batch 256] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# name, spatial, C, K, kernel size, epilogue, residual
LAYERS = [
    ("l1 64->256 +res relu", 56, 64, 256, 1, "relu", True),
    ("l1 downsample 64->256", 56, 64, 256, 1, None, False),
    ("l1 256->64 relu", 56, 256, 64, 1, "relu", False),
    ("l2 128->512 +res relu", 28, 128, 512, 1, "relu", True),
    ("l3 256->1024 +res relu", 14, 256, 1024, 1, "relu", True),
    ("l1 3x3 64->64 relu", 56, 64, 64, 3, "relu", False),
]


def layer_row(name: str, h: int, c: int, k: int, r: int, kind: str | None, residual: bool, batch: int) -> dict:
    from gpu_int8_stream import layer_case

    from backends.gpu import tactics
    from backends.gpu.kernels import int8 as k8

    g, epi, ldy = layer_case(h, c, k, 1, kind, residual, batch, np.random.default_rng(0), r)
    epi.acc_bound = np.full(k, 128 * 128 * c * r * r, np.int64)  # also on a tree whose epilogue8 sets none
    general = k8.device_params(epi)[1]
    t0 = time.time()
    times = tactics.time_conv8(g, k8.candidate_tactics8(g, wgmma=k8.wgmma_usable8()), epi, residual, ldy)
    best = sorted(times.items(), key=lambda kv: kv[1])[:3]
    outputs_m = g.m * k / 1e6  # millions; per millisecond that is billions a second
    print(f"{name:26s} general={general} " + "  ".join(f"{n} {ms:.4f}" for n, ms in best)
          + f"  ({outputs_m / best[0][1]:.0f} G outputs/s; {time.time() - t0:.0f} s)", flush=True)
    return {"layer": name, "general": general, "best_ms": [[n, round(ms, 4)] for n, ms in best],
            "G_outputs_per_s": round(outputs_m / best[0][1], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from gpu_peers import write_results

    rows = [layer_row(*spec, args.batch) for spec in LAYERS]
    if args.out:
        write_results(args.out, rows, batch=args.batch)


if __name__ == "__main__":
    main()
