"""Small networks around GPU layer patterns, shared by the lowering (CPU) and GPU tests."""

from __future__ import annotations

import numpy as np

from engine.ir.dtypes import Precision
from engine.ir.layers import (
    ConvolutionParams,
    ElementWiseOp,
    ElementWiseParams,
    NormalizationParams,
    ShuffleParams,
)
from engine.ir.network import Network


def convnext_block(c: int, rng: np.random.Generator, shape=(2, 8, 7, 9)) -> Network:
    """conv 1x1 -> permute to (N, H, W, C) -> LayerNorm over C -> permute back -> + conv output."""
    net = Network("t")
    net.add_input("x", shape)
    w = {"kernel": (rng.standard_normal((c, shape[1], 1, 1)) / np.sqrt(shape[1])).astype(np.float32),
         "bias": rng.standard_normal(c).astype(np.float32)}
    y = net.add_layer(ConvolutionParams(c, (1, 1), (1, 1), (0, 0), (0, 0), (1, 1)), ["x"], w, name="conv").outputs[0]
    t = net.add_layer(ShuffleParams(first_perm=(0, 2, 3, 1)), [y], name="to_nhwc").outputs[0]
    n = net.add_layer(NormalizationParams(axes=(3,), epsilon=1e-6), [t],
                      {"scale": rng.uniform(0.5, 1.5, c).astype(np.float32),
                       "bias": rng.standard_normal(c).astype(np.float32)}, name="ln").outputs[0]
    b = net.add_layer(ShuffleParams(first_perm=(0, 3, 1, 2)), [n], name="to_nchw").outputs[0]
    out = net.add_layer(ElementWiseParams(ElementWiseOp.SUM), [b, y], name="add").outputs[0]
    net.mark_output(out)
    for la in net.layers:
        la.precision = Precision.FP16
    return net
