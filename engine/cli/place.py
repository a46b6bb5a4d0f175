"""``hetrt place``: per-layer GPU/DLA placement on a Jetson platform model (body in engine.cli_studies)."""

from __future__ import annotations

import argparse

from engine.cli.args import add_verbosity, nonneg_float, nonneg_int, positive_float, positive_int
from engine.cli.build import EPILOG_MODEL

NAME = "place"


def add_model_and_precision(p: argparse.ArgumentParser, several_models: bool = False) -> None:
    if several_models:
        p.add_argument("model", metavar="MODEL", nargs="+", help="one model; 2 or 3 with --policy concurrent")
    else:
        p.add_argument("model", metavar="MODEL")
    p.add_argument("--platform", default="orin-agx-64gb",
                   help="orin-agx-64gb (default) or xavier-agx (simulated Jetson targets)")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--fp16", action="store_true", help="cost FP16 layers (the DLA runs FP16 and INT8 only)")
    prec.add_argument("--int8", action="store_true",
                      help="cost INT8 layers (timing needs shapes only, no calibration scales)")
    p.add_argument("--batch", type=positive_int, default=None, help="batch of inputs with a symbolic first dim")
    add_verbosity(p)


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("place", help="place layers on GPU/DLA for a platform and print the per-layer table",
                       epilog=EPILOG_MODEL, description="Cost every layer on the GPU and the DLA cores of a "
                       "platform model (simulated clock) and print the exact optimal placement for the objective, "
                       "against gpu-only, dla-first (TensorRT's default) and the best single-cut placement; "
                       "--policy pipeline: stages over GPU + DLA cores for a stream of frames; --policy concurrent: "
                       "2 or 3 models at once with the contention model.")
    add_model_and_precision(p, several_models=True)
    p.add_argument("--policy", default="optimal", choices=("optimal", "pipeline", "concurrent"),
                   help="optimal (default, one inference), pipeline (stream of frames) or concurrent (several models)")
    p.add_argument("--frames", type=positive_int, default=100, help="frames of the pipeline policy (default 100)")
    p.add_argument("--power-mode", default=None, help="nvpmodel mode, e.g. 15W, 30W, 50W, MAXN (default MAXN)")
    p.add_argument("--objective", default="latency", choices=("latency", "energy", "edp", "weighted"),
                   help="latency, energy, edp or weighted (latency + lambda*energy)")
    p.add_argument("--lambda", dest="lam", type=nonneg_float, default=None,
                   help="lambda of --objective weighted, in ms per mJ (default 1)")
    p.add_argument("--deadline", type=positive_float, default=None, metavar="MS", help="latency limit per inference")
    p.add_argument("--energy-budget", type=positive_float, default=None, metavar="MJ",
                   help="energy limit per inference")
    p.add_argument("--max-transitions", type=nonneg_int, default=None, metavar="N", help="limit GPU<->DLA hand-offs")
    return p


def run(args: argparse.Namespace) -> int:
    from engine.cli_studies import run_place

    print(run_place(args))
    return 0
