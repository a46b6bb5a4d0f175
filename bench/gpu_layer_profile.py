"""Per-layer-class GPU time: hetrt against PyTorch fp16 on the same torchvision networks.

hetrt's side goes through the public API only: ONNX -> builder (--fp16, tactic timing) -> plan ->
runtime -> an execution context with a ``Profiler`` attached, under which each GPU launch is timed
on its own between CUDA events (trtexec's --dumpProfile view), behind a kernel that holds the
stream while the host enqueues, so the events time the device rather than the launches. Every
launch is attributed to its layer in the engine's optimized network, and layers are grouped by
class (group-1 convolution, grouped convolution, depthwise convolution, GEMM (fully connected),
batched matmul, normalization, softmax, reduce, transpose/shuffle, pointwise, pooling, layout
conversions).

PyTorch's side is the eager fp16 channels_last model with CUDA events recorded by forward hooks
around every leaf module, each forward held behind the same kind of kernel, grouped into the same
classes (Conv2d by its groups, Linear, LayerNorm, softmax inside attention is counted under
"attention" with its matmuls: PyTorch's MultiheadAttention is one module). Both sides include the
gaps between launches within a layer.

Fraction of peak: tensor-core classes report achieved TFLOP/s (2 x multiply-adds of the true
channel counts) and its fraction of the H100 SXM's dense fp16 peak (989.4 TFLOP/s, NVIDIA H100
datasheet); memory-bound classes report the bytes they must read and write (input + output
tensors, fp16) per second against the HBM3 peak (3.35 TB/s, same datasheet).

Usage: python bench/gpu_layer_profile.py [--models convnext_tiny ...] [--batch 32] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_peers import build_engine, environment  # noqa: E402
from gpu_torchvision import export_onnx, load  # noqa: E402

TOP_LAYERS = 40  # the per-layer list kept beside the class sums
PEAK_TFLOPS_FP16 = 989.4  # H100 SXM5 dense FP16 tensor core (NVIDIA H100 datasheet)
PEAK_TBPS = 3.35  # H100 SXM5 HBM3 (NVIDIA H100 datasheet)
HOLD_CLOCK_HZ = 2.0e9  # torch.cuda._sleep counts SM cycles; at or above the H100's 1.98 GHz boost
TENSOR_CORE_CLASSES = ("conv", "grouped conv", "gemm", "batched matmul", "attention")


def layer_class(layer: Any, network: Any) -> str:
    """The class of an IR layer, as the per-layer table groups them."""
    kind = layer.kind.value
    if kind == "convolution":
        groups = layer.params.groups
        c = network.tensors[layer.inputs[0]].shape[1]
        return "conv" if groups == 1 else "depthwise conv" if groups == c else "grouped conv"
    return {"fully_connected": "gemm", "matrix_multiply": "batched matmul", "normalization": "normalization",
            "softmax": "softmax", "reduce": "reduce", "shuffle": "transpose/shuffle", "pooling": "pooling",
            "activation": "pointwise", "elementwise": "pointwise", "unary": "pointwise", "scale": "pointwise",
            "pointwise": "pointwise"}.get(kind, kind)


def launch_layers(label: str, by_name: dict[str, Any]) -> list[Any]:
    """The layers one launch runs: its label is a layer's name, or names joined by ' + ' (a block
    the GPU lowering fuses, such as attention); [] when the label names no layer."""
    if label in by_name:
        return [by_name[label]]
    layers, pending = [], []
    for part in label.split(" + "):
        pending.append(part)
        joined = " + ".join(pending)
        if joined in by_name:
            layers.append(by_name[joined])
            pending = []
    return layers if not pending else []


GEMM_SHAPED = ("convolution", "fully_connected", "matrix_multiply")


def launch_class(layers: list[Any], network: Any) -> str:
    """The class of one launch: attention where it holds a softmax between products; else that of
    its first GEMM-shaped layer (a whole MLP in one kernel is GEMM work with its activation and
    layer scale fused), else of its last layer."""
    if not layers:
        return "layout/other"
    kinds = {la.kind.value for la in layers}
    if len(layers) > 1 and {"softmax", "matrix_multiply"} <= kinds:
        return "attention"
    gemm = next((la for la in layers if la.kind.value in GEMM_SHAPED), None)
    return layer_class(gemm if gemm is not None else layers[-1], network)


def attention_projections(network: Any, attention_layers: set[str]) -> set[str]:
    """The fully connected layers that project an attention block's input or output: their output
    reaches a layer of a fused attention launch, or their input comes from one, through data
    movement only. PyTorch's MultiheadAttention module includes both projections, so they are
    counted with the attention on hetrt's side too."""
    movement = {"shuffle", "gather", "slice", "split"}
    consumers, producers = network.consumers(), network.producers()
    found = set()
    for la in network.layers:
        if la.kind.value != "fully_connected":
            continue
        frontier = list(la.outputs)
        for _ in range(8):  # forward through movement
            nxt = []
            for t in frontier:
                for c in consumers.get(t, []):
                    if c.name in attention_layers:
                        found.add(la.name)
                    elif c.kind.value in movement:
                        nxt += c.outputs
            frontier = nxt
        t = la.inputs[0]
        for _ in range(8):  # backward through movement
            p = producers.get(t)
            if p is None:
                break
            if p.name in attention_layers:
                found.add(la.name)
                break
            if p.kind.value not in movement:
                break
            t = p.inputs[0]
    return found


