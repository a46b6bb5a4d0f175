"""MatrixMultiply (numpy.matmul semantics) and FullyConnected (x @ W.T + b, fused activation)."""

from __future__ import annotations

import numpy as np

from .activation import apply_activation


def _t(a: np.ndarray, flag: bool) -> np.ndarray:
    return np.swapaxes(a, -1, -2) if flag and a.ndim >= 2 else a


def matrix_multiply(layer, inputs, weights):
    p = layer.params
    a, b = inputs
    return [np.asarray(np.matmul(_t(a, p.transpose_a), _t(b, p.transpose_b)))]


def fully_connected(layer, inputs, weights):
    x = inputs[0]
    w = weights["kernel"].astype(x.dtype, copy=False)
    y = np.asarray(np.matmul(x, w.T))
    if "bias" in weights:
        y = y + weights["bias"].astype(x.dtype, copy=False)
    if layer.params.activation is not None:
        y = apply_activation(y, layer.params.activation)
    return [y.astype(x.dtype, copy=False)]
