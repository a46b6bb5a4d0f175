"""Grouped convolutions on the GPU: the tensor-core implicit GEMM, the direct grouped kernel
(``kernels/grouped.py``), the generated direct kernel and PyTorch (cuDNN), per layer, in one process
on one GPU.

Layers: the grouped 3x3 convolutions of ResNeXt-50 32x4d (4-channel groups at stage 1, merged in
pairs; 8, 16 and 32 channels at stages 2-4, stride 2 where a stage begins) and of RegNet-style
blocks (group widths 8, 16, 24 and 64). Each goes through hetrt's lowering as a one-layer FP16
network (bias + ReLU fused, tactic timed by ``tactics.select_tactics``): the tensor-core column
times only the tiles, the grouped-direct column only the ``gdirect`` tactics (the layer's tensor-core
tile where the direct kernel does not apply: see its launch), and the build's own choice is the
faster of the two. The generated direct kernel is the same layer with the grouped paths switched
off (here it reads the network's fp32 NCHW input; inside a network it reads NHWC fp16). Only the
convolution's launch is timed: a CUDA graph of ``reps`` back-to-back launches, medians over groups
of replays (CUDA events).
PyTorch: ``F.conv2d(groups=G)`` + ReLU, fp16 channels_last, timed the same way. Each hetrt output
is checked against PyTorch's (relative L2).

Usage (needs CUDA, CuPy, torch): python bench/gpu_grouped.py [--batches 1 32] [--reps 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from gpu_peers import capture_torch_graph, time_events  # noqa: E402

from engine.ir.dtypes import Precision  # noqa: E402
from engine.ir.layers import ActivationSpec, ActivationType, ConvolutionParams  # noqa: E402
from engine.ir.network import Network  # noqa: E402

# name: (h, w, c, k, groups, stride)
LAYERS = {
    "resnext50_s1_3x3_g32x4": (56, 56, 128, 128, 32, 1),
    "resnext50_s2_3x3_g32x8_s2": (56, 56, 256, 256, 32, 2),
    "resnext50_s2_3x3_g32x8": (28, 28, 256, 256, 32, 1),
    "resnext50_s3_3x3_g32x16": (14, 14, 512, 512, 32, 1),
    "resnext50_s4_3x3_g32x32": (7, 7, 1024, 1024, 32, 1),
    "regnet_3x3_gw8": (56, 56, 64, 64, 8, 1),
    "regnet_3x3_gw16": (28, 28, 128, 128, 8, 1),
    "regnet_3x3_gw24": (14, 14, 240, 240, 10, 1),
    "regnet_3x3_gw64": (7, 7, 1024, 1024, 16, 1),
}


def _network(n: int, h: int, w: int, c: int, k: int, groups: int, stride: int, rng: np.random.Generator) -> Network:
    net = Network("grouped")
    net.add_input("x", (n, c, h, w))
    kernel = (rng.standard_normal((k, c // groups, 3, 3)) / np.sqrt(9 * c // groups)).astype(np.float32)
    bias = rng.uniform(-0.2, 0.2, k).astype(np.float32)
    params = ConvolutionParams(num_output_maps=k, kernel=(3, 3), stride=(stride, stride), pre_padding=(1, 1),
                               post_padding=(1, 1), dilation=(1, 1), groups=groups,
                               activation=ActivationSpec(ActivationType.RELU))
    layer = net.add_layer(params, ["x"], {"kernel": kernel, "bias": bias}, name="conv")
    layer.precision = Precision.FP16
    net.mark_output(layer.outputs[0])
    return net


def _select(net: Network, mode: str) -> dict[str, str]:
    """The build's tactic for the layer with only the tiles ("tensor_core") or only the direct
    grouped kernel ("grouped_direct") timed."""
    from backends.gpu import tactics as tac

    saved = tac.time_conv, tac.time_conv_gdirect
    if mode == "tensor_core":
        tac.time_conv_gdirect = lambda *a, **k: {}
    else:
        tac.time_conv = lambda *a, **k: {}
    try:
        return tac.select_tactics(net, ["conv"])
    finally:
        tac.time_conv, tac.time_conv_gdirect = saved


def _time_layer(net: Network, x: np.ndarray, mode: str, reps: int, groups: int) -> tuple[dict, Any, str]:
    """(us per launch of the layer's convolution, its output, the launch kind) on ``mode``'s kernel:
    "tensor_core", "grouped_direct" or "direct" (the generated kernel)."""
    from backends.gpu import backend as gb
    from backends.gpu.graph import LaunchSequence
    from backends.gpu.lowering import conv as lconv

    grouped = lconv._grouped
    if mode == "direct":
        lconv._grouped = lambda lw, layer: False  # the generated kernel, as before the grouped paths
    try:
        tactics = _select(net, mode) if mode != "direct" else {}
        part = gb.GpuPartition(net, ["conv"], tactics)
    finally:
        lconv._grouped = grouped
    ctx = part.create_context()
    out = ctx.execute({"x": x})[net.outputs[0]]
    run = ctx.runs[0]
    ops = run.unit.lowered.ops
    i, op = next((i, op) for i, op in enumerate(ops) if op.label == "conv")
    mod = gb._module(run.unit.module_src) if op.kind == "gen" else None
    launch = gb._launcher(op, run.views, mod, run.views.get(f"@ws{i}"))
    seq = LaunchSequence()
    for r in range(reps):
        seq.add(f"rep{r}", launch)
    t = seq.capture(run.stream).time_ms(replays=3, groups=groups, warmup=2)
    name = op.info["tactic"].name if op.kind in ("conv", "conv_gdirect") else op.kind
    return {k: v * 1000 / reps for k, v in t.items()}, out, name


def _torch(x: np.ndarray, net: Network, stride: int, groups: int, reps: int, n_groups: int) -> tuple[dict, Any]:
    import torch
    import torch.nn.functional as F

    layer = net.layers[0]
    xt = torch.from_numpy(x).cuda().half().to(memory_format=torch.channels_last)
    wt = torch.from_numpy(layer.weights["kernel"]).cuda().half().to(memory_format=torch.channels_last)
    bt = torch.from_numpy(layer.weights["bias"]).cuda().half()

    def fn() -> Any:
        return torch.relu(F.conv2d(xt, wt, bt, stride, 1, 1, groups))

    graph = capture_torch_graph(fn, reps)
    t = time_events(graph.replay, 3, n_groups, warmup=2)
    return {k: v * 1000 / reps for k, v in t.items()}, fn().float().cpu().numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--groups", type=int, default=10)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for name, (h, w, c, k, groups, stride) in LAYERS.items():
        for n in args.batches:
            net = _network(n, h, w, c, k, groups, stride, rng)
            x = rng.uniform(-1, 1, (n, c, h, w)).astype(np.float32)
            torch_us, ref = _torch(x, net, stride, groups, args.reps, args.groups)
            row: dict[str, Any] = {"layer": name, "batch": n, "torch_us": torch_us}
            for key in ("tensor_core", "grouped_direct", "direct"):
                us, out, kind = _time_layer(net, x, key, args.reps, args.groups)
                out = np.asarray(out, np.float64)
                rel = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
                row[key] = {"us": us, "launch": kind, "rel_l2_vs_torch": rel}
            tc_us, d_us = row["tensor_core"]["us"]["median"], row["direct"]["us"]["median"]
            gd_us = row["grouped_direct"]["us"]["median"]
            row["torch_over_tensor_core"] = torch_us["median"] / tc_us
            row["torch_over_best"] = torch_us["median"] / min(tc_us, gd_us)
            rows.append(row)
            print(f"{name:28s} b{n:<3d} tensor cores {tc_us:8.1f} us ({row['tensor_core']['launch']})  "
                  f"grouped direct {gd_us:8.1f} us ({row['grouped_direct']['launch']}, rel "
                  f"{row['grouped_direct']['rel_l2_vs_torch']:.1e})  direct {d_us:8.1f} us  "
                  f"torch {torch_us['median']:8.1f} us  torch/best {row['torch_over_best']:.2f}  "
                  f"rel {row['tensor_core']['rel_l2_vs_torch']:.1e}", flush=True)
    if args.out:
        from gpu_peers import write_results

        write_results(args.out, rows)


if __name__ == "__main__":
    main()
