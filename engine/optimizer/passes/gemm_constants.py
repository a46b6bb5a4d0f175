"""Per-channel constant add / multiply after a GEMM folds into its bias and kernel.

Exporters write a Linear layer as ``MatMul`` + ``Add(bias)`` (the parser turns the MatMul into a
FullyConnected layer, the Add stays an elementwise layer), and ConvNeXt-style layer scales as
``Mul(gamma)``. An elementwise SUM or PROD whose other operand is a Constant that varies only
along the layer's output-channel axis (the last axis of a fully connected output, axis 1 of a
convolution's) is exactly a change of the layer's parameters:

    W·x + b + c  ==  W·x + (b + c)            (ElementWise SUM: GemmBiasFusion)
    (W·x + b)·s  ==  (s·W)·x + s·b            (ElementWise PROD: GemmScaleFusion)

so the elementwise layer disappears and the epilogue fusions that run next see the GEMM's real
consumer (a GELU, a residual add). torchvision's ConvNeXt applies its layer scale after permuting
the MLP's (N, H, W, C) output back to (N, C, H, W): a transpose alone (no reshape) between the
GEMM and the elementwise layer is looked through, the constant then varying along the axis the
transpose moves the GEMM's channels to. Folded only when the GEMM has no fused epilogue yet, its
output has no other reader, the constant does not broadcast the output to a larger shape, and
the pins agree. Folded values are computed in float64 and rounded once to the weights' dtype.
"""

from __future__ import annotations

import numpy as np

from engine.ir.layers import ElementWiseOp, LayerKind
from engine.ir.network import Layer, Network
from engine.optimizer.graph import drop_unused_constants, fused_layer, pure_permutation, same_pins, sole_consumer
from engine.optimizer.rewrite import Rewrite

FOLDABLE = (ElementWiseOp.SUM, ElementWiseOp.PROD)
CHANNEL_AXIS = {LayerKind.FULLY_CONNECTED: -1, LayerKind.CONVOLUTION: 1}


def _per_channel(value: np.ndarray, out_shape: tuple[int, ...], axis: int) -> np.ndarray | None:
    """The constant as one value per output channel, or None if it varies along another axis."""
    rank = len(out_shape)
    if value.ndim > rank or value.dtype.kind != "f":
        return None
    try:
        if np.broadcast_shapes(value.shape, out_shape) != tuple(out_shape):
            return None
    except ValueError:
        return None
    full = value.reshape((1,) * (rank - value.ndim) + value.shape)
    ax = axis % rank
    if any(d != 1 for i, d in enumerate(full.shape) if i != ax):
        return None
    return np.broadcast_to(full.reshape(-1).astype(np.float64), (out_shape[ax],))


def _fold(gemm: Layer, op: ElementWiseOp, c: np.ndarray) -> dict[str, np.ndarray]:
    kernel = gemm.weights["kernel"]
    bias = gemm.weights.get("bias")
    b = np.zeros(c.shape, np.float64) if bias is None else bias.astype(np.float64)
    weights = dict(gemm.weights)
    if op is ElementWiseOp.SUM:
        weights["bias"] = (b + c).astype(kernel.dtype)
    else:
        per_row = c.reshape((-1,) + (1,) * (kernel.ndim - 1))
        weights["kernel"] = (kernel.astype(np.float64) * per_row).astype(kernel.dtype)
        if bias is not None:
            weights["bias"] = (b * c).astype(bias.dtype)
    return weights


def _constant_operand(net: Network, ew: Layer, x: str, producers) -> tuple[str, np.ndarray] | None:
    """The Constant operand of a foldable elementwise layer reading ``x``, and its value."""
    if ew.kind is not LayerKind.ELEMENTWISE or ew.params.op not in FOLDABLE:
        return None
    a, b = ew.inputs
    other = b if a == x else a
    const = producers.get(other)
    if other == x or const is None or const.kind is not LayerKind.CONSTANT:
        return None
    if net.tensors[ew.outputs[0]].shape != net.tensors[x].shape:
        return None
    return other, np.asarray(const.weights["value"])


def _candidate(net: Network, gemm: Layer, uses, producers) -> tuple[Layer, np.ndarray, str, Layer | None] | None:
    """(elementwise layer, per-channel constant, its tensor, the transpose between or None)."""
    p = gemm.params
    if getattr(p, "activation", None) is not None or getattr(p, "residual", False) or len(gemm.inputs) != 1:
        return None
    out = gemm.outputs[0]
    axis = CHANNEL_AXIS[gemm.kind] % len(net.tensors[out].shape)
    reader = sole_consumer(net, out, uses)
    if reader is None or not same_pins(gemm, reader):
        return None
    shuffle = None
    perm = pure_permutation(reader)
    if perm is not None:
        shuffle, axis = reader, perm.index(axis)
        reader = sole_consumer(net, reader.outputs[0], uses)
        if reader is None or not same_pins(gemm, reader):
            return None
    x = shuffle.outputs[0] if shuffle is not None else out
    found = _constant_operand(net, reader, x, producers)
    if found is None:
        return None
    other, value = found
    c = _per_channel(value, net.tensors[x].shape, axis)
    return None if c is None else (reader, c, other, shuffle)


def run(net: Network) -> list[Rewrite]:
    rewrites: list[Rewrite] = []
    uses = net.consumers()  # stays right: a fusion keeps the readers of the tensor it now produces
    producers = net.producers()
    for gemm in list(net.layers):
        while gemm.kind in CHANNEL_AXIS:  # a GEMM may take a bias add and then a scale
            found = _candidate(net, gemm, uses, producers)
            if found is None:
                break
            ew, c, const_tensor, shuffle = found
            label = "GemmBiasFusion" if ew.params.op is ElementWiseOp.SUM else "GemmScaleFusion"
            weights = _fold(gemm, ew.params.op, c)
            if shuffle is None:
                new = fused_layer(net, [gemm, ew], gemm.params, gemm.inputs, ew.outputs, weights)
                net.replace_layer([gemm, ew], new)
                rewrites.append(Rewrite(label, "fuse", (gemm.name, ew.name), new.name))
            else:  # the GEMM takes the constant; the transpose now writes the elementwise output
                new = fused_layer(net, [gemm, ew], gemm.params, gemm.inputs, gemm.outputs, weights)
                moved = Layer(shuffle.name, shuffle.params, list(shuffle.inputs), list(ew.outputs), {},
                              shuffle.precision, shuffle.device, list(shuffle.origin))
                net.replace_layer(gemm, new)
                net.replace_layer([shuffle, ew], moved)
                uses, producers = net.consumers(), net.producers()  # the transpose's output changed name
                rewrites.append(Rewrite(label, "fuse", (gemm.name, ew.name), new.name,
                                        detail=f"through the transpose {shuffle.name}"))
            drop_unused_constants(net, [const_tensor])
            gemm = new
    return rewrites
