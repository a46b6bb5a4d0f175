"""``hetrt build``: parse an ONNX model, optimize it, write a plan (trtexec --onnx ... --saveEngine)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from engine.caffe_parser.cli import add_cli_options as caffe_options
from engine.cli.args import add_build_options
from engine.cli.common import build_plan, check_outputs, make_logger
from engine.ir.fileio import atomic_write_bytes, atomic_write_text

NAME = "build"
EPILOG_MODEL = ("MODEL is an .onnx file or the name of a bundled model "
                "(resnet18, resnet18_small, resnet50, mobilenet_v2; generated in code with seeded weights).")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("build", help="build a plan from an ONNX model", epilog=EPILOG_MODEL,
                       description="Parse MODEL, optimize it, and write a serialized plan (written atomically: "
                                   "a temporary file in the same folder, then a rename).")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("-o", "--save-engine", dest="output", metavar="PLAN",
                   help="plan file to write (default: MODEL's stem + .plan in the current folder) [--saveEngine]")
    p.add_argument("--export-layer-info", metavar="FILE",
                   help="write layer information (engine inspector JSON) [--exportLayerInfo]")
    add_build_options(p)
    caffe_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    logger = make_logger(args)
    args.output = args.output or (Path(args.model).stem + ".plan")
    check_outputs(args, "output", "export_layer_info")  # before the build, not after it
    t0 = time.perf_counter()
    data = build_plan(args.model, args, logger)
    atomic_write_bytes(args.output, data)
    logger.info(f"Wrote plan {args.output} ({len(data) / 2**20:.2f} MiB) in {time.perf_counter() - t0:.2f} s")
    if args.export_layer_info:
        from engine.runtime import Runtime

        engine = Runtime(logger).deserialize(data)
        atomic_write_text(args.export_layer_info, engine.layer_information("json"))
        logger.info(f"Wrote layer information to {args.export_layer_info}")
    return 0