def layer_work(layer: Any, network: Any) -> tuple[float, float]:
    """(flops, fp16 bytes moved) of one layer: 2 x MACs for the GEMM-shaped ones; inputs + outputs."""
    shapes = [network.tensors[t].shape for t in list(layer.inputs) + list(layer.outputs)]
    nbytes = 2.0 * sum(math.prod(s) for s in shapes)
    kind = layer.kind.value
    out = network.tensors[layer.outputs[0]].shape
    if kind == "convolution":
        k = layer.weights["kernel"]
        return 2.0 * math.prod(out) * math.prod(k.shape[1:]), nbytes
    if kind == "fully_connected":
        return 2.0 * math.prod(out) * layer.weights["kernel"].shape[1], nbytes
    if kind == "matrix_multiply":
        a = network.tensors[layer.inputs[0]].shape
        kdim = a[-2] if layer.params.transpose_a else a[-1]
        return 2.0 * math.prod(out) * kdim, nbytes
    return 0.0, nbytes


def hetrt_profile(onnx_bytes: bytes, batch: int, x: Any, runs: int) -> dict[str, Any]:
    from engine.builder import BuilderConfig
    from engine.runtime import Profiler

    cache = str(Path(tempfile.mkdtemp()) / "timing_cache.json")
    engine, ctx, _ = build_engine(onnx_bytes, BuilderConfig(fp16=True, batch=batch, timing_cache=cache))
    feeds = {engine.input_names[0]: x}
    ctx.execute(feeds)  # warm-up
    prof = Profiler()
    ctx.profiler = prof
    for _ in range(runs):
        ctx.execute(feeds)
    ctx.profiler = None
    network = engine.network
    by_name = {la.name: la for la in network.layers}
    classes: dict[str, dict[str, float]] = defaultdict(lambda: {"ms": 0.0, "flops": 0.0, "bytes": 0.0, "layers": 0})
    slowest = []
    records = [(rec, launch_layers(rec["name"], by_name)) for rec in prof.to_dict()]
    in_attention = {la.name for _, layers in records if launch_class(layers, network) == "attention" for la in layers}
    projections = attention_projections(network, in_attention)
    for rec, layers in records:
        cls = launch_class(layers, network)
        if len(layers) == 1 and layers[0].name in projections:
            cls = "attention"
        c = classes[cls]
        c["ms"] += rec["medianMs"]
        c["layers"] += 1
        work = [layer_work(la, network) for la in layers]
        flops = sum(f for f, _ in work)
        nbytes = work[0][1] if len(work) == 1 else 0.0  # a fused block's traffic is not its layers' sum
        c["flops"] += flops
        c["bytes"] += nbytes
        slowest.append({"name": rec["name"], "class": cls, "ms": rec["medianMs"],
                        "tflops": flops / rec["medianMs"] / 1e9 if flops and rec["medianMs"] else None,
                        "tb_s": nbytes / rec["medianMs"] / 1e9 if nbytes and rec["medianMs"] else None})
    slowest.sort(key=lambda r: -r["ms"])
    return {"classes": dict(classes), "slowest_layers": slowest[:TOP_LAYERS]}


