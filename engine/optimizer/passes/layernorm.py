"""LayerNorm recognition: the decomposed formula older exporters write becomes one Normalization
layer (TensorRT's LayerNorm fusion).

ONNX has LayerNormalization since opset 17; models exported before it (Hugging Face BERT and GPT-2
at opset 11-14, TensorFlow converters) write it out as

    mu = ReduceMean(x); d = x - mu; var = ReduceMean(Pow(d, 2)); y = d / Sqrt(var + eps) [* g] [+ b]

Nine layers become one, and more than speed is at stake: in FP16 each of them stores its result
in half precision, and ``d ** 2`` overflows once |x - mu| passes 256 (var becomes inf, y 0),
where the fused layer squares in fp32. Matched when both means run over the same trailing axes
with kept dims, ``d`` has exactly its two readers (the square, as Pow(d, 2) or d * d, and the
division), every other intermediate one reader, eps is a scalar constant and the optional scale
and bias are constants that vary along the normalized axes only.
"""

from __future__ import annotations

import numpy as np

from engine.ir.layers import ElementWiseOp, LayerKind, NormalizationParams, ReduceOp, UnaryOp
from engine.ir.network import Layer, Network
from engine.optimizer.graph import (
    drop_unused_constants,
    float_constant,
    fused_layer,
    is_elementwise,
    other_input,
    same_pins,
    scalar_constant,
    sole_consumer,
)
from engine.optimizer.rewrite import Rewrite

NAME = "LayerNormFusion"


def _mean_axes(net: Network, layer: Layer | None) -> tuple[int, ...] | None:
    """The trailing axes a kept-dims mean reduces over, or None."""
    if layer is None or layer.kind is not LayerKind.REDUCE:
        return None
    p = layer.params
    rank = len(net.tensors[layer.inputs[0]].shape)
    axes = tuple(sorted({a % rank for a in p.axes}))
    if p.op is not ReduceOp.MEAN or not p.keep_dims or axes != tuple(range(rank - len(axes), rank)):
        return None
    return axes


def _square_of(producers: dict[str, Layer], layer: Layer, d: str) -> bool:
    if is_elementwise(layer, ElementWiseOp.PROD):
        return layer.inputs == [d, d]
    if is_elementwise(layer, ElementWiseOp.POW) and layer.inputs[0] == d:
        return scalar_constant(producers, layer.inputs[1]) == 2.0
    return False


def _affine(net: Network, producers, layer: Layer | None, value: str, op: ElementWiseOp,
            axes: tuple[int, ...]) -> np.ndarray | None:
    """The constant ``layer`` multiplies / adds ``value`` by, when it varies along ``axes`` only."""
    other = other_input(layer, value) if is_elementwise(layer, op) else None
    w = float_constant(producers, other) if other is not None else None
    shape = net.tensors[value].shape
    if w is None or w.ndim > len(shape) or net.tensors[layer.outputs[0]].shape != shape:
        return None
    lead = len(shape) - w.ndim
    if any(n != 1 for i, n in enumerate(w.shape) if lead + i not in axes):
        return None
    return w


def _match(net: Network, mean: Layer, uses, producers
           ) -> tuple[list[Layer], NormalizationParams, dict] | None:
    """(the chain from the first mean to the last fused layer, its Normalization, scale/bias weights)."""
    axes = _mean_axes(net, mean)
    x = mean.inputs[0]
    sub = sole_consumer(net, mean.outputs[0], uses)
    if axes is None or not is_elementwise(sub, ElementWiseOp.SUB) or sub.inputs != [x, mean.outputs[0]]:
        return None
    d = sub.outputs[0]
    readers = uses.get(d, [])
    if d in net.outputs or len(readers) != 2:
        return None
    square = next((r for r in readers if _square_of(producers, r, d)), None)
    div = next((r for r in readers if r is not square), None)
    var = sole_consumer(net, square.outputs[0], uses) if square is not None else None
    if var is None or _mean_axes(net, var) != axes:
        return None
    add = sole_consumer(net, var.outputs[0], uses)
    eps = scalar_constant(producers, add.inputs[1] if add is not None and add.inputs[0] == var.outputs[0] else "")
    if not is_elementwise(add, ElementWiseOp.SUM) or eps is None:
        return None
    sqrt = sole_consumer(net, add.outputs[0], uses)
    if sqrt is None or sqrt.kind is not LayerKind.UNARY or sqrt.params.op is not UnaryOp.SQRT:
        return None
    if not is_elementwise(div, ElementWiseOp.DIV) or div.inputs != [d, sqrt.outputs[0]] \
            or sole_consumer(net, sqrt.outputs[0], uses) is not div:
        return None
    chain, weights = [mean, sub, square, var, add, sqrt, div], {}
    for key, op in (("scale", ElementWiseOp.PROD), ("bias", ElementWiseOp.SUM)):
        nxt = sole_consumer(net, chain[-1].outputs[0], uses)
        w = _affine(net, producers, nxt, chain[-1].outputs[0], op, axes)
        if w is not None:
            chain.append(nxt)
            weights[key] = np.ascontiguousarray(w, dtype=np.float32)
    if not same_pins(*chain) or net.tensors[chain[-1].outputs[0]].shape != net.tensors[x].shape:
        return None
    return chain, NormalizationParams(axes, eps), weights


def run(net: Network) -> list[Rewrite]:
    rewrites: list[Rewrite] = []
    for mean in list(net.layers):
        if mean.kind is not LayerKind.REDUCE or not any(la is mean for la in net.layers):
            continue
        found = _match(net, mean, net.consumers(), net.producers())
        if found is None:
            continue
        chain, params, weights = found
        consts = [t for la in chain for t in la.inputs]
        new = fused_layer(net, chain, params, [mean.inputs[0]], chain[-1].outputs, weights,
                          name=" + ".join(la.name for la in chain))
        net.replace_layer(chain, new)
        drop_unused_constants(net, consts)
        rewrites.append(Rewrite(NAME, "fuse", tuple(la.name for la in chain), new.name))
    return rewrites
