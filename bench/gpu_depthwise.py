"""FP16 depthwise convolution: the generic kernel (a thread per output) against the row-tiled one
(``direct_src.depthwise_conv_row``, 2 or 4 output columns per thread) and the shared-memory tiled
one (``depthwise_conv_tile``, stride 1; ``ms_tile_QVxROWS`` per block shape) on MobileNetV2,
EfficientNet-B0 and ConvNeXt-T layer shapes, each launch alone (``gpu_peers.time_events``: CUDA
events, median of 7 groups of 10), with the column count ``direct.depthwise_columns`` chooses and a
bit-exactness check of every variant against the generic kernel. ``direct.DW_ROW_COLUMNS`` and
``direct.DW_TILE_WINDOWS`` come from this table.

    python bench/gpu_depthwise.py --out bench/results/gpu_depthwise_h100.json
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

SHAPES = [  # batch, height = width, channels, window, stride
    (256, 112, 32, 3, 1), (256, 112, 96, 3, 2), (256, 56, 144, 3, 1), (256, 56, 144, 5, 2), (256, 28, 240, 5, 1),
    (256, 28, 240, 3, 2), (256, 14, 480, 3, 1), (256, 14, 672, 5, 1), (256, 7, 1152, 5, 1), (256, 7, 960, 3, 1),
    (32, 56, 96, 7, 1), (32, 28, 192, 7, 1), (32, 14, 384, 7, 1), (32, 7, 768, 7, 1), (256, 56, 96, 7, 1),
    (256, 28, 192, 7, 1), (256, 14, 384, 7, 1), (256, 7, 768, 7, 1), (1, 56, 96, 7, 1), (1, 14, 384, 7, 1),
    (1, 112, 32, 3, 1), (1, 56, 144, 3, 1),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import cupy as cp
    from gpu_peers import time_events, write_results

    from backends.gpu.kernels import direct
    from backends.gpu.kernels.conv import ConvGeometry

    chooser, tiler, shaper = direct.depthwise_columns, direct.depthwise_tiled, direct.depthwise_tile_shape
    every = [(s, sw) for s in (3, 5, 7) for sw in (1, 2)]
    direct._NAMES = ([f"depthwise_conv_row<{s}, {sw}, {qv}>" for s, sw in every for qv in (2, 4)]
                     + [f"depthwise_conv_tile<{s}, {qv}, {rows}>" for s in direct.DW_TILE_WINDOWS
                        for qv, rows in direct.DW_TILE_SHAPES])
    table = []
    try:
        for n, h, c, r, st in SHAPES:
            g = ConvGeometry(n, h, h, c, c, r, r, (st, st), (r // 2, r // 2))
            rng = np.random.default_rng(0)
            x = cp.asarray(rng.uniform(-1, 1, (n, h, h, g.cp)).astype(np.float16))
            w = cp.asarray(rng.uniform(-1, 1, (r, r, g.cp)).astype(np.float16))
            b, y = cp.zeros(g.cp, cp.float32), cp.empty((n, g.p, g.q, g.cp), cp.float16)
            row = {"shape": [n, h, c, r, st],
                   "chosen": "tile_{}x{}".format(*shaper(g)) if tiler(g) else chooser(g)}
            variants: list = [1, 2] + ([] if r == 7 else [4])  # 4 columns of a 7-wide window spill
            if tiler(g):
                variants += [f"tile_{qv}x{rows}" for qv, rows in direct.DW_TILE_SHAPES]
            outs = {}
            for v in variants:
                tile = tuple(int(t) for t in v[5:].split("x")) if isinstance(v, str) else None
                direct.depthwise_columns = lambda geom, q=v: q if isinstance(q, int) else 1
                direct.depthwise_tiled = lambda geom, t=tile: t is not None
                direct.depthwise_tile_shape = lambda geom, t=tile: t
                launch = functools.partial(direct.depthwise_conv, x, w, b, y, g, (1, 0.0, 0.0))
                ms = time_events(launch, reps=10, groups=7)["median"]  # CUDA events on the default stream
                outs[v] = y.copy()
                row[f"ms_{v}"] = round(ms, 4)
                row[f"TBs_{v}"] = round((n * h * h + n * g.p * g.q) * g.cp * 2 / (ms * 1e-3) / 1e12, 3)
            row["bitexact"] = all(bool((o.view(cp.uint16) == outs[1].view(cp.uint16)).all()) for o in outs.values())
            table.append(row)
            print(json.dumps(row), flush=True)
    finally:
        direct.depthwise_columns, direct.depthwise_tiled, direct.depthwise_tile_shape = chooser, tiler, shaper
    if args.out:
        write_results(args.out, table)


if __name__ == "__main__":
    main()
