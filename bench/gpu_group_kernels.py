"""GPU group-kernel benchmark: LayerNorm / softmax / instance norm / reduce rows of ViT and ConvNeXt
shapes, the row-parallel mapping ``gen_group.group_kernel`` picks against one thread per row (the mapping
it replaced), and torch (fp16) where it has the same operation on the same layout.

Each kernel is timed as a CUDA graph of back-to-back launches on resident fp16 inputs (medians
over groups of replays); GB/s counts the bytes of one read of the input and one write of the
output. The outputs of both mappings are compared with each other.

Usage (needs CUDA and CuPy; torch optional): python bench/gpu_group_kernels.py [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from backends.gpu.graph import LaunchSequence  # noqa: E402
from backends.gpu.kernels import gen, gen_group  # noqa: E402
from backends.gpu.kernels.compile import get_module  # noqa: E402
from backends.gpu.lowering.slots import Slot  # noqa: E402

# name: (kind, shape (logical), reduced axes, input layout, torch peer or None)
ROWS = {
    "vit_layernorm_768": ("norm", (None, 197, 768), (2,), "linear", "layer_norm"),
    "vit_softmax_197": ("softmax", (None, 12, 197, 197), (3,), "linear", "softmax"),
    "convnext_layernorm_nhwc_96": ("norm", (None, 96, 56, 56), (1,), "nhwc", None),
    "convnext_layernorm_permuted_96": ("norm", (None, 56, 56, 96), (3,), "linear", "layer_norm"),
    "classifier_softmax_1000": ("softmax", (None, 1000), (1,), "linear", "softmax"),
    "instance_norm_nhwc_64_56": ("norm", (None, 64, 56, 56), (2, 3), "nhwc", None),
    "reduce_mean_nchw_256_14": ("reduce", (None, 256, 14, 14), (2, 3), "linear", None),
}


def _kernel(name: str, kind: str, shape: tuple, axes: tuple, x: Slot, y: Slot, lanes: int | None):
    ys = y.strides
    if kind == "reduce":
        it = iter(y.strides)
        ys = tuple(0 if d in axes else next(it) for d in range(len(shape)))
    return gen_group.group_kernel(name, shape, axes, x.operand(), gen.Operand("float16", ys), kind,
                            op="mean" if kind == "reduce" else "", eps=1e-6, span=x.elements, lanes=lanes,
                            vec=None if lanes is None else False)


def bench_row(name: str, batch: int, reps: int, groups: int) -> dict:
    import cupy as cp

    kind, shape, axes, layout, peer = ROWS[name]
    shape = (batch, *shape[1:])
    x = Slot("x", shape, "float16", layout)
    oshape = tuple(s for d, s in enumerate(shape) if d not in axes) if kind == "reduce" else shape
    y = Slot("y", oshape, "float16")
    srcs = {m: _kernel(f"k_{m}", kind, shape, axes, x, y, lanes) for m, lanes in (("new", None), ("thread", 1))}
    mod = get_module(gen.GEN_PRELUDE + "".join(s for s, _ in srcs.values()))
    xa = cp.asarray(np.random.default_rng(0).standard_normal(x.phys_shape).astype(np.float16))
    out, row = {}, {"batch": batch, "shape": shape, "axes": axes, "layout": layout}
    nbytes = 2 * (x.elements + math.prod(oshape))
    for m, (_, threads) in srcs.items():
        ya = cp.empty(oshape, cp.float16)
        fn = mod.get_function(f"k_{m}")
        grid = (max(1, -(-threads // 256)),)
        seq = LaunchSequence()
        for i in range(reps):
            seq.add(f"r{i}", lambda fn=fn, grid=grid, ya=ya: fn(grid, (256,), (xa, ya)))
        t = seq.capture().time_ms(replays=3, groups=groups, warmup=2)
        us = t["median"] * 1000 / reps
        row[m] = {"us": us, "GBps": nbytes / us / 1e3, "threads_per_row": threads // max(1, math.prod(
            s for d, s in enumerate(shape) if d not in axes))}
        out[m] = ya.get().astype(np.float32)
    row["max_abs_diff_new_vs_thread"] = float(np.abs(out["new"] - out["thread"]).max())
    row["speedup_vs_thread"] = row["thread"]["us"] / row["new"]["us"]
    if peer is not None:
        row["torch"] = _torch_peer(peer, shape, axes, reps, groups, nbytes)
    return row


def _torch_peer(peer: str, shape: tuple, axes: tuple, reps: int, groups: int, nbytes: int) -> dict | None:
    try:
        import torch
        from gpu_peers import capture_torch_graph, time_events
    except ImportError:
        return None
    xt = torch.randn(shape, device="cuda", dtype=torch.float16)
    if peer == "layer_norm":
        w = torch.randn(shape[-1], device="cuda", dtype=torch.float16)
        b = torch.randn(shape[-1], device="cuda", dtype=torch.float16)
        fn = lambda: torch.nn.functional.layer_norm(xt, (shape[-1],), w, b, 1e-6)  # noqa: E731
    else:
        fn = lambda: torch.softmax(xt, dim=axes[0])  # noqa: E731
    graph = capture_torch_graph(fn, reps)
    us = time_events(graph.replay, 3, groups, warmup=2)["median"] * 1000 / reps
    return {"us": us, "GBps": nbytes / us / 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batch 1 and 32 only, fewer repeats")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/gpu_group_kernels_<gpu>.json)")
    args = ap.parse_args()
    import cupy as cp

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    batches = [1, 32] if args.quick else [1, 32, 256]
    reps, groups = (20, 5) if args.quick else (50, 15)
    rows = []
    for name in ROWS:
        for batch in batches:
            r = bench_row(name, batch, reps, groups)
            r["name"] = name
            rows.append(r)
            peer = r.get("torch")
            print(f"{name:34s} b{batch:<4d} new {r['new']['us']:9.2f} us ({r['new']['GBps']:7.1f} GB/s)  "
                  f"thread/row {r['thread']['us']:9.2f} us  x{r['speedup_vs_thread']:6.2f}"
                  + (f"  torch {peer['us']:9.2f} us" if peer else ""), flush=True)
    gpu = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    tag = "h100" if "H100" in gpu else gpu.split()[-1].lower()
    out = Path(args.out or Path(__file__).resolve().parent / "results" / f"gpu_group_kernels_{tag}.json")
    out.write_text(json.dumps({"device": gpu, "cupy": cp.__version__, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
