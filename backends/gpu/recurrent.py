"""RNN, LSTM and GRU on the GPU: the reference recurrence run with CuPy arrays.

Each time step is a cuBLAS GEMM plus CuPy element-wise kernels. cuBLAS calls cannot be captured in
the partition's CUDA graphs, so a recurrent layer is not lowered into a segment: it splits the
partition like a reference-backend layer, but runs on the device, eagerly on the context's stream
between the graphs (no host round trip). Weights are uploaded once per partition.

Precision follows the reference backend: an FP16 layer rounds its inputs and weights to fp16,
computes in fp32 and stores fp16 outputs. Importing this module does not import CuPy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.ir.dtypes import Precision
from engine.ir.layers import LayerKind
from engine.ir.network import Layer

RECURRENT_KINDS = frozenset({LayerKind.RNN, LayerKind.LSTM, LayerKind.GRU})


def _precision(layer: Layer) -> Precision:
    return Precision(layer.precision or Precision.FP32)


def runs_here(layer: Layer) -> bool:
    """Recurrent layers in FP32 or FP16 (INT8 ones take the reference backend's exact path)."""
    return layer.kind in RECURRENT_KINDS and _precision(layer) is not Precision.INT8


def _compute(a: Any, precision: Precision) -> Any:
    if a.dtype.kind != "f":
        return a
    if precision is Precision.FP16:
        a = a.astype(np.float16, copy=False)
    return a.astype(np.float32, copy=False)


def upload(layer: Layer) -> dict[str, Any]:
    """The layer's weights on the device, in compute form (fp16-rounded for FP16 layers). The copies
    and conversions run on the current stream; the device is synchronized before returning, because
    ``run`` reads them from a context's non-blocking stream, which is not ordered after that one."""
    import cupy

    prec = _precision(layer)
    weights = {k: _compute(cupy.asarray(np.ascontiguousarray(w)), prec) for k, w in layer.weights.items()}
    cupy.cuda.Device().synchronize()
    return weights


def run(layer: Layer, inputs: list[Any], weights: dict[str, Any], stream: Any) -> list[Any]:
    """Outputs (CuPy arrays, storage dtype) of ``layer`` for host or device ``inputs``; synchronizes
    ``stream`` before returning so host readers and other streams see finished results."""
    import cupy

    from backends.reference.ops.recurrent import recurrent

    prec = _precision(layer)
    storage = np.float16 if prec is Precision.FP16 else np.float32
    with stream:
        xs = [_compute(cupy.asarray(x), prec) for x in inputs]
        outs = [o.astype(storage, copy=False) for o in recurrent(layer, xs, weights, xp=cupy)]
    stream.synchronize()
    return outs
