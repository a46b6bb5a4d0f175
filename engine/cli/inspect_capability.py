"""Every layer of a model, the devices that run it, and why each refusing device refuses.

Polygraphy's ``inspect capability``, for the DLA of a Jetson platform model.
"""

from __future__ import annotations

import argparse

from engine.ir.dtypes import Precision

TOPIC = "capability"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="an .onnx or .prototxt file, or a bundled model name")
    p.add_argument("--platform", default="orin-agx-64gb", help="orin-agx-64gb (default) or xavier-agx")
    p.add_argument("--fp16", action="store_true", help="check FP16 layers instead of INT8")


def run(args: argparse.Namespace) -> int:
    from engine.cli_dla import capability_report

    print(capability_report(args.model, args.platform, Precision.FP16 if args.fp16 else Precision.INT8))
    return 0
