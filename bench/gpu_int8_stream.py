"""The streaming INT8 1x1 kernel (``int8_stream``) against the best tensor-core tile, layer by layer.

Why: the streaming kernel keeps a CTA's weights resident and overlaps the next tiles' loads with a
tile's epilogue, which should help 1x1 layers with short reductions if their loads and stores
were not overlapped enough. Each layer (ResNet-50, EfficientNet-B0 and MobileNetV2 1x1 shapes at
batch 256, random int8 data, a random per-channel epilogue, a residual where the network has one)
is timed over every INT8 tactic the builder times (``tactics.time_conv8``: tiles with split-K, the
pointwise kernel, the streaming tiles); the table gives the best tile and the best streaming tile
with the bytes each moves per second (input + output + residual, int8) and the int8 outputs per
second.

Usage: python bench/gpu_int8_stream.py [--batch 256] [--out bench/results/gpu_int8_stream_h100.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# name, spatial, C, K, stride, epilogue (None: linear, "relu", "silu"), residual
LAYERS = [
    ("resnet50 l1 64->256 + residual", 56, 64, 256, 1, None, True),
    ("resnet50 l1 256->64 ReLU", 56, 256, 64, 1, "relu", False),
    ("resnet50 l1 downsample 64->256", 56, 64, 256, 1, None, False),
    ("resnet50 l2.0 256->128 ReLU", 56, 256, 128, 1, "relu", False),
    ("resnet50 l2 128->512 + residual", 28, 128, 512, 1, None, True),
    ("resnet50 l2 512->128 ReLU", 28, 512, 128, 1, "relu", False),
    ("resnet50 l2 downsample 256->512 /2", 56, 256, 512, 2, None, False),
    ("resnet50 l3 256->1024 + residual", 14, 256, 1024, 1, None, True),
    ("resnet50 l3 1024->256 ReLU", 14, 1024, 256, 1, "relu", False),
    ("resnet50 l3.0 512->256 ReLU", 28, 512, 256, 1, "relu", False),
    ("efficientnet_b0 16->96 SiLU", 112, 16, 96, 1, "silu", False),
    ("mobilenet_v2 24->144 ReLU", 56, 24, 144, 1, "relu", False),
    ("mobilenet_v2 project 32->16", 112, 32, 16, 1, None, False),
]


def layer_case(h: int, c: int, k: int, stride: int, kind: str | None, residual: bool, batch: int,
               rng: np.random.Generator, r: int = 1) -> tuple[Any, Any, int]:
    """An r x r layer's geometry (padded to keep its size), a random INT8 epilogue
    (``gpu_int8_layers.epilogue8``; with a residual converter of scale 3, shift 2 where the layer has
    a residual) and its int8 row stride."""
    from gpu_int8_layers import epilogue8

    from backends.gpu.kernels import int8 as k8
    from backends.gpu.kernels.conv import ConvGeometry

    g = ConvGeometry(batch, h, h, c, k, r, r, stride=(stride, stride), pad=(r // 2, r // 2))
    epi = epilogue8(c * r * r, k, kind, rng)
    if residual:
        epi.rsc, epi.rsh = np.full(k, 3, np.int32), np.full(k, 2, np.int32)
    return g, epi, k8.cp16(k)


def row(name: str, h: int, c: int, k: int, stride: int, kind: str | None, residual: bool, batch: int,
        rng: np.random.Generator) -> dict:
    from backends.gpu import tactics
    from backends.gpu.kernels import int8 as k8

    g, epi, ldy = layer_case(h, c, k, stride, kind, residual, batch, rng)
    tiles = tactics.time_conv8(g, k8.candidate_tactics8(g, wgmma=k8.wgmma_usable8()), epi, residual, ldy)
    tiles.update(tactics.time_conv8_pointwise(g, epi, residual, ldy))
    stream = tactics.time_conv8_stream(g, epi, residual, ldy)
    mb = g.m * (k8.cp16(c) + ldy * (2 if residual else 1)) / 1e6
    out = {"layer": name, "rows": g.m, "MB": round(mb, 1), "outputs_M": round(g.m * k / 1e6, 1)}
    for label, times in (("tile", tiles), ("stream", stream)):
        if times:
            best, ms = min(times.items(), key=lambda kv: kv[1])
            out[label] = {"tactic": best, "ms": round(ms, 4), "GB_per_s": round(mb / ms, 1),
                          "G_outputs_per_s": round(g.m * k / ms / 1e6, 1)}
    out["stream_all_ms"] = {n: round(v, 4) for n, v in sorted(stream.items(), key=lambda kv: kv[1])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from gpu_peers import write_results

    rng = np.random.default_rng(0)
    rows = []
    for spec in LAYERS:
        r = row(*spec, args.batch, rng)
        rows.append(r)
        t, s = r.get("tile", {}), r.get("stream", {})
        print(f"{r['layer']:36s} tile {t.get('tactic', '-'):34s} {t.get('ms', float('nan')):.4f} ms "
              f"stream {s.get('tactic', '-'):26s} {s.get('ms', float('nan')):.4f} ms", flush=True)
    if args.out:
        write_results(args.out, rows, batch=args.batch)


if __name__ == "__main__":
    main()
