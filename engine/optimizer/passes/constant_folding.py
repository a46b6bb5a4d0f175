"""Constant folding: layers whose inputs are all constants become Constant layers.

The value is computed by the numpy reference backend, the project's oracle, so a folded layer
yields exactly what the unoptimised network would compute at run time. Layers are visited in
topological order, so whole constant sub-graphs fold in one sweep. A constant right operand of
a MatrixMultiply is a weight: the layer becomes a FullyConnected layer holding it as its kernel
(same contraction over the last axis), which backends run as a GEMM with resident weights.
Multi-output layers are not folded (one Constant layer has one output, and the output names of
the network must survive).
"""

from __future__ import annotations

import numpy as np

from engine.ir.layers import ConstantParams, FullyConnectedParams, LayerKind, MatrixMultiplyParams
from engine.ir.network import Layer, Network
from engine.optimizer.graph import drop_unused_constants, merged_origin
from engine.optimizer.rewrite import Rewrite

NAME = "ConstantFolding"


def _evaluate(layer: Layer, values: list[np.ndarray]) -> list[np.ndarray]:
    from backends.reference import run_layer  # the oracle; imported late (engine must not need it to load)

    return list(run_layer(layer, values))


def _fold(net: Network, layer: Layer, producers: dict[str, Layer]) -> Rewrite | None:
    sources = [producers.get(t) for t in layer.inputs]
    if any(s is None or s.kind is not LayerKind.CONSTANT for s in sources):
        return None
    out = net.tensors[layer.outputs[0]]
    value = np.asarray(_evaluate(layer, [s.weights["value"] for s in sources])[0])
    if value.shape != out.shape:
        return None  # the kernel disagrees with shape inference; leave the layer to run as is
    value = np.ascontiguousarray(value.astype(out.dtype.numpy, copy=False))
    new = Layer(layer.name, ConstantParams(), [], list(layer.outputs), {"value": value}, layer.precision,
                layer.device, merged_origin(layer))
    net.replace_layer(layer, new)
    producers[layer.outputs[0]] = new
    return Rewrite(NAME, "fold", (layer.name,), new.name)


def _absorb_matmul_weight(net: Network, layer: Layer, producers: dict[str, Layer]) -> Rewrite | None:
    """x @ C with C a 2-D constant is FullyConnected(x) with kernel C.T (same output shape)."""
    params = layer.params
    assert isinstance(params, MatrixMultiplyParams)
    const = producers.get(layer.inputs[1])
    if const is None or const.kind is not LayerKind.CONSTANT or params.transpose_a:
        return None
    value = const.weights["value"]
    x = net.tensors[layer.inputs[0]]
    if value.ndim != 2 or len(x.shape) < 2 or value.dtype != x.dtype.numpy or layer.inputs[0] == layer.inputs[1]:
        return None
    kernel = value if params.transpose_b else value.T
    kernel = np.ascontiguousarray(kernel)
    new = Layer(layer.name, FullyConnectedParams(num_outputs=kernel.shape[0]), [layer.inputs[0]],
                list(layer.outputs), {"kernel": kernel}, layer.precision, layer.device, list(layer.origin))
    net.replace_layer(layer, new)
    drop_unused_constants(net, [const.outputs[0]])
    return Rewrite(NAME, "absorb", (const.name, layer.name), "fully connected")


def run(net: Network) -> list[Rewrite]:
    rewrites: list[Rewrite] = []
    producers = net.producers()
    for layer in list(net.layers):
        if layer.kind is LayerKind.CONSTANT or not layer.inputs or len(layer.outputs) != 1:
            continue
        rewrite = _fold(net, layer, producers)
        if rewrite is None and layer.kind is LayerKind.MATRIX_MULTIPLY:
            rewrite = _absorb_matmul_weight(net, layer, producers)
            producers = net.producers()
        if rewrite is not None:
            rewrites.append(rewrite)
    return rewrites
