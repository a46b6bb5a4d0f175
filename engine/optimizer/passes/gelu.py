"""GELU recognition: the erf formula exporters write becomes one GELU activation (TensorRT's GeluFusion).

PyTorch's ``nn.GELU()`` exports as ``Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5)``; TensorFlow
and Hugging Face write ``Mul(Mul(x, 0.5), Add(Erf(Mul(x, 1/sqrt 2)), 1))``. Both compute
``0.5·x·(1 + erf(x/√2))``, the exact GELU, so the five layers become one Activation(GELU_ERF)
and the convolution / fully connected epilogue fusion that runs next can take it (the GPU then
computes it in the GEMM's epilogue instead of five passes over memory).

Matched only when every intermediate has exactly one reader (``x`` itself has two: the Erf
branch and the product) and every constant is a scalar (any shape of one element) within
1e-6 relative of the formula's value. The fused activation computes the formula in fp32 and
rounds once; the unfused FP16 graph rounds after each of the five steps, so FP16 results differ
by a few fp16 rounding steps at most.
"""

from __future__ import annotations

import math

from engine.ir.layers import ActivationParams, ActivationSpec, ActivationType, ElementWiseOp, LayerKind, UnaryOp
from engine.ir.network import Layer, Network
from engine.optimizer.graph import (
    drop_unused_constants,
    fused_layer,
    is_elementwise,
    other_input,
    same_pins,
    scalar_constant,
    sole_consumer,
)
from engine.optimizer.rewrite import Rewrite

NAME = "GeluFusion"


def _close(a: float | None, b: float) -> bool:
    return a is not None and abs(a - b) <= 1e-6 * abs(b)


def _scaled_input(producers: dict[str, Layer], layer: Layer) -> str | None:
    """x when ``layer`` computes x / sqrt(2) or x * (1 / sqrt(2)) with a scalar constant."""
    if is_elementwise(layer, ElementWiseOp.DIV) and _close(scalar_constant(producers, layer.inputs[1]), math.sqrt(2.0)):
        return layer.inputs[0]
    if is_elementwise(layer, ElementWiseOp.PROD):
        for x, c in (layer.inputs, layer.inputs[::-1]):
            if _close(scalar_constant(producers, c), 1.0 / math.sqrt(2.0)):
                return x
    return None


def _half_of(producers: dict[str, Layer], layer: Layer | None, tensor: str) -> bool:
    """True when ``layer`` computes tensor * 0.5 (or 0.5 * tensor)."""
    if not is_elementwise(layer, ElementWiseOp.PROD):
        return False
    other = other_input(layer, tensor)
    return other is not None and _close(scalar_constant(producers, other), 0.5)


def _match(net: Network, erf: Layer, uses, producers) -> tuple[str, list[Layer]] | None:
    """(x, the layers from the scaling to the final product) of one GELU around ``erf``."""
    scale = producers.get(erf.inputs[0])
    x = _scaled_input(producers, scale) if scale is not None else None
    if x is None or sole_consumer(net, scale.outputs[0], uses) is not erf:
        return None
    add = sole_consumer(net, erf.outputs[0], uses)
    one = other_input(add, erf.outputs[0]) if add is not None else None
    if not is_elementwise(add, ElementWiseOp.SUM) or not _close(scalar_constant(producers, one or ""), 1.0):
        return None
    t = add.outputs[0]
    prod = sole_consumer(net, t, uses)
    if not is_elementwise(prod, ElementWiseOp.PROD):
        return None
    partner = other_input(prod, t)
    if partner == x:  # (x * (1 + erf)) * 0.5
        half = sole_consumer(net, prod.outputs[0], uses)
        if not _half_of(producers, half, prod.outputs[0]):
            return None
        chain = [scale, erf, add, prod, half]
    else:  # (x * 0.5) * (1 + erf)
        half = producers.get(partner) if partner is not None else None
        if not _half_of(producers, half, x) or sole_consumer(net, half.outputs[0], uses) is not prod:
            return None
        chain = [half, scale, erf, add, prod]
    readers = uses.get(x, [])
    inside = {id(la) for la in chain}
    if len(readers) != 2 or not all(id(r) in inside for r in readers) or not same_pins(*chain):
        return None
    if net.tensors[chain[-1].outputs[0]].shape != net.tensors[x].shape:
        return None
    return x, chain


def run(net: Network) -> list[Rewrite]:
    rewrites: list[Rewrite] = []
    for erf in list(net.layers):
        if erf.kind is not LayerKind.UNARY or erf.params.op is not UnaryOp.ERF:
            continue  # (an Erf is only ever removed by the fusion of its own GELU)
        found = _match(net, erf, net.consumers(), net.producers())
        if found is None:
            continue
        x, chain = found
        consts = [t for la in chain for t in la.inputs]
        new = fused_layer(net, chain, ActivationParams(ActivationSpec(ActivationType.GELU_ERF)), [x],
                          chain[-1].outputs, {}, name=" + ".join(la.name for la in chain))
        net.replace_layer(chain, new)
        drop_unused_constants(net, consts)
        rewrites.append(Rewrite(NAME, "fuse", tuple(la.name for la in chain), new.name))
    return rewrites
