"""The ``hetrt`` command's Caffe options (trtexec's --deploy/--model/--output in hetrt's spelling).

``hetrt build net.prototxt [--weights net.caffemodel] --output prob [--output other] -o net.plan``.
"""

from __future__ import annotations

import argparse

from engine.ir.errors import HetrtError
from engine.ir.logger import Logger


def add_cli_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Caffe models (MODEL.prototxt)")
    g.add_argument("--weights", metavar="FILE.caffemodel", default=None,
                   help="trained weights of a .prototxt model (default: seeded random weights)")
    g.add_argument("--output", dest="caffe_outputs", action="append", metavar="BLOB",
                   help="mark this blob of a .prototxt model as an output (repeatable; default: blobs no layer reads)")


def build_plan(model_spec: str, args: argparse.Namespace, config, logger: Logger) -> bytes | None:
    """The plan of a .prototxt model, or None for any other model (then --weights/--output are refused)."""
    from engine.caffe_parser import build_from_caffe, is_caffe_model

    weights, outputs = getattr(args, "weights", None), getattr(args, "caffe_outputs", None)
    if not is_caffe_model(model_spec):
        if weights or outputs:
            raise HetrtError("--weights and --output BLOB apply to Caffe models (MODEL.prototxt); the plan file is "
                             "named with -o PLAN")
        return None
    return build_from_caffe(model_spec, weights, outputs, config, logger)
