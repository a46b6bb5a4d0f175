"""GPU kernel benchmark: ResNet-50 convolution classes and a whole ResNet-50-shaped CUDA graph.

Per convolution class and batch: our best tactic (timed over every candidate tile and split-K)
against ``torch.nn.functional.conv2d`` (channels_last fp16, cuDNN) and against the measured fp16
matmul peak (torch.matmul 8192^3 in the same run). Both sides are timed the same way: a CUDA graph
of back-to-back launches on resident inputs (so small layers run out of L2 on both sides),
per-launch median over groups of replays.

Whole network: all 53 convolutions (BN folded, bias + ReLU + residual add fused), the stem max pool,
the global average pool and the FC layer, plus the NCHW fp32 -> NHWC fp16 input conversion, captured
in one CUDA graph; against torchvision resnet50 (channels_last fp16) in eager mode and captured in a
CUDA graph, with the same (random) weights, and the logits compared with an fp32 run.

Usage (needs CUDA, CuPy, torch, torchvision): python bench/gpu_kernels.py [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from gpu_peers import capture_torch_graph, time_events  # noqa: E402
from gpu_peers import environment as peers_environment  # noqa: E402

from backends.gpu.arena import Arena, BufferUse, plan_offsets  # noqa: E402
from backends.gpu.graph import LaunchSequence  # noqa: E402
from backends.gpu.kernels import conv as convk  # noqa: E402
from backends.gpu.kernels import direct  # noqa: E402
from backends.gpu.kernels.conv import (  # noqa: E402
    ConvGeometry,
    ConvTactic,
    candidate_tactics,
    conv2d,
    wgmma_usable,
)
from backends.gpu.kernels.direct import PoolGeometry  # noqa: E402
from backends.gpu.layout import round_up  # noqa: E402

RELU = (1, 0.0, 0.0)
IDENT = (0, 0.0, 0.0)

# ResNet-50 (v1.5) convolution classes: h, w, c, k, r, s, stride, pad, residual
CLASSES = {
    "stem_7x7s2_3to64_224": (224, 224, 3, 64, 7, 7, 2, 3, False),
    "3x3_64_56": (56, 56, 64, 64, 3, 3, 1, 1, False),
    "1x1_256to64_56": (56, 56, 256, 64, 1, 1, 1, 0, False),
    "1x1_64to256_56_res": (56, 56, 64, 256, 1, 1, 1, 0, True),
    "3x3s2_128_56to28": (56, 56, 128, 128, 3, 3, 2, 1, False),
    "3x3_256_14": (14, 14, 256, 256, 3, 3, 1, 1, False),
    "3x3_512_7": (7, 7, 512, 512, 3, 3, 1, 1, False),
    "1x1_2048to512_7": (7, 7, 2048, 512, 1, 1, 1, 0, False),
    "1x1_512to2048_7_res": (7, 7, 512, 2048, 1, 1, 1, 0, True),
}


# ---------------------------------------------------------------------------------------------
# timing helpers (both sides: a graph of `reps` launches, replayed in groups)


def time_ours(step, reps: int, groups: int) -> dict[str, float]:
    seq = LaunchSequence()
    for i in range(reps):
        seq.add(f"rep{i}", step)
    graph = seq.capture()
    t = graph.time_ms(replays=3, groups=groups, warmup=2)
    return {k: v * 1000 / reps for k, v in t.items()}  # us per launch


def time_torch(fn, reps: int, groups: int) -> dict[str, float]:
    """Microseconds per launch of ``fn``: a torch CUDA graph of ``reps`` launches, replayed 3 times a group."""
    graph = capture_torch_graph(fn, reps)
    t = time_events(graph.replay, 3, groups, warmup=2)  # ms per replay
    return {k: v * 1000 / reps for k, v in t.items()}


def matmul_peak_tflops() -> dict[str, Any]:
    import torch

    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.float16)
    b = torch.randn(n, n, device="cuda", dtype=torch.float16)
    for _ in range(3):
        torch.matmul(a, b)
    torch.cuda.synchronize()
    samples = []
    for _ in range(10):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(5):
            torch.matmul(a, b)
        e1.record()
        e1.synchronize()
        samples.append(2 * n**3 * 5 / (e0.elapsed_time(e1) * 1e-3) / 1e12)
    return {"tflops_median": statistics.median(samples), "tflops_max": max(samples), "shape": [n, n, n]}


# ---------------------------------------------------------------------------------------------
# tactic tuning


FAMILY_BEST: dict = {}  # (geometry, residual) -> {family: (tactic, screening median us)}


def tune(g: ConvGeometry, act, residual: bool, reps: int, groups: int, cache: dict) -> tuple[ConvTactic, dict]:
    """Time every candidate tactic for ``g``; returns the fastest and its timing (us)."""
    import cupy as cp

    key = (g, residual)
    if key in cache:
        return cache[key]
    x = cp.asarray(np.random.default_rng(0).uniform(-1, 1, (g.n, g.h, g.w, g.cp)).astype(np.float16))
    w = cp.asarray((np.random.default_rng(1).standard_normal((g.k, g.r, g.s, g.cp)) * 0.05).astype(np.float16))
    b = cp.zeros(g.kp, cp.float32)
    y = cp.empty((g.n, g.p, g.q, g.kp), cp.float16)
    res = cp.zeros_like(y) if residual else None
    # screen every candidate briefly, then time the winner as carefully as the reference
    quick = (10, 3) if g.flops < 1e9 else (3, 3)
    best = None
    family = FAMILY_BEST.setdefault(key, {})  # the fastest of each kernel family (igemm, wgmma)
    for t in candidate_tactics(g, wgmma=wgmma_usable()):
        ws = cp.empty(max(t.workspace_bytes(g), 4) // 4, cp.float32)
        tm = time_ours(lambda t=t, ws=ws: conv2d(x, w, b, y, g, t, act, res, ws), *quick)
        if best is None or tm["median"] < best[1]["median"]:
            best = (t, tm)
        head = t.tile.HEAD
        if head not in family or tm["median"] < family[head][1]:
            family[head] = (t.name, tm["median"])
    t = best[0]
    ws = cp.empty(max(t.workspace_bytes(g), 4) // 4, cp.float32)
    best = (t, time_ours(lambda: conv2d(x, w, b, y, g, t, act, res, ws), reps, groups))
    cache[key] = best
    return best


# ---------------------------------------------------------------------------------------------
# per-class convolution table


def conv_table(batches: list[int], peak: float, reps: int, groups: int, cache: dict) -> list[dict]:
    import cupy as cp
    import torch
    import torch.nn.functional as F

    rows = []
    for name, (h, w, c, k, r, s, st, pd, residual) in CLASSES.items():
        for n in batches:
            g = ConvGeometry(n, h, w, c, k, r, s, (st, st), (pd, pd))
            act = RELU
            tactic, ours = tune(g, act, residual, reps, groups, cache)
            xt = torch.randn(n, c, h, w, device="cuda", dtype=torch.float16).to(memory_format=torch.channels_last)
            wt = (torch.randn(k, c, r, s, device="cuda", dtype=torch.float16) / (c * r * s) ** 0.5).to(
                memory_format=torch.channels_last)
            ref_fn = lambda xt=xt, wt=wt, st=st, pd=pd: F.conv2d(xt, wt, None, st, pd)  # noqa: E731
            cudnn = time_torch(ref_fn, reps, groups)
            # same data through our kernel: check the answer against cuDNN
            xp = torch.zeros(n, h, w, round_up(c, 8), device="cuda", dtype=torch.float16)
            xp[..., :c] = xt.permute(0, 2, 3, 1)
            wp = torch.zeros(k, r, s, round_up(c, 8), device="cuda", dtype=torch.float16)
            wp[..., :c] = wt.permute(0, 2, 3, 1)
            ref = ref_fn().permute(0, 2, 3, 1).float()
            torch.cuda.synchronize()
            y = cp.empty((n, g.p, g.q, g.kp), cp.float16)
            ws = cp.empty(max(tactic.workspace_bytes(g), 4) // 4, cp.float32)
            conv2d(cp.from_dlpack(xp), cp.from_dlpack(wp), None, y, g, tactic, IDENT, None, ws)
            cp.cuda.Device().synchronize()
            got = torch.from_dlpack(y)[..., :k].float()
            rel = float((got - ref).norm() / ref.norm())
            tflops = g.flops / (ours["median"] * 1e-6) / 1e12
            rows.append({
                "class": name, "batch": n, "gemm_mnk": [g.m, g.k, g.r * g.s * g.c], "gflop": g.flops / 1e9,
                "tactic": tactic.name, "ours_us": ours, "cudnn_us": cudnn,
                "speedup_vs_cudnn": cudnn["median"] / ours["median"],
                "ours_tflops": tflops, "pct_of_matmul_peak": 100 * tflops / peak,
                "cudnn_pct_of_matmul_peak": 100 * g.flops / (cudnn["median"] * 1e-6) / 1e12 / peak,
                "rel_l2_vs_cudnn": rel, "epilogue": "bias+relu" + ("+residual" if residual else ""),
                "family_best_screen_us": FAMILY_BEST.get((g, residual), {}),
            })
            print(f"{name:24s} b{n:<4d} ours {ours['median']:8.1f} us  cudnn {cudnn['median']:8.1f} us  "
                  f"x{cudnn['median'] / ours['median']:.2f}  {100 * tflops / peak:5.1f}% peak  "
                  f"{tactic.name}  rel {rel:.1e}  {FAMILY_BEST.get((g, residual), {})}", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------
# ResNet-50 as one launch sequence


@dataclass
class Op:
    kind: str  # conv | pool | to_nhwc
    inputs: list[str]
    output: str
    geom: Any = None
    act: tuple = IDENT
    weights: tuple = ()  # (w, b) host arrays for convs
    extra: dict = field(default_factory=dict)


def fold_bn(conv, bn) -> tuple[np.ndarray, np.ndarray]:
    w = conv.weight.detach().float().cpu().numpy()
    gamma = bn.weight.detach().float().cpu().numpy()
    beta = bn.bias.detach().float().cpu().numpy()
    mean = bn.running_mean.detach().float().cpu().numpy()
    var = bn.running_var.detach().float().cpu().numpy()
    scale = gamma / np.sqrt(var + bn.eps)
    return w * scale[:, None, None, None], beta - mean * scale


def resnet50_ops(model, n: int) -> tuple[list[Op], dict[str, tuple]]:
    """The network as ops over named NHWC fp16 tensors; returns ops and {tensor: shape}."""
    shapes: dict[str, tuple] = {"x32": (n, 3, 224, 224), "x16": (n, 224, 224, 8)}
    ops = [Op("to_nhwc", ["x32"], "x16")]
    count = [0]

    def conv(inp: str, conv_m, bn, act, residual: str | None = None) -> str:
        _, h, w, _ = shapes[inp]
        k, c, r, s = conv_m.weight.shape
        g = ConvGeometry(n, h, w, c, k, r, s, conv_m.stride, conv_m.padding)
        out = f"t{count[0]}"
        count[0] += 1
        shapes[out] = (n, g.p, g.q, g.kp)
        ops.append(Op("conv", [inp] + ([residual] if residual else []), out, g, act, fold_bn(conv_m, bn)))
        return out

    t = conv("x16", model.conv1, model.bn1, RELU)
    _, h, w, c = shapes[t]
    pg = PoolGeometry(n, h, w, c, (h + 2 - 3) // 2 + 1, (w + 2 - 3) // 2 + 1, (3, 3), (2, 2), (1, 1), (1, 1))
    shapes["pool"] = (n, pg.p, pg.q, c)
    ops.append(Op("pool", [t], "pool", pg, extra={"average": False}))
    t = "pool"
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for blk in layer:
            ident = t
            if blk.downsample is not None:
                ident = conv(t, blk.downsample[0], blk.downsample[1], IDENT)
            a = conv(t, blk.conv1, blk.bn1, RELU)
            b = conv(a, blk.conv2, blk.bn2, RELU)
            t = conv(b, blk.conv3, blk.bn3, RELU, residual=ident)
    _, h, w, c = shapes[t]
    shapes["gap"] = (n, 1, 1, c)
    ops.append(Op("pool", [t], "gap", PoolGeometry.global_pool(n, h, w, c), extra={"average": True}))
    fc = model.fc
    g = ConvGeometry(n, 1, 1, fc.in_features, fc.out_features, 1, 1)
    shapes["logits"] = (n, 1, 1, g.kp)
    fw = fc.weight.detach().float().cpu().numpy()[:, :, None, None]
    ops.append(Op("conv", ["gap"], "logits", g, IDENT, (fw, fc.bias.detach().float().cpu().numpy())))
    return ops, shapes


def build_sequence(ops: list[Op], shapes: dict, tactics: dict) -> tuple[LaunchSequence, dict, Arena]:
    """Plan one arena from tensor lifetimes, upload weights, and record every launch."""
    import cupy as cp

    from backends.gpu.layout import pack_conv_weights, pad_bias

    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, op in enumerate(ops):
        for nm in [*op.inputs, op.output]:
            first.setdefault(nm, i)
            last[nm] = i
    last["logits"] = len(ops)
    nbytes = {nm: int(np.prod(shp)) * (4 if nm == "x32" else 2) for nm, shp in shapes.items()}
    ws_bytes = max([tactics[i].workspace_bytes(op.geom) for i, op in enumerate(ops) if op.kind == "conv"] + [4])
    uses = [BufferUse(nm, nbytes[nm], first[nm], last[nm]) for nm in shapes]
    uses.append(BufferUse("splitk_ws", ws_bytes, 0, len(ops)))
    offsets, total = plan_offsets(uses)
    arena = Arena(total)
    views = {nm: arena.view(offsets[nm], shapes[nm], cp.float32 if nm == "x32" else cp.float16) for nm in shapes}
    ws = arena.view(offsets["splitk_ws"], (ws_bytes // 4,), cp.float32)
    seq = LaunchSequence()
    for i, op in enumerate(ops):
        if op.kind == "to_nhwc":
            n, c, h, w = shapes["x32"]
            seq.add("to_nhwc", lambda n=n, c=c, hw=h * w: direct.nchw_to_nhwc(views["x32"], views["x16"], n, c, hw))
        elif op.kind == "pool":
            seq.add(op.output, lambda op=op: direct.pool2d(views[op.inputs[0]], views[op.output], op.geom,
                                                           op.extra["average"]))
        else:
            wd = cp.asarray(pack_conv_weights(op.weights[0]))
            bd = cp.asarray(pad_bias(op.weights[1], op.geom.k))
            res = views[op.inputs[1]] if len(op.inputs) > 1 else None
            seq.add(op.output, lambda op=op, wd=wd, bd=bd, res=res, t=tactics[i]: conv2d(
                views[op.inputs[0]], wd, bd, views[op.output], op.geom, t, op.act, res, ws))
    return seq, views, arena


def randomize_bn(model, seed: int = 0) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = 0.5 + torch.rand(c, generator=gen)
            m.bias.data = 0.1 * torch.randn(c, generator=gen)
            m.running_mean = 0.1 * torch.randn(c, generator=gen)
            m.running_var = 0.5 + torch.rand(c, generator=gen)


def resnet50_compare(n: int, reps: int, groups: int, cache: dict) -> dict:
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None)
    randomize_bn(model)
    model.eval()
    ops, shapes = resnet50_ops(model, n)
    t0 = time.perf_counter()
    tactics = {}
    for i, op in enumerate(ops):
        if op.kind == "conv":
            tactics[i] = tune(op.geom, op.act, len(op.inputs) > 1, reps, groups, cache)[0]
    tune_s = time.perf_counter() - t0
    seq, views, arena = build_sequence(ops, shapes, tactics)
    graph = seq.capture()

    x = torch.randn(n, 3, 224, 224, device="cuda")
    views["x32"].set(x.cpu().numpy(), stream=graph.stream)
    graph.replay()
    graph.synchronize()
    ours_logits = torch.from_dlpack(views["logits"])[:, 0, 0, :1000].float()
    ours_t = graph.time_ms(replays=20, groups=groups, warmup=10)

    with torch.no_grad():
        ref32 = model.cuda().float()(x).float()
        m16 = model.half().to(memory_format=torch.channels_last)
        x16 = x.half().to(memory_format=torch.channels_last)
        torch_logits = m16(x16).float()
        eager = time_events(lambda: m16(x16), 10, groups)
        tg = capture_torch_graph(lambda: m16(x16))
        tgs = time_events(tg.replay, 20, groups, warmup=10)

    def rel(a):
        return float((a - ref32).norm() / ref32.norm())

    convs = sum(op.kind == "conv" for op in ops)
    split = sum(1 for i, t in tactics.items() if t.grid(ops[i].geom)[2] > 1)
    return {
        "batch": n, "kernels_in_graph": len(seq.steps) + split, "convs": convs - 1, "fc": 1,
        "split_k_convs": split,
        "arena_mib": arena.nbytes / 2**20,
        "ours_graph_ms": ours_t, "torch_eager_ms": eager, "torch_eager_graph_ms": tgs,
        "ours_img_per_s": n / (ours_t["median"] * 1e-3), "torch_eager_img_per_s": n / (eager["median"] * 1e-3),
        "speedup_vs_torch_graph": tgs["median"] / ours_t["median"],
        "speedup_vs_torch_eager": eager["median"] / ours_t["median"],
        "logits_rel_l2_vs_fp32": {"ours_fp16": rel(ours_logits), "torch_fp16": rel(torch_logits)},
        "tune_seconds": tune_s,
        "tactics": {ops[i].output: t.name for i, t in tactics.items()},
    }


def environment() -> dict:
    """gpu_peers' environment plus the SM count and CUDA runtime, which the per-class peak figures depend on."""
    import cupy as cp

    env = peers_environment()
    env["sms"] = cp.cuda.runtime.getDeviceProperties(0)["multiProcessorCount"]
    env["cuda_runtime"] = cp.cuda.runtime.runtimeGetVersion()
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batch 1 and 32 only, fewer repeats")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/gpu_kernels_<gpu>.json)")
    ap.add_argument("--rn50-batches", default="1,256", help="comma-separated batches for the whole-network graph")
    ap.add_argument("--batches", default=None, help="comma-separated batches of the per-class table "
                    "(default 1,32,256; with --quick 1,32)")
    args = ap.parse_args()
    import torch

    torch.backends.cudnn.benchmark = True
    env = environment()
    print(env, flush=True)
    t0 = time.perf_counter()
    convk.compile_all()
    direct.compile_all()
    print(f"compile {time.perf_counter() - t0:.1f} s", flush=True)
    peak = matmul_peak_tflops()
    print(f"fp16 matmul 8192^3: {peak['tflops_median']:.0f} TFLOP/s", flush=True)
    reps, groups = (10, 5) if args.quick else (20, 10)
    batches = [1, 32] if args.quick else [1, 32, 256]
    if args.batches:
        batches = [int(b) for b in args.batches.split(",") if b]
    cache: dict = {}
    rows = conv_table(batches, peak["tflops_median"], reps, groups, cache)
    nets = []
    for nb in [int(b) for b in args.rn50_batches.split(",") if b]:
        r = resnet50_compare(nb, reps, groups, cache)
        nets.append(r)
        print(f"ResNet-50 b{nb}: ours {r['ours_graph_ms']['median']:.3f} ms (graph, {r['kernels_in_graph']} kernels)"
              f"  torch eager {r['torch_eager_ms']['median']:.3f} ms  eager+graph "
              f"{r['torch_eager_graph_ms']['median']:.3f} ms  logits rel err ours "
              f"{r['logits_rel_l2_vs_fp32']['ours_fp16']:.1e} torch {r['logits_rel_l2_vs_fp32']['torch_fp16']:.1e}",
              flush=True)
    result = {"environment": env, "matmul_fp16_peak": peak, "timing": {
        "method": "CUDA graph of back-to-back launches on resident inputs, CUDA events; per-launch median, "
                  "min, max over groups of replays", "reps_per_graph": reps, "groups": groups},
        "conv_classes": rows, "resnet50": nets}
    gpu = env["device"].replace("NVIDIA ", "").split()[0].lower()
    out = Path(args.out or Path(__file__).parent / "results" / f"gpu_kernels_{gpu}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], out.name).write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
