"""Per-tensor diff of the GPU backend against the reference backend on one model (a debugging aid).

Every tensor of the optimized network is made an output, the whole network runs as one GPU
partition and through ``backends.reference.execute`` on the same random input, and the first
tensors whose relative L2 error exceeds the threshold are printed with their producing layers.
Tensors whose reference values all lie below fp16's normal range (6.1e-5) are counted apart: there
the GPU and the reference may both be right and still carry no information (an fp16 underflow of
the model itself, as with random-init torchvision MobileNetV2, see bench/gpu_torchvision.py).

Usage: python bench/gpu_layer_diff.py MODEL [--batch N] [--threshold 1e-2]
  MODEL: resnet18 | resnet50 | mobilenet_v2 (engine.models), tv:NAME (a torchvision model prepared
  by bench/gpu_torchvision.py; tv-raw:NAME without the batch-norm calibration) or an .onnx path
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
FP16_TINY = 6.1e-5  # smallest normal fp16 value


def main() -> None:
    from backends import reference
    from backends.gpu.backend import GpuPartition
    from engine.builder import Builder, BuilderConfig
    from engine.ir.logger import Logger, Severity
    from engine.models import zoo
    from engine.onnx_parser import parse

    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threshold", type=float, default=1e-2)
    args = ap.parse_args()
    zoo_models = {"resnet18": lambda: zoo.resnet(18), "resnet50": lambda: zoo.resnet(50),
                  "mobilenet_v2": zoo.mobilenet_v2}
    if args.model in zoo_models:
        model = zoo_models[args.model]()
    elif args.model.startswith(("tv:", "tv-raw:")):
        model = _torchvision(args.model, args.batch)
    else:
        model = args.model
    net = Builder(Logger(Severity.ERROR)).build(parse(model, batch=args.batch), BuilderConfig(fp16=True)).network
    producer = {t: la for la in net.layers for t in la.outputs}
    net.outputs = [t for la in net.layers for t in la.outputs]
    rng = np.random.default_rng(0)
    feeds = {n: rng.uniform(0, 1, net.tensors[n].shape).astype(np.float32) for n in net.inputs}
    ref = reference.execute(net, feeds)
    got = GpuPartition(net, [la.name for la in net.layers]).create_context().execute(feeds)
    bad = tiny = 0
    for t in net.outputs:
        g, r = got[t].astype(np.float64), ref[t].astype(np.float64)
        rel = float(np.linalg.norm(g - r) / max(np.linalg.norm(r), 1e-30))
        if r.size and ref[t].dtype.kind == "f" and float(np.abs(r).max()) < FP16_TINY:
            tiny += 1
            if tiny == 1:
                print(f"UNDERFLOW {t}: every reference value is below {FP16_TINY} (first such tensor)")
        la = producer[t]
        flag = "BAD" if not rel < args.threshold else "ok "
        if flag == "BAD":
            bad += 1
        if flag == "BAD" and bad <= 12:
            print(f"{flag} {t:30s} {la.kind.value:16s} {rel:.2e} shape {r.shape} params {la.params}"[:400])
    print(f"{bad} of {len(net.outputs)} tensors over {args.threshold}; {tiny} below fp16's normal range")


def _torchvision(spec: str, batch: int):
    """ONNX model of a torchvision network (see bench/gpu_torchvision.py), exported in this process."""
    import gpu_torchvision as tv
    import onnx

    raw, name = spec.startswith("tv-raw:"), spec.split(":", 1)[1]
    if raw:
        import torch
        import torchvision

        torch.manual_seed(0)
        model = getattr(torchvision.models, tv.MODELS[name])(weights=None).eval()
    else:
        model = tv.load(name)
    return onnx.load_from_string(tv.export_onnx(model, batch))


if __name__ == "__main__":
    main()
