"""``hetrt demo``: build a bundled model, run it trtexec-style, and compare it with ONNX Runtime."""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
from pathlib import Path

from engine.cli import build, compare
from engine.cli import run as run_cmd
from engine.cli.args import BUILD_DEFAULTS, add_build_options, add_inference_options
from engine.cli.build import EPILOG_MODEL
from engine.cli.common import check_outputs, make_logger

NAME = "demo"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="build, run and check the bundled default model (ResNet-18)",
                       description="The main job on a bundled model: build a plan, run it trtexec-style, and "
                                   "compare its outputs with ONNX Runtime (when onnxruntime is installed; the demo "
                                   "says so when it is not). The plan goes to a temporary folder unless -o is "
                                   "given.", epilog=EPILOG_MODEL)
    p.add_argument("--model", default=None, help="bundled model or .onnx file (default resnet18)")
    p.add_argument("-o", "--output", metavar="PLAN", help="keep the plan in this file (default: a temporary folder)")
    add_build_options(p)
    add_inference_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    from engine.models.zoo import DEFAULT_MODEL

    args.model = args.model or DEFAULT_MODEL
    check_outputs(args, "output", *run_cmd.OUTPUT_FLAGS)
    logger = make_logger(args)
    logger.info(f"hetrt demo: model '{args.model}' (build → plan → load → run → compare)")
    with tempfile.TemporaryDirectory(prefix="hetrt-demo-") as tmp:
        plan_path = args.output or str(Path(tmp) / (Path(args.model).stem + ".plan"))
        build.run(argparse.Namespace(**{**vars(args), "output": plan_path, "export_layer_info": None}))
        if not args.output:
            logger.info("(the plan is in a temporary folder, removed at exit; -o PLAN keeps it)")
        run_args = {**vars(args), **BUILD_DEFAULTS, "model": plan_path, "simulate_every_iteration": False}
        run_cmd.run(argparse.Namespace(**run_args))
        if importlib.util.find_spec("onnxruntime") is None:
            logger.info("No output comparison: ONNX Runtime is not installed (pip install onnxruntime, then "
                        f"'hetrt compare {args.model}' checks hetrt's outputs against it)")
            return 0
        logger.info("Comparing the same plan's outputs with ONNX Runtime")
        cmp_args = {**vars(args), "load_inputs": None, "rtol": None, "atol": None, "check_error_stat": "elemwise",
                    "save_inputs": None, "save_outputs": None, "load_outputs": None, "per_layer": False,
                    "sqnr_threshold": None, "prebuilt_plan": Path(plan_path).read_bytes()}
        return compare.run(argparse.Namespace(**cmp_args))
