"""Convolution / Deconvolution / FullyConnected + Activation fusion (ConvReluFusion and kin).

The fused epilogue computes ``act(gemm(x) + bias [+ residual])``, exactly what the activation
layer applied to the unfused output computes, for every ActivationType. Fused only when the
activation is the output's only reader, the output is not a network output, and the layer has
no activation yet (a residual convolution without activation takes one: the activation then
follows the residual add, as in the unfused graph).
"""

from __future__ import annotations

from engine.layers import ActivationParams, ActivationType, LayerKind
from engine.network import Layer, Network
from engine.optimizer.graph import fused_layer, same_pins, sole_consumer
from engine.optimizer.rewrite import Rewrite

PREFIX = {LayerKind.CONVOLUTION: "Conv", LayerKind.DECONVOLUTION: "Deconv", LayerKind.FULLY_CONNECTED: "Fc"}


def _label(producer: Layer, act: ActivationParams) -> str:
    kind = "Relu" if act.activation.type is ActivationType.RELU else "Activation"
    return f"{PREFIX[producer.kind]}{kind}Fusion"


def run(net: Network) -> list[Rewrite]:
    rewrites: list[Rewrite] = []
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
        new = fused_layer(net, [producer, act], producer.params.replace(activation=params.activation),
                          producer.inputs, act.outputs, producer.weights)
        net.replace_layer([producer, act], new)
        rewrites.append(Rewrite(_label(producer, params), "fuse", (producer.name, act.name), new.name))
    return rewrites
