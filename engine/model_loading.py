"""Load a model for a study: an .onnx path or a bundled model name -> optimized IR network.

Studies place layers on DLAs, so the optimizer runs DLA-aware (``engine.optimizer.dla_aware``)."""

from __future__ import annotations

import os

from engine.ir.errors import BuildError
from engine.ir.network import Network


def load_network(spec: str, batch: int | None = None) -> Network:
    from engine.onnx_parser import parse
    from engine.optimizer import optimize

    if os.path.exists(spec) and spec.endswith(".prototxt"):  # Caffe: seeded random weights, unread blobs out
        from engine.caffe_parser import parse as parse_caffe

        return optimize(parse_caffe(spec, batch=batch), for_dla=True).network
    if os.path.exists(spec):
        model = spec
    else:
        from engine.models import MODELS, build_model

        if spec not in MODELS:
            raise BuildError(f"model '{spec}' is neither a file nor a bundled model ({', '.join(sorted(MODELS))})")
        model = build_model(spec)
    return optimize(parse(model, batch=batch), for_dla=True).network
