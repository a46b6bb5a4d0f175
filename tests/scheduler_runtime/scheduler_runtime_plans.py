"""Helpers of the scheduler runtime tests: small plans with GPU and DLA partitions."""

from __future__ import annotations

from engine import plan as plan_format
from engine.builder import Builder, BuilderConfig
from engine.ir.dtypes import Precision
from engine.ir.logger import Logger, Severity
from engine.models import build_model
from engine.onnx_parser import parse
from scheduler.dla_compile import compile_partition
from scheduler.partitions import split_partitions
from scheduler.platforms import get_platform

QUIET = Logger(Severity.ERROR)


def built_contents(model: str = "resnet18_small", **cfg) -> plan_format.PlanContents:
    return Builder(QUIET).build(parse(build_model(model)), BuilderConfig(fp16=True, **cfg))


def mixed_plan(pattern=("gpu", "dla0", "dla1"), every: int = 4, model: str = "resnet18_small",
               gpu_backend: str = "reference") -> bytes:
    """A host plan whose layers alternate between the GPU and both DLA cores in blocks of ``every``."""
    return alternating_plan(built_contents(model), pattern, every, gpu_backend)


def alternating_plan(contents: plan_format.PlanContents, pattern=("gpu", "dla0", "dla1"), every: int = 4,
                     gpu_backend: str = "reference") -> bytes:
    """``contents`` (an FP16 host build) placed in blocks of ``every`` layers over ``pattern``."""
    net = contents.network
    devices = {la.name: pattern[(i // every) % len(pattern)] for i, la in enumerate(net.layers)}
    platform = get_platform("host")
    mode = platform.mode()
    records, loadables = [], []
    for spec in split_partitions(net, devices, Precision.FP16):
        rec = spec.to_dict()
        if spec.device == "dla":
            blob, bounds = compile_partition(net, spec, platform, mode, Precision.FP16)
            loadables.append(blob)
            rec.update(backend="dla", loadable=len(loadables) - 1, **bounds)
        else:
            rec.update(backend=gpu_backend)
        records.append(rec)
    for la in net.layers:
        la.device = "dla" if devices[la.name] != "gpu" else "gpu"
    contents.placement = {"platform": "host", "power_mode": "default", "precision": "fp16", "policy": "test",
                          "dla": {"config": "orin", "version": 2, "cores": 2}, "devices": devices,
                          "partitions": records}
    contents.loadables = loadables
    return plan_format.serialize(contents)
