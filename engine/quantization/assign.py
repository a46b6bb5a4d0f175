"""Which layers run in INT8, with which scales (the builder's INT8 step).

Input: the optimized network and one scale per float tensor — from calibration (implicit
quantization: every tensor has one) or from folded Q/DQ pairs (explicit quantization: only the
tensors the model quantizes). Rules, in TensorRT's spirit:

* Convolution (2-D; epilogue none, ReLU or clip(0, max); optional fused residual), fully
  connected and pooling (max; average without excluded padding; 2-D) run INT8 when every input
  has a scale and the requantization multipliers are representable. Explicit quantization also
  needs Q/DQ weights (a convolution whose weights were not quantized by the model stays float).
* Pooling and pure data movement (shuffle, identity, slice) keep their input's scale on their
  output — INT8 pooling needs equal input and output scales (the DLA rule), and moving data does
  not change its range. In explicit mode a scale the model gives is never overridden.
* An INT8 layer's output is requantized to int8 when its tensor has a scale — with calibration,
  network outputs excepted (TensorRT keeps FP32 network outputs); with Q/DQ, whenever the model
  quantizes it. Otherwise it leaves in float.
* SiLU and hard-swish epilogues run INT8 where ``nonlinear`` allows (the builder allows every
  layer: the DLA computes them on its SDP, lookup table / clipped ramp then an element-wise
  multiply; the GPU's INT8 convolution kernels evaluate the exact function in float64). They need
  an int8 output: a calibrated network's float output keeps them in float (the DLA's multiply
  pass writes int8 only).
* Layers pinned with ``layer_precisions`` and layers INT8 cannot run keep their float precision
  (FP16 when the fp16 flag is on); each is reported with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engine.ir import int8_annotation as annotation
from engine.ir.dtypes import Precision
from engine.ir.errors import UnsupportedError
from engine.ir.int8_math import quantize, requant_params, weight_scales
from engine.ir.int8_rules import epilogue_reason, nonlinear_epilogue, pool_reason
from engine.ir.layers import LayerKind
from engine.ir.network import Layer, Network

_MOVES = (LayerKind.SHUFFLE, LayerKind.IDENTITY, LayerKind.SLICE)


@dataclass
class Int8Assignment:
    int8_layers: list[str] = field(default_factory=list)
    float_layers: dict[str, str] = field(default_factory=dict)  # layer → why it is not INT8
    scales: dict[str, np.float32] = field(default_factory=dict)  # after propagation


NONLINEAR_REFUSED = "this build does not take INT8 {act} epilogues (the nonlinear rule refuses the layer)"


def _weighted_reason(layer: Layer, network: Network, scales: dict, implicit: bool,
                     nonlinear: Callable[[Layer], bool]) -> str | None:
    p = layer.params
    if layer.kind is LayerKind.CONVOLUTION and len(p.kernel) != 2:
        return "INT8 convolution is 2-D only"
    why = epilogue_reason(p.activation)
    if why:
        return why
    kind = nonlinear_epilogue(p.activation)
    if kind is not None and not nonlinear(layer):
        return NONLINEAR_REFUSED.format(act=kind.value)
    if not implicit and annotation.KERNEL_SCALES not in layer.weights:
        return "its weights are not quantized by the model (no DequantizeLinear on them)"
    if layer.weights["kernel"].dtype.kind != "f" and layer.weights["kernel"].dtype != np.int8:
        return f"kernel of type {layer.weights['kernel'].dtype}"
    return None


def _spec_for(layer: Layer, network: Network, scales: dict, implicit: bool) -> annotation.Int8Spec:
    ins = tuple(float(scales[t]) for t in layer.inputs)
    out_t = layer.outputs[0]
    out = float(scales[out_t]) if out_t in scales else None
    if implicit and out_t in network.outputs:
        out = None  # calibrated networks keep float outputs; a Q/DQ model may ask for a quantized one
    if layer.kind is LayerKind.POOLING:
        return annotation.Int8Spec(ins, ins[0])
    w = layer.weights["kernel"]
    ks = layer.weights.get(annotation.KERNEL_SCALES)
    if ks is None:
        ks = weight_scales(w, axis=0)
    s_acc = np.float64(ins[0]) * np.asarray(ks, dtype=np.float64)
    if out is not None:
        requant_params(s_acc / np.float64(out))  # raises when not representable
    if len(ins) > 1:
        requant_params(np.float64(ins[1]) / s_acc)
    return annotation.Int8Spec(ins, out, np.asarray(ks, dtype=np.float32))


def assign_int8(network: Network, scales: dict[str, np.float32], pinned: Callable[[Layer], bool],
                implicit: bool, nonlinear: bool | Callable[[Layer], bool] = False) -> Int8Assignment:
    """Mark INT8 layers in place (precision, scales, int8 kernels); see the module doc.
    ``nonlinear``: whether a layer's SiLU / hard-swish epilogue may run INT8 (the builder: always)."""
    allow = nonlinear if callable(nonlinear) else (lambda _layer: bool(nonlinear))
    result = Int8Assignment(scales=dict(scales))
    sc = result.scales
    for layer in network.layers:
        if layer.kind is LayerKind.CONSTANT or layer.kind in (LayerKind.QUANTIZE, LayerKind.DEQUANTIZE):
            continue
        if pinned(layer):
            result.float_layers[layer.name] = f"pinned to {layer.precision.value if layer.precision else 'fp32'}"
            continue
        x = layer.inputs[0] if layer.inputs else None
        if layer.kind in _MOVES:
            if x in sc:
                for t in layer.outputs:
                    if implicit or t not in sc:
                        sc[t] = sc[x]
            continue
        missing = [t for t in layer.inputs if t not in sc]
        if layer.kind in (LayerKind.CONVOLUTION, LayerKind.FULLY_CONNECTED):
            why = _weighted_reason(layer, network, sc, implicit, allow)
        elif layer.kind is LayerKind.POOLING:
            why = pool_reason(layer.params, len(network.tensors[x].shape))
        else:
            why = f"{layer.kind.value} has no INT8 kernel"
        if why is None and missing:
            why = f"input(s) {missing} have no scale (no calibration range or Q/DQ)"
        if why is None:
            if layer.kind is LayerKind.POOLING:
                for t in layer.outputs:
                    if implicit or t not in sc:
                        sc[t] = sc[x]
            try:
                spec = _spec_for(layer, network, sc, implicit)
            except UnsupportedError as e:
                why = str(e)
            else:
                kind = nonlinear_epilogue(getattr(layer.params, "activation", None))
                if kind is not None and spec.output_scale is None:
                    why = (f"an INT8 {kind.value} epilogue needs an int8 output; this one leaves in float (the "
                           f"DLA requantizes its SDP product to int8 only)")
        if why is not None:
            result.float_layers[layer.name] = why
            continue
        if spec.kernel_scales is not None and layer.weights["kernel"].dtype != np.int8:
            layer.weights["kernel"] = quantize(layer.weights["kernel"], spec.kernel_scales, axis=0)
        annotation.write(layer, spec)
        layer.precision = Precision.INT8
        result.int8_layers.append(layer.name)
    return result
