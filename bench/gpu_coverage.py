"""Which layers of exported torchvision networks the GPU backend runs, checked without a GPU.

Each network is exported from PyTorch (random weights, TorchScript exporter, opset 17), built as
an FP16 plan's optimized network would be (and as an INT8 one, ranges calibrated on one random
image), split into GPU segments and host layers exactly as the GPU partition splits it
(``backends.gpu.backend.split_segments``) and the FP16 segments lowered to their launches
(``backends.gpu.lower``), all on the CPU. A host layer runs on the reference backend between CUDA
graphs: correct, but a cliff in speed. Also reported: the FP32 reference backend's output against
PyTorch fp32 on one random input (relative L2) with the spread of PyTorch's output beside it (with
random weights some outputs are nearly constant, and then the error says little), so a network
that lowers but computes wrongly shows.

Usage: python bench/gpu_coverage.py [--models NAME ...] [--out FILE]     (needs torch, torchvision)
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name: (constructor path, input shape); segmentation models return a dict and are wrapped
MODELS: dict[str, tuple[str, tuple[int, ...]]] = {
    "resnet50": ("resnet50", (1, 3, 224, 224)), "mobilenet_v3_large": ("mobilenet_v3_large", (1, 3, 224, 224)),
    "efficientnet_v2_s": ("efficientnet_v2_s", (1, 3, 224, 224)),
    "regnet_y_400mf": ("regnet_y_400mf", (1, 3, 224, 224)),
    "shufflenet_v2_x1_0": ("shufflenet_v2_x1_0", (1, 3, 224, 224)), "densenet121": ("densenet121", (1, 3, 224, 224)),
    "squeezenet1_1": ("squeezenet1_1", (1, 3, 224, 224)), "mnasnet1_0": ("mnasnet1_0", (1, 3, 224, 224)),
    "googlenet": ("googlenet", (1, 3, 224, 224)), "inception_v3": ("inception_v3", (1, 3, 299, 299)),
    "convnext_tiny": ("convnext_tiny", (1, 3, 224, 224)), "swin_t": ("swin_t", (1, 3, 224, 224)),
    "swin_v2_t": ("swin_v2_t", (1, 3, 256, 256)), "vit_b_16": ("vit_b_16", (1, 3, 224, 224)),
    "maxvit_t": ("maxvit_t", (1, 3, 224, 224)),
    "fcn_resnet50": ("segmentation.fcn_resnet50", (1, 3, 224, 224)),
    "deeplabv3_mobilenet_v3_large": ("segmentation.deeplabv3_mobilenet_v3_large", (1, 3, 224, 224)),
    "lraspp_mobilenet_v3_large": ("segmentation.lraspp_mobilenet_v3_large", (1, 3, 224, 224)),
    "r3d_18": ("video.r3d_18", (1, 3, 8, 112, 112)),
    # a second set, none of them looked at while the GPU backend was written
    "alexnet": ("alexnet", (1, 3, 224, 224)), "vgg11_bn": ("vgg11_bn", (1, 3, 224, 224)),
    "resnet18": ("resnet18", (1, 3, 224, 224)), "wide_resnet50_2": ("wide_resnet50_2", (1, 3, 224, 224)),
    "regnet_x_400mf": ("regnet_x_400mf", (1, 3, 224, 224)),
    "mobilenet_v3_small": ("mobilenet_v3_small", (1, 3, 224, 224)),
    "efficientnet_b3": ("efficientnet_b3", (1, 3, 300, 300)), "mnasnet0_5": ("mnasnet0_5", (1, 3, 224, 224)),
    "shufflenet_v2_x0_5": ("shufflenet_v2_x0_5", (1, 3, 224, 224)), "vit_b_32": ("vit_b_32", (1, 3, 224, 224)),
    "convnext_small": ("convnext_small", (1, 3, 224, 224)),
    "deeplabv3_resnet50": ("segmentation.deeplabv3_resnet50", (1, 3, 224, 224)),
    "r2plus1d_18": ("video.r2plus1d_18", (1, 3, 8, 112, 112)), "mc3_18": ("video.mc3_18", (1, 3, 8, 112, 112)),
    # a third set (2026-12-07): 3-D pooling and separable 3-D convolutions (S3D), 3-D shifted windows,
    # wider group-width blocks, a larger compound-scaled and a larger cosine-attention network
    "s3d": ("video.s3d", (1, 3, 16, 224, 224)), "swin3d_t": ("video.swin3d_t", (1, 3, 8, 112, 112)),
    "regnet_y_1_6gf": ("regnet_y_1_6gf", (1, 3, 224, 224)), "efficientnet_b1": ("efficientnet_b1", (1, 3, 240, 240)),
    "swin_v2_s": ("swin_v2_s", (1, 3, 256, 256)),
}


def make(name: str) -> Any:
    import torch
    import torchvision

    path, _ = MODELS[name]
    obj: Any = torchvision.models
    for part in path.split("."):
        obj = getattr(obj, part)
    kwargs: dict[str, Any] = {"weights": None}
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=False)
    if path.startswith("segmentation."):
        kwargs.update(weights_backbone=None)
    model = obj(**kwargs).eval()
    if not path.startswith("segmentation."):
        return model

    class Out(torch.nn.Module):  # the 'out' entry of the segmentation models' dict
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: Any) -> Any:
            return self.m(x)["out"]

    return Out(model).eval()


def check(name: str) -> dict[str, Any]:
    import numpy as np
    import onnx
    import torch

    from backends.gpu.backend import segment_outputs, split_segments
    from backends.gpu.lower import lower
    from bench.gpu_torchvision import export_onnx, randomize_zero_weights
    from engine.builder import Builder, BuilderConfig, build_from_onnx
    from engine.ir.logger import Logger, Severity
    from engine.onnx_parser import parse
    from engine.runtime import Runtime

    torch.manual_seed(0)
    model = make(name)
    randomize_zero_weights(model)  # e.g. ViT's classifier head starts at zero: its outputs would all be 0
    x = torch.rand(*MODELS[name][1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto = onnx.load_from_string(export_onnx(model, x.shape[0], tuple(x.shape[1:])))
    quiet = Logger(Severity.ERROR)
    net = Builder(quiet).build(parse(proto), BuilderConfig(fp16=True)).network
    segments = split_segments(net, [la.name for la in net.layers])
    host = host_layers(segments)
    launches = sum(len(lower(net, layers, needed).ops)  # each GPU segment leaves what the backend asks of it
                   for (on_gpu, layers), needed in zip(segments, segment_outputs(segments, net.outputs)) if on_gpu)
    int8 = int8_split(proto, x.numpy(), quiet)
    engine = Runtime(quiet).deserialize(build_from_onnx(proto, BuilderConfig(), quiet))
    got = engine.create_execution_context().execute({"input": x.numpy()})["logits"]
    with torch.no_grad():
        ref = model(x).double().numpy()
    return {"layers": len(net.layers), "gpu_launches": launches, "host_layers": len(host),
            "host_kinds": kinds(host),
            "fp32_rel_l2_vs_torch": float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30)),
            "torch_output_std": float(ref.std()),  # near 0: random weights left the output degenerate
            **int8}


def int8_split(proto: Any, x: Any, logger: Any) -> dict[str, Any]:
    """The INT8 build's split (ranges calibrated on the one input): how many layers are INT8, and
    which layers the GPU partition leaves to the host (an INT8 layer without a GPU kernel)."""
    from backends.gpu.backend import split_segments
    from engine.builder import Builder, BuilderConfig
    from engine.ir.dtypes import Precision
    from engine.onnx_parser import parse
    from engine.quantization import make_calibrator

    config = BuilderConfig(fp16=True, int8=True, batch=x.shape[0],
                           calibrator=make_calibrator("minmax", [{"input": x}]))
    net = Builder(logger).build(parse(proto), config).network
    host = host_layers(split_segments(net, [la.name for la in net.layers]))
    return {"int8_layers": sum(la.precision is Precision.INT8 for la in net.layers),
            "int8_host_layers": len(host), "int8_host_kinds": kinds(host)}


def host_layers(segments: list) -> list:
    """The layers of ``split_segments``' host segments."""
    return [la for on_gpu, layers in segments if not on_gpu for la in layers]


def kinds(layers: list) -> dict[str, int]:
    return dict(collections.Counter(la.kind.value for la in layers))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu_coverage.json"))
    ap.add_argument("--merge", action="store_true", help="keep the output file's rows of networks not run now")
    args = ap.parse_args()
    import torch
    import torchvision

    result: dict[str, Any] = {"environment": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                                              "date": time.strftime("%Y-%m-%d")}, "models": {}}
    if args.merge and Path(args.out).exists():
        earlier = json.loads(Path(args.out).read_text())
        result["models"] = {k: v for k, v in earlier["models"].items() if k not in args.models}
        result["environment_of_earlier_rows"] = earlier.get("environment_of_earlier_rows", earlier["environment"])
    for name in args.models:
        t = time.time()
        try:
            row = check(name)
        except Exception as e:  # one failing network must not hide the others
            row = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        row["seconds"] = round(time.time() - t, 1)
        result["models"][name] = row
        print(f"{name:30s} {json.dumps(row)}", flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
