"""Per-tensor diff of the GPU backend against the reference backend on one model (a debugging aid).

Every tensor of the optimized network is made an output, the whole network runs as one GPU
partition and through ``backends.reference.execute`` on the same random input, and the first
tensors whose relative L2 error exceeds the threshold are printed with their producing layers.

Usage: python bench/gpu_layer_diff.py MODEL [--batch N] [--threshold 1e-2]
  MODEL: resnet18 | resnet50 | mobilenet_v2 (engine.models) or a path to an .onnx file
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def main() -> None:
    from backends import reference
    from backends.gpu.backend import GpuPartition
    from engine.builder import Builder, BuilderConfig
    from engine.logger import Logger, Severity
    from engine.models import zoo
    from engine.onnx_parser import parse

    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threshold", type=float, default=1e-2)
    args = ap.parse_args()
    zoo_models = {"resnet18": lambda: zoo.resnet(18), "resnet50": lambda: zoo.resnet(50),
                  "mobilenet_v2": zoo.mobilenet_v2}
    model = zoo_models[args.model]() if args.model in zoo_models else args.model
    net = Builder(Logger(Severity.ERROR)).build(parse(model, batch=args.batch), BuilderConfig(fp16=True)).network
    producer = {t: la for la in net.layers for t in la.outputs}
    net.outputs = [t for la in net.layers for t in la.outputs]
    rng = np.random.default_rng(0)
    feeds = {n: rng.uniform(0, 1, net.tensors[n].shape).astype(np.float32) for n in net.inputs}
    ref = reference.execute(net, feeds)
    got = GpuPartition(net, [la.name for la in net.layers]).create_context().execute(feeds)
    bad = 0
    for t in net.outputs:
        g, r = got[t].astype(np.float64), ref[t].astype(np.float64)
        rel = float(np.linalg.norm(g - r) / max(np.linalg.norm(r), 1e-30))
        la = producer[t]
        flag = "BAD" if not rel < args.threshold else "ok "
        if flag == "BAD":
            bad += 1
        if flag == "BAD" and bad <= 12:
            print(f"{flag} {t:30s} {la.kind.value:16s} {rel:.2e} shape {r.shape} params {la.params}"[:400])
    print(f"{bad} of {len(net.outputs)} tensors over {args.threshold}")


if __name__ == "__main__":
    main()
