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
from engine.optimizer.graph import drop_unused_constants, fused_layer, same_pins, sole_consumer
from engine.optimizer.rewrite import Rewrite

NAME = "LayerNormFusion"


def _const(producers: dict[str, Layer], tensor: str) -> np.ndarray | None:
    layer = producers.get(tensor)
    if layer is None or layer.kind is not LayerKind.CONSTANT:
        return None
    value = np.asarray(layer.weights["value"])
    return value if value.dtype.kind == "f" else None


def _binary(layer: Layer | None, op: ElementWiseOp) -> bool:
    return layer is not None and layer.kind is LayerKind.ELEMENTWISE and layer.params.op is op


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
    if _binary(layer, ElementWiseOp.PROD):
        return layer.inputs == [d, d]
    if _binary(layer, ElementWiseOp.POW) and layer.inputs[0] == d:
        two = _const(producers, layer.inputs[1])
        return two is not None and two.size == 1 and float(two.reshape(-1)[0]) == 2.0
    return False


def _affine(net: Network, producers, uses, layer: Layer | None, value: str, op: ElementWiseOp,
            axes: tuple[int, ...]) -> np.ndarray | None:
    """The constant ``layer`` multiplies / adds ``value`` by, when it varies along ``axes`` only."""
    if not _binary(layer, op) or value not in layer.inputs or layer.inputs.count(value) != 1:
        return None
    other = layer.inputs[1] if layer.inputs[0] == value else layer.inputs[0]
    w = _const(producers, other)
    shape = net.tensors[value].shape
    if w is None or w.ndim > len(shape) or net.tensors[layer.outputs[0]].shape != shape:
        return None
    lead = len(shape) - w.ndim
    if any(n != 1 for i, n in enumerate(w.shape) if lead + i not in axes):
        return None
    return w


def _match(net: Network, mean: Layer, uses, producers) -> tuple[list[Layer], float, dict] | None:
    """(the chain from the first mean to the last fused layer, eps, scale/bias weights)."""
    axes = _mean_axes(net, mean)
    x = mean.inputs[0]
    sub = sole_consumer(net, mean.outputs[0], uses)
    if axes is None or not _binary(sub, ElementWiseOp.SUB) or sub.inputs != [x, mean.outputs[0]]:
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
    eps = _const(producers, add.inputs[1] if add is not None and add.inputs[0] == var.outputs[0] else "")
    if not _binary(add, ElementWiseOp.SUM) or eps is None or eps.size != 1:
        return None
    sqrt = sole_consumer(net, add.outputs[0], uses)
    if sqrt is None or sqrt.kind is not LayerKind.UNARY or sqrt.params.op is not UnaryOp.SQRT:
        return None
    if not _binary(div, ElementWiseOp.DIV) or div.inputs != [d, sqrt.outputs[0]] \
            or sole_consumer(net, sqrt.outputs[0], uses) is not div:
        return None
    chain, weights = [mean, sub, square, var, add, sqrt, div], {}
    for key, op in (("scale", ElementWiseOp.PROD), ("bias", ElementWiseOp.SUM)):
        nxt = sole_consumer(net, chain[-1].outputs[0], uses)
        w = _affine(net, producers, uses, nxt, chain[-1].outputs[0], op, axes)
        if w is not None:
            chain.append(nxt)
            weights[key] = np.ascontiguousarray(w, dtype=np.float32)
    if not same_pins(*chain) or net.tensors[chain[-1].outputs[0]].shape != net.tensors[x].shape:
        return None
    return chain, float(eps.reshape(-1)[0]), weights


def run(net: Network) -> list[Rewrite]:
    rewrites: list[Rewrite] = []
    for mean in list(net.layers):
        if mean.kind is not LayerKind.REDUCE or not any(la is mean for la in net.layers):
            continue
        found = _match(net, mean, net.consumers(), net.producers())
        if found is None:
            continue
        chain, eps, weights = found
        axes = _mean_axes(net, mean)
        consts = [t for la in chain for t in la.inputs]
        new = fused_layer(net, chain, NormalizationParams(axes, eps), [mean.inputs[0]], chain[-1].outputs, weights,
                          name=" + ".join(la.name for la in chain))
        net.replace_layer(chain, new)
        drop_unused_constants(net, consts)
        rewrites.append(Rewrite(NAME, "fuse", tuple(la.name for la in chain), new.name))
    return rewrites
