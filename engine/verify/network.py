"""Semantic checks of a decoded plan network: parameters, wiring, weights and sizes.

``plan.py`` has already checked the manifest's shape (keys, JSON types, tensor references, blob
table) and ``Network.validate`` the order and the shapes each layer infers. This adds what those
trust: parameter fields against their types and ranges, input counts per kind, weight element
types, and every tensor size against the ``ResourceLimits`` budget, in one pass over the layers.
"""

from __future__ import annotations

import math

from engine.ir.dtypes import Precision
from engine.ir.errors import PlanError
from engine.ir.layers import PARAMS_BY_KIND, LayerKind, ResizeParams
from engine.ir.memory import peak_live_bytes
from engine.ir.network import Layer, Network

from .limits import ResourceLimits
from .schema import SchemaError, check_record

# Kinds whose weights are arithmetic operands: float (integer only in INT8 layers; a bool kernel or
# an int8 kernel of a float layer is a forged plan).
FLOAT_WEIGHT_KINDS = frozenset({LayerKind.CONVOLUTION, LayerKind.DECONVOLUTION, LayerKind.FULLY_CONNECTED,
                                LayerKind.SCALE, LayerKind.PARAMETRIC_RELU, LayerKind.NORMALIZATION})
# Kinds whose kernels need at least one element (window arithmetic, reductions over the input).
NO_EMPTY_KINDS = frozenset({LayerKind.CONVOLUTION, LayerKind.DECONVOLUTION, LayerKind.POOLING,
                            LayerKind.FULLY_CONNECTED, LayerKind.LRN, LayerKind.NORMALIZATION, LayerKind.RESIZE})
_WEIGHT_KINDS = {(LayerKind.QUANTIZE, "scale"): "f", (LayerKind.DEQUANTIZE, "scale"): "f",
                 (LayerKind.GATHER, "indices"): "iu"}


def _fail(layer: Layer, msg: str) -> PlanError:
    return PlanError(f"plan manifest: layer '{layer.name}' ({layer.kind.value}): {msg}")


def check_layer(layer: Layer, network: Network, limits: ResourceLimits) -> None:
    cls = PARAMS_BY_KIND[layer.kind]
    try:
        check_record(layer.params, cls, "params")
    except SchemaError as e:
        raise _fail(layer, str(e)) from None
    n = len(layer.inputs)
    if not cls.min_inputs <= n <= cls.max_inputs:
        want = cls.min_inputs if cls.min_inputs == cls.max_inputs else f"{cls.min_inputs}..{cls.max_inputs}"
        raise _fail(layer, f"inputs: {n} tensors, a {layer.kind.value} layer takes {want}")
    if not layer.outputs:
        raise _fail(layer, "outputs: a layer produces at least one tensor")
    for name, w in layer.weights.items():
        want = "f" if layer.kind in FLOAT_WEIGHT_KINDS else _WEIGHT_KINDS.get((layer.kind, name))
        if want == "f" and layer.precision is Precision.INT8:
            want = "fi"  # INT8 layers of DLA partitions keep their quantized integer weights
        if want is not None and w.dtype.kind not in want:
            raise _fail(layer, f"weights '{name}': element type {w.dtype} where "
                               f"{'a float' if want == 'f' else 'an integer'} type is required")
    if layer.kind in NO_EMPTY_KINDS and layer.inputs and layer.inputs[0] in network.tensors:
        shape = network.tensors[layer.inputs[0]].shape
        if 0 in shape:
            raise _fail(layer, f"input '{layer.inputs[0]}' has shape {list(shape)}: a {layer.kind.value} layer "
                               f"cannot run on an empty tensor (batch 0?)")
    if layer.kind is LayerKind.RESIZE:
        _check_resize(layer, network, limits)


def _check_resize(layer: Layer, network: Network, limits: ResourceLimits) -> None:
    """Bound the exact (rational) coordinate arithmetic of the reference resize before it runs."""
    p: ResizeParams = layer.params  # type: ignore[assignment]
    for ax, n in enumerate(p.output_shape):
        if not 1 <= n <= limits.max_resize_axis:
            raise _fail(layer, f"params.output_shape[{ax}] = {n} is outside [1, {limits.max_resize_axis}]")
    top = limits.max_resize_scale
    for ax, s in enumerate(p.scales or ()):
        if not 1.0 / top <= s <= top:
            raise _fail(layer, f"params.scales[{ax}] = {s!r} is outside [1/{top:g}, {top:g}]")
    if p.scales is not None and layer.inputs and layer.inputs[0] in network.tensors:
        shape = network.tensors[layer.inputs[0]].shape
        for ax, (i, o, s) in enumerate(zip(shape, p.output_shape, p.scales)):
            if abs(o - i * s) > 1.0 + 1e-6 * o:
                raise _fail(layer, f"params.scales[{ax}] = {s!r} maps {i} elements to {i * s:g}, not to the "
                                   f"output's {o}")


def check_sizes(network: Network, limits: ResourceLimits) -> None:
    """Element counts, dims and the bytes held at once (weights plus the tensors live at one step),
    before any allocation."""
    if len(network.layers) > limits.max_layers:
        raise PlanError(f"plan network has {len(network.layers)} layers, more than the limit of {limits.max_layers}")
    nbytes = {}
    for t in network.tensors.values():
        if any(d > limits.max_dim for d in t.shape):
            raise PlanError(f"plan manifest: tensor '{t.name}': shape {list(t.shape)} has a dimension above "
                            f"{limits.max_dim}")
        count = math.prod(t.shape)
        if count > limits.max_tensor_elements:
            raise PlanError(f"plan manifest: tensor '{t.name}': shape {list(t.shape)} holds {count} elements, more "
                            f"than the limit of {limits.max_tensor_elements}")
        nbytes[t.name] = count * t.dtype.itemsize
    weights = sum(w.nbytes for layer in network.layers for w in layer.weights.values())
    live = peak_live_bytes(network, nbytes)
    if weights + live > limits.max_total_bytes:
        raise PlanError(f"plan network needs {weights + live} bytes of tensors and weights at once ({weights} of "
                        f"weights, {live} of tensors live at one step), more than the limit of "
                        f"{limits.max_total_bytes}")


def check_network(network: Network, limits: ResourceLimits) -> None:
    """Everything above, layer by layer (linear in the number of layers)."""
    check_sizes(network, limits)
    for layer in network.layers:
        check_layer(layer, network, limits)
