"""Scale folding (BatchNorm folding): a per-channel or uniform Scale merges into the adjacent
Convolution, Deconvolution or FullyConnected layer.

After the layer (``ConvScaleFusion``): ``s * (W*x + b) + t == (s*W)*x + (s*b + t)`` exactly in
real arithmetic, so the scale goes into the kernel's output channels and the bias becomes
``s*b + t``. Allowed only when the layer has no fused epilogue yet (an activation or residual
sits between the GEMM and the scale) and its output has no other reader.

Before the layer (``ScaleConvFusion``): ``W * (s*x + t) == (W*s)*x + W*t``. With zero padding
the padded border is 0, not ``t``, so the shift term is only exact when the convolution does not
pad or the shift is zero; otherwise the pass leaves the pair alone. Deconvolutions are not
folded from the input side (their border sums are not uniform either).

Scales with a ``power`` other than 1 are never folded. Folded weights are computed in float64
and rounded once to the kernel's dtype.
"""

from __future__ import annotations

import numpy as np

from engine.ir.layers import (
    ConvolutionParams,
    DeconvolutionParams,
    FullyConnectedParams,
    LayerKind,
    ScaleMode,
    ScaleParams,
)
from engine.ir.network import Layer, Network
from engine.optimizer.graph import fused_layer, same_pins, sole_consumer
from engine.optimizer.rewrite import Rewrite

GEMM_KINDS = (LayerKind.CONVOLUTION, LayerKind.DECONVOLUTION, LayerKind.FULLY_CONNECTED)


def _channel_coefficients(net: Network, scale: Layer, channel_axis: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel (scale, shift) in float64 when ``scale`` is linear along ``channel_axis``."""
    params = scale.params
    assert isinstance(params, ScaleParams)
    x = net.tensors[scale.inputs[0]]
    power = scale.weights.get("power")
    if power is not None and not np.all(power == 1):
        return None
    if params.mode is ScaleMode.ELEMENTWISE:
        return None
    if params.mode is ScaleMode.CHANNEL and params.channel_axis % len(x.shape) != channel_axis % len(x.shape):
        return None
    channels = x.shape[channel_axis]
    s = scale.weights.get("scale")
    t = scale.weights.get("shift")
    s64 = np.ones(channels) if s is None else np.broadcast_to(s.astype(np.float64), (channels,))
    t64 = np.zeros(channels) if t is None else np.broadcast_to(t.astype(np.float64), (channels,))
    return s64, t64


def _output_channel_view(layer: Layer) -> tuple[np.ndarray, tuple[int, ...]]:
    """The kernel in float64 and the shape that broadcasts a per-output-channel vector onto it."""
    w = layer.weights["kernel"].astype(np.float64)
    p = layer.params
    if isinstance(p, DeconvolutionParams):  # (C, K/g, *k): output channel o = group*(K/g) + j
        g = p.groups
        c, kg = w.shape[0], w.shape[1]
        return w.reshape(g, c // g, kg, *w.shape[2:]), (g, 1, kg) + (1,) * (w.ndim - 2)
    return w, (w.shape[0],) + (1,) * (w.ndim - 1)


def _fold_after(net: Network, gemm: Layer, scale: Layer) -> Layer | None:
    p = gemm.params
    assert isinstance(p, ConvolutionParams | DeconvolutionParams | FullyConnectedParams)
    if p.activation is not None or getattr(p, "residual", False):
        return None
    out_rank = len(net.tensors[gemm.outputs[0]].shape)
    coeff = _channel_coefficients(net, scale, 1 if gemm.kind is not LayerKind.FULLY_CONNECTED else out_rank - 1)
    if coeff is None:
        return None
    s, t = coeff
    w, bshape = _output_channel_view(gemm)
    kernel = (w * s.reshape(bshape)).reshape(gemm.weights["kernel"].shape)
    bias = gemm.weights.get("bias")
    b = np.zeros_like(s) if bias is None else bias.astype(np.float64)
    dtype = gemm.weights["kernel"].dtype
    weights = dict(gemm.weights, kernel=kernel.astype(dtype), bias=(b * s + t).astype(dtype))
    return fused_layer(net, [gemm, scale], gemm.params, gemm.inputs, scale.outputs, weights)


def _fold_before(net: Network, scale: Layer, gemm: Layer) -> Layer | None:
    p = gemm.params
    if gemm.kind is LayerKind.DECONVOLUTION or gemm.inputs[0] != scale.outputs[0]:
        return None
    if scale.outputs[0] in gemm.inputs[1:]:
        return None
    x_rank = len(net.tensors[scale.inputs[0]].shape)
    coeff = _channel_coefficients(net, scale, 1 if gemm.kind is LayerKind.CONVOLUTION else x_rank - 1)
    if coeff is None:
        return None
    s, t = coeff
    w = gemm.weights["kernel"].astype(np.float64)
    if isinstance(p, ConvolutionParams):
        pads = any(p.pre_padding) or any(p.post_padding)
        if pads and np.any(t != 0):
            return None
        k, cg = w.shape[0], w.shape[1]
        kg = k // p.groups
        channel = (np.arange(k) // kg)[:, None] * cg + np.arange(cg)[None, :]  # input channel of w[k, j]
        s_kj, t_kj = s[channel], t[channel]
        kernel = w * s_kj.reshape(k, cg, *(1,) * (w.ndim - 2))
        shift_term = (w.sum(axis=tuple(range(2, w.ndim))) * t_kj).sum(axis=1)
    else:
        kernel = w * s[None, :]
        shift_term = w @ t
    bias = gemm.weights.get("bias")
    b = np.zeros(w.shape[0]) if bias is None else bias.astype(np.float64)
    dtype = gemm.weights["kernel"].dtype
    weights = dict(gemm.weights, kernel=kernel.astype(dtype), bias=(b + shift_term).astype(dtype))
    return fused_layer(net, [scale, gemm], gemm.params, [scale.inputs[0], *gemm.inputs[1:]], gemm.outputs, weights)


def run(net: Network) -> list[Rewrite]:
    rewrites: list[Rewrite] = []
    changed = True
    while changed:
        changed = False
        uses = net.consumers()
        producers = net.producers()
        for scale in list(net.layers):
            if scale.kind is not LayerKind.SCALE:
                continue
            gemm = producers.get(scale.inputs[0])
            if (gemm is not None and gemm.kind in GEMM_KINDS and sole_consumer(net, gemm.outputs[0], uses) is scale
                    and same_pins(gemm, scale)):
                new = _fold_after(net, gemm, scale)
                if new is not None:
                    net.replace_layer([gemm, scale], new)
                    rewrites.append(Rewrite("ConvScaleFusion", "fuse", (gemm.name, scale.name), new.name))
                    changed = True
                    break
            reader = sole_consumer(net, scale.outputs[0], uses)
            if reader is not None and reader.kind in GEMM_KINDS and same_pins(scale, reader):
                new = _fold_before(net, scale, reader)
                if new is not None:
                    net.replace_layer([scale, reader], new)
                    rewrites.append(Rewrite("ScaleConvFusion", "fuse", (scale.name, reader.name), new.name))
                    changed = True
                    break
    return rewrites
