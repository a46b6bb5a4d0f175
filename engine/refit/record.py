"""What a refittable plan keeps: the build's source, so new weights replay through the same folds.

A refit must give exactly what a fresh build with the new weights gives, through every fold the
parser and optimizer apply (BatchNorm → per-channel scale → folded into the convolution's kernel and
bias, constant folding, horizontal merges, ...). Rather than a second, hand-maintained algebra for
each fold, the plan records the source the folds start from and the refitter replays the same,
deterministic parse and optimize passes on it with the new weights:

* ONNX builds record the ONNX model (graph and initializers, as protobuf bytes: data, never code),
  with the input shapes and batch the parser used;
* network-API builds record the source network before optimization, as a nested plan.

The optimized structure must come out unchanged (the refitter checks it layer by layer); then only
the weights of the engine's layers are replaced. The cost is plan size: the source weights are
stored next to the optimized ones (about twice the plan of a non-refittable build).
"""

from __future__ import annotations

from typing import Any

import onnx

from engine import plan as plan_format
from engine.ir.network import Network


def make_record(network: Network, config: Any, proto: onnx.ModelProto | None,
                int8_scales: dict[str, Any] | None = None, input_shapes: dict | None = None) -> dict:
    """``int8_scales``: the calibrated activation scale of every tensor (kept across refits);
    ``input_shapes``: the shapes the source was parsed at (default: the config's). Plans built with
    optimization profiles keep the same record: the runtime re-specialises the source per shape."""
    shapes = {k: [int(d) for d in v] for k, v in (input_shapes or config.input_shapes or {}).items()}
    scales = None if int8_scales is None else {k: float(v) for k, v in int8_scales.items()}
    if proto is not None:
        source, fmt = proto.SerializeToString(), "onnx"
    else:
        source, fmt = plan_format.serialize(plan_format.PlanContents(network=network.copy())), "plan"
    return {"format": fmt, "source": source, "input_shapes": shapes, "batch": config.batch, "int8_scales": scales}
