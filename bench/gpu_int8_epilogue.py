"""How much of an INT8 1x1 layer is its integer epilogue: the tile kernel timed as it is, and with
its per-row arithmetic replaced by a store of the same bytes' XOR (a probe, never a result).

Why: every INT8 1x1 layer of ResNet-50 runs at 240-540 G int8 outputs a second whatever the bytes
it moves (``bench/results/gpu_int8_stream_h100.json``), and a persistent kernel that overlaps
loads with epilogues gets the same rate, so the per-output work is the suspect. Here the same
launches (grid, block, shared memory, arguments) run from three module texts:

* ``as built``: ``int8_src`` / the sm_90a text as the builder compiles them;
* ``no requant``: ``sum4`` kept (bias, residual converter), ``requant4`` replaced by packing the
  low bytes of the four sums;
* ``no epilogue``: both replaced by packing the low bytes of the int32 accumulators XOR the residual
  word (the loads and stores stay, so the bytes moved are the same);
* ``no residual load``: the arithmetic as built, the residual word taken from the row index instead
  of memory (a layer with a residual only): its latency and bytes against the arithmetic;
* ``no mainloop``: no input or weight loads and no MMAs, the accumulators taken from the block and
  thread indices: the epilogue (smem round trip, residual loads, arithmetic, stores) on its own.

The probes' outputs are wrong by design; only their times are used. Each variant is timed over the
layer's best tactics (the builder's timing) with ``tactics._time_launches``: CUDA-graph replays of
10 launches. Differences between the rows are the cost of the removed steps; "no mainloop" against "as built"
says how much of the layer the epilogue alone takes.

Usage: python bench/gpu_int8_epilogue.py [--batch 256] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SUM_AND_REQUANT = """    sum4<RES, GEN>(v, a, e, rv[u]);
    *reinterpret_cast<u32*>(y + u * ystep) = requant4<RELU, GEN>(v, e, clipq);"""
NO_REQUANT = """    sum4<RES, GEN>(v, a, e, rv[u]);
    *reinterpret_cast<u32*>(y + u * ystep) =
        (u32)(v[0] & 0xff) | (u32)(v[1] & 0xff) << 8 | (u32)(v[2] & 0xff) << 16 | (u32)v[3] << 24;"""
NO_EPILOGUE = """    *reinterpret_cast<u32*>(y + u * ystep) =
        ((u32)(a[0] & 0xff) | (u32)(a[1] & 0xff) << 8 | (u32)(a[2] & 0xff) << 16 | (u32)a[3] << 24) ^ rv[u];"""
RESIDUAL_LOAD = "    rv[u] = RES && ok ? __ldg(reinterpret_cast<const unsigned int*>(res + u * rstep)) : 0u;"
NO_RESIDUAL_LOAD = """    rv[u] = RES && ok ? (u32)(u * 0x01010101u) : 0u;"""
MAINLOOP = """  IG::mainloop(acc, x + grp * C, w + (size_t)goff * (R * S * C), reinterpret_cast<i8*>(smem8),
               {N, H, W, C, K, P, Q, R, S, sh, sw, ph, pw, dh, dw, G * C}, n0, kps, IgemmNoHook());"""
NO_MAINLOOP = """  for (int i = 0; i < MI * NI * 4; ++i)
    (&acc[0][0][0])[i] = (int)((blockIdx.x * 977u + tid * 31u + i) % 4093u) - 2046;"""
# label: the (text, replacement) pairs of its module
VARIANTS: dict[str, tuple[tuple[str, str], ...]] = {
    "as built": (),
    "no requant": ((SUM_AND_REQUANT, NO_REQUANT),),
    "no epilogue": ((SUM_AND_REQUANT, NO_EPILOGUE),),
    "no residual load": ((RESIDUAL_LOAD, NO_RESIDUAL_LOAD),),
    "no mainloop": ((MAINLOOP, NO_MAINLOOP),),
}

# name, spatial, C, K, stride, epilogue, residual
LAYERS = [
    ("resnet50 l1 64->256 + residual, ReLU", 56, 64, 256, 1, "relu", True),
    ("resnet50 l1 downsample 64->256", 56, 64, 256, 1, None, False),
    ("resnet50 l1 256->64 ReLU", 56, 256, 64, 1, "relu", False),
    ("resnet50 l2 128->512 + residual, ReLU", 28, 128, 512, 1, "relu", True),
]


def variant_source(source: str, edits: tuple[tuple[str, str], ...]) -> str:
    """``source`` with each text of ``edits`` (once in it) replaced; raises where one is not there."""
    for old, new in edits:
        if source.count(old) != 1:
            raise RuntimeError("the epilogue text changed: update the probe's texts")
        source = source.replace(old, new)
    return source


def time_layer(name: str, h: int, c: int, k: int, stride: int, kind: str | None, residual: bool, batch: int,
               rng: np.random.Generator) -> dict[str, Any]:
    import cupy as cp
    from gpu_int8_stream import layer_case

    from backends.gpu import tactics
    from backends.gpu.kernels import int8 as k8
    from backends.gpu.kernels.conv import enqueue

    g, epi, ldy = layer_case(h, c, k, stride, kind, residual, batch, rng)
    cands = k8.candidate_tactics8(g, wgmma=k8.wgmma_usable8())
    best = sorted(tactics.time_conv8(g, cands, epi, residual, ldy).items(), key=lambda kv: kv[1])[:3]
    x = cp.asarray(rng.integers(-128, 128, (g.n, g.h, g.w, k8.cp16(c)), dtype=np.int8))
    w = cp.asarray(rng.integers(-128, 128, (k, 1, 1, k8.cp16(c)), dtype=np.int8))
    res = cp.asarray(rng.integers(-128, 128, (g.m, ldy), dtype=np.int8)) if residual else None
    y = cp.empty((g.m, ldy), cp.int8)
    dev = k8.DeviceEpilogue.upload(epi)
    by_name = {t.name: t for t in cands}
    out: dict[str, Any] = {"layer": name, "outputs_M": round(g.m * k / 1e6, 1), "tactics": {}}
    for tname, _ in best:
        t = by_name[tname]
        ws = cp.empty(max(t.workspace_bytes(g), 4) // 4, cp.int32)
        source, names, arch = k8.module_of8(t.tile)
        row = {}
        for label, edits in VARIANTS.items():
            if label == "no residual load" and not residual:
                continue
            launches = k8.conv2d_s8_launches(x, w, y, g, t, dev, res, ws, ldy)
            module = (variant_source(source, edits), names, arch)
            ms = tactics._time_launches([t], lambda _t, la=launches, mo=module: enqueue(la, *mo), 10).get(t.name)
            row[label] = None if ms is None else round(ms, 4)
        out["tactics"][tname] = row
        print(f"{name:40s} {tname:34s} " + "  ".join(f"{lb} {v:.4f}" for lb, v in row.items() if v is not None),
              flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from gpu_peers import write_results

    rng = np.random.default_rng(0)
    rows = [time_layer(*spec, args.batch, rng) for spec in LAYERS]
    if args.out:
        write_results(args.out, rows, batch=args.batch)


if __name__ == "__main__":
    main()
