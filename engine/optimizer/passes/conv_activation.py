"""Convolution / Deconvolution / FullyConnected + Activation fusion (ConvReluFusion and kin).

The fused epilogue computes ``act(gemm(x) + bias [+ residual])``, exactly what the activation
layer applied to the unfused output computes, for every ActivationType. Fused only when the
activation is the output's only reader, the output is not a network output, and the layer has
no activation yet (a residual convolution without activation takes one: the activation then
follows the residual add, as in the unfused graph).

SiLU as exporters write it, ``Mul(x, Sigmoid(x))`` with ``x`` a convolution's output read by
exactly those two layers, becomes a SiLU epilogue too (TensorRT fuses it the same way). The
fused epilogue computes ``x / (1 + exp(-x))`` in fp32 and rounds once, where the unfused FP16
graph rounds the sigmoid to fp16 first: the results differ by at most an fp16 rounding step.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.ir.layers import ActivationParams, ActivationSpec, ActivationType, ElementWiseOp, LayerKind
from engine.ir.network import Layer, Network
from engine.optimizer.graph import fused_layer, same_pins, sole_consumer
from engine.optimizer.rewrite import Rewrite

PREFIX = {LayerKind.CONVOLUTION: "Conv", LayerKind.DECONVOLUTION: "Deconv", LayerKind.FULLY_CONNECTED: "Fc"}


def _label(producer: Layer, act: ActivationParams) -> str:
    kind = "Relu" if act.activation.type is ActivationType.RELU else "Activation"
    return f"{PREFIX[producer.kind]}{kind}Fusion"


def _silu_triples(net: Network) -> list[tuple[Layer, Layer, Layer]]:
    """(producer, sigmoid, mul) for every ``x * sigmoid(x)`` on a fusable convolution output."""
    uses = net.consumers()
    out = []
    for sig in net.layers:
        if sig.kind is not LayerKind.ACTIVATION or sig.params.activation.type is not ActivationType.SIGMOID:
            continue
        x, s = sig.inputs[0], sig.outputs[0]
        producer = net.producer(x)
        if producer is None or producer.kind not in PREFIX or getattr(producer.params, "activation", None) is not None:
            continue
        mul = sole_consumer(net, s, uses)
        if (mul is None or mul.kind is not LayerKind.ELEMENTWISE or mul.params.op is not ElementWiseOp.PROD
                or sorted(mul.inputs) != sorted([x, s]) or x == s):
            continue
        readers = uses.get(x, [])
        if x in net.outputs or len(readers) != 2 or not any(r is sig for r in readers) or \
                not any(r is mul for r in readers):
            continue
        if net.tensors[mul.outputs[0]].shape != net.tensors[x].shape or not same_pins(producer, sig, mul):
            continue
        out.append((producer, sig, mul))
    return out


def _fuse_silu(net: Network) -> list[Rewrite]:
    rewrites: list[Rewrite] = []
    for producer, sig, mul in _silu_triples(net):
        spec = ActivationSpec(ActivationType.SILU)
        new = fused_layer(net, [producer, sig, mul], producer.params.replace(activation=spec), producer.inputs,
                          mul.outputs, producer.weights)
        net.replace_layer([producer, sig, mul], new)
        rewrites.append(Rewrite(f"{PREFIX[producer.kind]}ActivationFusion", "fuse",
                                (producer.name, sig.name, mul.name), new.name))
    return rewrites


def run(net: Network, fusable: Callable[[ActivationSpec], bool] | None = None) -> list[Rewrite]:
    """``fusable``: which activations may join a GEMM epilogue (all when None); a DLA-aware build
    keeps out those a DLA cannot run, so fusion never takes a GEMM off the DLA."""
    rewrites: list[Rewrite] = _fuse_silu(net)
    for act in list(net.layers):
        if act.kind is not LayerKind.ACTIVATION:
            continue
        producer = net.producer(act.inputs[0])
        if producer is None or producer.kind not in PREFIX or getattr(producer.params, "activation", None) is not None:
            continue
        if sole_consumer(net, producer.outputs[0], net.consumers()) is not act or not same_pins(producer, act):
            continue
        params = act.params
        assert isinstance(params, ActivationParams)
        if fusable is not None and not fusable(params.activation):
            continue
        new = fused_layer(net, [producer, act], producer.params.replace(activation=params.activation),
                          producer.inputs, act.outputs, producer.weights)
        net.replace_layer([producer, act], new)
        rewrites.append(Rewrite(_label(producer, params), "fuse", (producer.name, act.name), new.name))
    return rewrites
