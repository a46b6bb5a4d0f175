"""Dispatch of one layer to its numpy kernel, with the backend-wide precision convention.

``KERNELS`` is the reference backend's layer table (``backends.table``): every ``LayerKind`` has
a numpy kernel; INT8 layers dispatch through ``int8.INT8_KERNELS`` the same way.

``run_layer`` converts float inputs and float weights to the layer's compute type, calls the
kernel (which computes in float32 for float data) and rounds float outputs to the precision's
storage type. See ``backends.reference.executor`` for the FP32/FP16 convention in full.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import numpy as np

from backends.table import Unsupported, check_complete, lookup
from engine.ir.dtypes import Precision
from engine.ir.layers import LayerKind
from engine.ir.network import Layer

from . import int8
from .ops import activation, conv, linalg, normalize, plugin, pointwise, pool, recurrent, resize, tensor_ops

Kernel = Callable[[Layer, list[np.ndarray], dict[str, np.ndarray]], list[np.ndarray]]

KERNELS: dict[LayerKind, Kernel | Unsupported] = {
    LayerKind.CONVOLUTION: conv.convolution,
    LayerKind.DECONVOLUTION: conv.deconvolution,
    LayerKind.POOLING: pool.pooling,
    LayerKind.ACTIVATION: activation.activation,
    LayerKind.PARAMETRIC_RELU: activation.parametric_relu,
    LayerKind.SCALE: pointwise.scale,
    LayerKind.ELEMENTWISE: pointwise.elementwise,
    LayerKind.UNARY: pointwise.unary,
    LayerKind.LRN: normalize.lrn,
    LayerKind.MATRIX_MULTIPLY: linalg.matrix_multiply,
    LayerKind.FULLY_CONNECTED: linalg.fully_connected,
    LayerKind.SOFTMAX: normalize.softmax,
    LayerKind.CONCATENATION: tensor_ops.concatenation,
    LayerKind.SHUFFLE: tensor_ops.shuffle,
    LayerKind.SLICE: tensor_ops.slice_,
    LayerKind.SPLIT: tensor_ops.split,
    LayerKind.RESIZE: resize.resize,
    LayerKind.REDUCE: normalize.reduce,
    LayerKind.PADDING: tensor_ops.padding,
    LayerKind.CONSTANT: tensor_ops.constant,
    LayerKind.GATHER: tensor_ops.gather,
    LayerKind.CAST: tensor_ops.cast,
    LayerKind.NORMALIZATION: normalize.normalization,
    LayerKind.IDENTITY: tensor_ops.identity,
    LayerKind.POINTWISE: pointwise.pointwise,
    LayerKind.QUANTIZE: lambda layer, xs, ws: int8.run_quantize(layer, xs),
    LayerKind.DEQUANTIZE: lambda layer, xs, ws: int8.run_dequantize(layer, xs),
    LayerKind.RNN: recurrent.recurrent,
    LayerKind.LSTM: recurrent.recurrent,
    LayerKind.GRU: recurrent.recurrent,
    LayerKind.PLUGIN: plugin.plugin,
}
check_complete(KERNELS, "reference")

# Kinds whose kernels always compute into newly allocated arrays (never a view of an input or weight).
_FRESH_OUTPUTS = frozenset({LayerKind.CONVOLUTION, LayerKind.DECONVOLUTION, LayerKind.FULLY_CONNECTED})

_STORAGE = {Precision.FP32: np.dtype(np.float32), Precision.FP16: np.dtype(np.float16)}


def to_compute(a: np.ndarray, precision: Precision) -> np.ndarray:
    """A float array as the kernel sees it: float32, first rounded to float16 for an FP16 layer."""
    if a.dtype.kind != "f":
        return a
    if precision is Precision.FP16:
        a = a.astype(np.float16, copy=False)
    return a.astype(np.float32, copy=False)


# FP16 copies of weight arrays, reused across runs (passes replace weights, they never mutate them).
_FP16_WEIGHTS: dict[int, tuple[weakref.ref, np.ndarray]] = {}


def _weight_to_compute(w: np.ndarray, precision: Precision) -> np.ndarray:
    if precision is not Precision.FP16 or w.dtype.kind != "f":
        return to_compute(w, precision)
    key = id(w)
    hit = _FP16_WEIGHTS.get(key)
    if hit is not None and hit[0]() is w:
        return hit[1]
    rounded = to_compute(w, precision)
    rounded.flags.writeable = False
    try:
        ref = weakref.ref(w, lambda _, k=key: _FP16_WEIGHTS.pop(k, None))
    except TypeError:
        return rounded
    _FP16_WEIGHTS[key] = (ref, rounded)
    return rounded


def to_storage(a: np.ndarray, precision: Precision) -> np.ndarray:
    """A float output as it is stored between layers: float32 (FP32) or float16 (FP16)."""
    if a.dtype.kind != "f" or a.dtype == _STORAGE[precision]:
        return a
    with np.errstate(over="ignore"):
        return a.astype(_STORAGE[precision], copy=False)


def run_layer(layer: Layer, inputs: list[np.ndarray], precision: Precision | None = None,
              any_layout: bool = False) -> list[np.ndarray]:
    """Compute ``layer`` on ``inputs``; ``precision`` defaults to ``layer.precision or FP32``.

    Outputs are C-contiguous unless ``any_layout``: then they may keep the memory layout a kernel
    computed them in (convolutions: channels-last), which the next layer reads without a copy.
    """
    outs = _run_layer(layer, inputs, precision)
    return outs if any_layout else [np.ascontiguousarray(o) if o.ndim else o for o in outs]


_F32 = np.dtype(np.float32)


def _fp32_ready(arrays) -> bool:
    """Whether every array is already a numpy array whose FP32 compute form is itself (float32 or
    not a float), so that the conversions of ``_run_layer`` would all return their argument."""
    return all(type(a) is np.ndarray and (a.dtype == _F32 or a.dtype.kind != "f") for a in arrays)


def _run_layer(layer: Layer, inputs: list[np.ndarray], precision: Precision | None) -> list[np.ndarray]:
    precision = precision or layer.precision or Precision.FP32
    if type(precision) is not Precision:
        precision = Precision(precision)
    if precision is Precision.INT8:
        return int8.run_layer(layer, inputs, precision)  # exact integer emulation
    kind = layer.kind
    kernel = lookup(KERNELS, layer, "reference")
    weights = layer.weights
    if precision is Precision.FP32 and _fp32_ready(inputs) and _fp32_ready(weights.values()):
        xs, ws = list(inputs), dict(weights)  # every conversion below would be the identity
    else:
        xs = [to_compute(np.asarray(x), precision) for x in inputs]
        ws = {k: _weight_to_compute(w, precision) for k, w in weights.items()}
    outs = kernel(layer, xs, ws)
    if kind is not LayerKind.CAST:  # a cast's output type is its target type, whatever the precision
        storage = _STORAGE[precision]
        outs = [o if o.dtype == storage else to_storage(o, precision) for o in outs]
    if kind in _FRESH_OUTPUTS:
        return outs
    # Outputs own their memory: data-movement kernels return views, which must not alias the
    # caller's inputs or the layer's weights.
    sources = [*inputs, *layer.weights.values()]
    return [o.copy() if any(np.may_share_memory(o, s) for s in sources) else o for o in outs]
