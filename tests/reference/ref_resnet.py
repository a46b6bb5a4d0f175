"""A ResNet-50-shaped network (random weights, BN folded, conv epilogues fused) for timing tests."""

from __future__ import annotations

import numpy as np

from engine.ir.layers import (
    ActivationSpec,
    ActivationType,
    ConvolutionParams,
    FullyConnectedParams,
    PoolingParams,
    PoolingType,
    ShuffleParams,
)
from engine.ir.network import Network

RELU = ActivationSpec(ActivationType.RELU)


def _conv(net: Network, g: np.random.Generator, x: str, k: int, size: int, stride: int = 1,
          relu: bool = True, residual: str | None = None) -> str:
    c = net.tensor(x).shape[1]
    pad = size // 2
    w = (g.standard_normal((k, c, size, size)) * np.sqrt(2.0 / (c * size * size))).astype(np.float32)
    b = (g.standard_normal(k) * 0.1).astype(np.float32)
    p = ConvolutionParams(k, (size, size), (stride, stride), (pad, pad), (pad, pad), (1, 1),
                          activation=RELU if relu else None, residual=residual is not None)
    inputs = [x] if residual is None else [x, residual]
    return net.add_layer(p, inputs, {"kernel": w, "bias": b}).outputs[0]


def resnet50(seed: int = 0, batch: int = 1, size: int = 224, classes: int = 1000) -> Network:
    g = np.random.default_rng(seed)
    net = Network("resnet50")
    net.add_input("image", (batch, 3, size, size))
    x = _conv(net, g, "image", 64, 7, 2)
    x = net.add_layer(PoolingParams(PoolingType.MAX, (3, 3), (2, 2), (1, 1), (1, 1)), [x]).outputs[0]
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            s = stride if i == 0 else 1
            shortcut = _conv(net, g, x, width * 4, 1, s, relu=False) if i == 0 else x
            y = _conv(net, g, x, width, 1)
            y = _conv(net, g, y, width, 3, s)
            x = _conv(net, g, y, width * 4, 1, residual=shortcut)
    x = net.add_layer(PoolingParams(PoolingType.AVERAGE, global_pool=True), [x]).outputs[0]
    x = net.add_layer(ShuffleParams(reshape=(batch, 2048)), [x]).outputs[0]
    w = (g.standard_normal((classes, 2048)) * 0.02).astype(np.float32)
    y = net.add_layer(FullyConnectedParams(classes), [x], {"kernel": w, "bias": np.zeros(classes, np.float32)})
    net.mark_output(y.outputs[0])
    return net