def torch_profile(model: Any, x: Any, runs: int) -> dict[str, float]:
    """Median per-class milliseconds of PyTorch eager fp16 channels_last, from forward-hook events
    (device times: each forward starts behind a kernel that holds the stream while the host
    enqueues it)."""
    import statistics

    import torch

    model = model.half().to(memory_format=torch.channels_last)
    x = x.half().to(memory_format=torch.channels_last)
    pending: list[tuple[str, Any, Any]] = []
    starts: dict[int, Any] = {}

    def torch_class(m: Any) -> str | None:
        if isinstance(m, torch.nn.Conv2d):
            return "conv" if m.groups == 1 else "depthwise conv" if m.groups == m.in_channels else "grouped conv"
        if isinstance(m, torch.nn.MultiheadAttention):
            return "attention"
        if isinstance(m, torch.nn.Linear):
            return "gemm"
        if isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.BatchNorm2d)):
            return "normalization"
        if isinstance(m, (torch.nn.MaxPool2d, torch.nn.AvgPool2d, torch.nn.AdaptiveAvgPool2d)):
            return "pooling"
        if isinstance(m, (torch.nn.ReLU, torch.nn.GELU, torch.nn.SiLU, torch.nn.Hardswish, torch.nn.ReLU6,
                          torch.nn.Sigmoid, torch.nn.Hardsigmoid)):
            return "pointwise"
        return None

    hooks = []
    inside_attention = {id(sub) for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)
                        for sub in m.modules() if sub is not m}  # counted with their attention module
    for m in model.modules():
        cls = torch_class(m)
        if cls is None or id(m) in inside_attention:
            continue

        def pre(mod, _inp, cls=cls):
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            starts[id(mod)] = ev

        def post(mod, _inp, _out, cls=cls):
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            pending.append((cls, starts.pop(id(mod)), ev))

        hooks += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    per_run: list[dict[str, float]] = []
    with torch.inference_mode():
        model(x)
        torch.cuda.synchronize()
        started = time.perf_counter()
        model(x)  # the host's time to enqueue one forward with its hooks
        host_s = time.perf_counter() - started
        torch.cuda.synchronize()
        for _ in range(runs):
            pending.clear()
            # hold the stream as hetrt's profiler does, so the events time the device, not the launches
            torch.cuda._sleep(int((2.0 * host_s + 1e-3) * HOLD_CLOCK_HZ))
            model(x)
            torch.cuda.synchronize()
            totals: dict[str, float] = defaultdict(float)
            for cls, a, b in pending:
                totals[cls] += a.elapsed_time(b)
            per_run.append(totals)
    for h in hooks:
        h.remove()
    keys = {k for r in per_run for k in r}
    return {k: statistics.median(r.get(k, 0.0) for r in per_run) for k in keys}


def compare(h: dict[str, Any], t: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    for cls in sorted(set(h) | set(t)):
        hc = h.get(cls, {"ms": 0.0, "flops": 0.0, "bytes": 0.0, "layers": 0})
        row: dict[str, Any] = {"class": cls, "hetrt_ms": round(hc["ms"], 4), "layers": hc["layers"],
                               "torch_fp16_ms": round(t[cls], 4) if cls in t else None}
        if cls in t and t[cls] > 0 and hc["ms"] > 0:
            row["ratio_hetrt_over_torch"] = round(hc["ms"] / t[cls], 3)
        if hc["ms"] > 0:
            s = hc["ms"] * 1e-3
            if cls in TENSOR_CORE_CLASSES and hc["flops"]:
                row["tflops"] = round(hc["flops"] / s / 1e12, 1)
                row["fraction_of_peak"] = round(hc["flops"] / s / 1e12 / PEAK_TFLOPS_FP16, 3)
            elif hc["bytes"]:
                row["tb_per_s"] = round(hc["bytes"] / s / 1e12, 3)
                row["fraction_of_peak"] = round(hc["bytes"] / s / 1e12 / PEAK_TBPS, 3)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["resnext50_32x4d", "convnext_tiny", "vit_b_16"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import torch

    env = environment()
    result: dict[str, Any] = {"environment": env, "batch": args.batch, "models": {}}
    out = Path(args.out or Path(__file__).parent / "results" / "gpu_layer_profile.json")
    for name in args.models:
        try:
            model = load(name, "cuda")
            onnx_bytes = export_onnx(model, args.batch)
            x = torch.rand(args.batch, 3, 224, 224)
            h = hetrt_profile(onnx_bytes, args.batch, x.numpy(), args.runs)
            t = torch_profile(model, x.cuda(), args.runs)
            result["models"][name] = compare(h["classes"], t)
            result.setdefault("slowest_layers", {})[name] = h["slowest_layers"]
        except Exception as e:  # one failing model must not lose the others
            import traceback

            traceback.print_exc()
            result["models"][name] = f"failed: {type(e).__name__}: {e}"
        print(name, json.dumps(result["models"][name], indent=1), flush=True)
        out.write_text(json.dumps(result, indent=1, default=str))
        torch.cuda.empty_cache()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
