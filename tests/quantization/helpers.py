"""Shared builders for the quantization tests: small networks, INT8 layers with given scales."""

from __future__ import annotations

import numpy as np

from engine.ir import int8_annotation as annotation
from engine.ir.dtypes import Precision
from engine.ir.layers import ActivationSpec, ActivationType, ConvolutionParams
from engine.ir.network import Layer, Network


def int8_conv_layer(w: np.ndarray, bias: np.ndarray | None, s_in: float, s_w: np.ndarray, s_out: float | None,
                    stride=(1, 1), pad=((1, 1), (1, 1)), groups: int = 1, relu: bool = True,
                    residual_scale: float | None = None) -> Layer:
    params = ConvolutionParams(num_output_maps=w.shape[0], kernel=tuple(w.shape[2:]), stride=tuple(stride),
                               pre_padding=(pad[0][0], pad[1][0]), post_padding=(pad[0][1], pad[1][1]),
                               dilation=(1, 1), groups=groups,
                               activation=ActivationSpec(ActivationType.RELU) if relu else None,
                               residual=residual_scale is not None)
    weights = {"kernel": w}
    if bias is not None:
        weights["bias"] = bias
    layer = Layer("conv", params, ["x", "r"] if residual_scale is not None else ["x"], ["y"], weights,
                  precision=Precision.INT8)
    ins = (s_in,) if residual_scale is None else (s_in, residual_scale)
    annotation.write(layer, annotation.Int8Spec(ins, s_out, np.asarray(s_w, np.float32)))
    return layer


def small_cnn(seed: int = 0, batch: int = 2) -> Network:
    rng = np.random.default_rng(seed)
    net = Network("small")
    x = net.add_input("x", (batch, 3, 8, 8))
    y = net.add_convolution(x, rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
                            rng.normal(size=4).astype(np.float32), padding=(1, 1), name="c1")
    y = net.add_activation(y, "relu", name="r1")
    y = net.add_pooling(y, "max", (2, 2), name="p1")
    y = net.add_convolution(y, rng.normal(size=(5, 4, 3, 3)).astype(np.float32), None, padding=(1, 1), name="c2")
    net.mark_output(y)
    return net


def batches(seed: int, n: int, shape=(2, 3, 8, 8)) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=shape).astype(np.float32)} for _ in range(n)]
