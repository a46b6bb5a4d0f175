"""Run a whole network with the numpy kernels, layer by layer in the network's order.

Precision convention (shared by every hetrt backend)
----------------------------------------------------
Each layer has a compute precision, ``precision_of(layer)`` (default ``layer.precision or FP32``):

* FP32: float inputs and float weights are converted to float32, the arithmetic runs in float32
  (convolution and matrix products accumulate in float32 through BLAS) and float outputs are
  float32 arrays.
* FP16: float inputs and float weights are first rounded to float16, the arithmetic then runs in
  float32 (as tensor cores and the DLA accumulate in fp32), and float outputs are rounded to
  float16 and stored as float16 arrays.
* INT8: exact integer emulation with the DLA's requantization (``backends.reference.int8``): int8
  inputs and per-channel weights, int32 accumulation, int8 outputs handed on as the float32 value
  q * scale, which holds the integer exactly. Layers without an INT8 kernel raise
  ``UnsupportedError``; nothing INT8 silently computes in float.

Non-float tensors (int8/uint8/int32/int64/bool) pass through untouched. A Cast layer's output has
its target type whatever the precision. Since outputs take the storage type of the producing
layer's precision, a float tensor may reach the caller as float16 although the network declares it
float32 (and the reverse); the values are what the hardware would hold.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engine.ir.dtypes import Precision
from engine.ir.errors import ExecutionError
from engine.ir.memory import step_lifetimes
from engine.ir.network import Layer, Network

from .kernels import run_layer

PrecisionOf = Callable[[Layer], Precision]
Observer = Callable[[Layer, list[np.ndarray]], None]


def default_precision(layer: Layer) -> Precision:
    return layer.precision or Precision.FP32


def check_feeds(network: Network, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every network input present with its declared shape and dtype, and nothing else."""
    unknown = sorted(set(feeds) - set(network.inputs))
    if unknown:
        raise ExecutionError(f"unknown input(s) {unknown}; network '{network.name}' expects {network.inputs}")
    missing = [n for n in network.inputs if n not in feeds]
    if missing:
        raise ExecutionError(f"missing input(s) {missing}; network '{network.name}' expects {network.inputs}")
    checked = {}
    for name in network.inputs:
        t = network.tensors[name]
        a = feeds[name]
        if not isinstance(a, np.ndarray):
            raise ExecutionError(f"input '{name}': expected a numpy array, got {type(a).__name__}")
        if tuple(a.shape) != t.shape:
            raise ExecutionError(f"input '{name}': expected shape {t.shape}, got {tuple(a.shape)}")
        if a.dtype != t.dtype.numpy:
            raise ExecutionError(f"input '{name}': expected dtype {t.dtype.value}, got {a.dtype}")
        checked[name] = a
    return checked


def last_uses(network: Network) -> dict[str, int]:
    """Index of the last layer reading each tensor (network outputs are never freed)."""
    live = step_lifetimes(((layer.inputs, ()) for layer in network.layers), live_out=network.outputs)
    return {t: last for t, (_, last) in live.items()}


def execute(network: Network, feeds: dict[str, np.ndarray], precision_of: PrecisionOf | None = None,
            observer: Observer | None = None) -> dict[str, np.ndarray]:
    """Compute the network's outputs for ``feeds``; intermediates are dropped after their last use."""
    precision_of = precision_of or default_precision
    values: dict[str, np.ndarray] = dict(check_feeds(network, feeds))
    last = last_uses(network)
    kept = set(network.outputs)
    tensors = network.tensors
    for i, layer in enumerate(network.layers):
        try:
            args = [values[t] for t in layer.inputs]
        except KeyError as e:
            raise ExecutionError(f"layer {layer.describe()}: input tensor {e} is not available") from None
        outs = run_layer(layer, args, precision_of(layer), any_layout=True)
        for name, out in zip(layer.outputs, outs):
            want = tensors[name].shape
            if out.shape != want:
                raise ExecutionError(f"layer {layer.describe()}: output '{name}' has shape {tuple(out.shape)}, "
                                     f"the network declares {want}")
            values[name] = out
        if observer is not None:
            observer(layer, outs)
        for t in (*layer.inputs, *layer.outputs):
            if t not in kept and last.get(t, -1) <= i:
                values.pop(t, None)
    missing = [t for t in network.outputs if t not in values]
    if missing:
        raise ExecutionError(f"network '{network.name}': output(s) {missing} were never produced")
    return {t: np.ascontiguousarray(values[t]) if values[t].ndim else values[t] for t in network.outputs}
