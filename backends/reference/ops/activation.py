"""Activation functions with ONNX semantics, shared by Activation layers and fused epilogues.

Every function maps a float32 array to a float32 array; parameters are taken literally from the
``ActivationSpec`` (alpha/beta are never replaced by ONNX defaults: the parser resolves those).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import special

from engine.ir.layers import ActivationSpec, ActivationType

_SQRT_2_OVER_PI = np.float32(np.sqrt(2.0 / np.pi))
_INV_SQRT_2 = np.float32(1.0 / np.sqrt(2.0))


def _f(v: float) -> np.float32:
    return np.float32(v)


def _softplus(x: np.ndarray) -> np.ndarray:
    # log(1 + exp(x)) without overflow for large x.
    return np.logaddexp(_f(0.0), x)


def _elu_neg(x: np.ndarray, alpha: np.float32) -> np.ndarray:
    return alpha * np.expm1(np.minimum(x, _f(0.0)))


_FUNCS: dict[ActivationType, Callable[[np.ndarray, float, float], np.ndarray]] = {
    ActivationType.RELU: lambda x, a, b: np.maximum(x, _f(0.0)),
    ActivationType.LEAKY_RELU: lambda x, a, b: np.where(x >= 0, x, x * _f(a)),
    ActivationType.CLIP: lambda x, a, b: np.minimum(np.maximum(x, _f(a)), _f(b)),
    ActivationType.SIGMOID: lambda x, a, b: special.expit(x),
    ActivationType.TANH: lambda x, a, b: np.tanh(x),
    ActivationType.HARD_SIGMOID: lambda x, a, b: np.clip(_f(a) * x + _f(b), _f(0.0), _f(1.0)),
    ActivationType.HARD_SWISH: lambda x, a, b: x * np.clip(x / _f(6.0) + _f(0.5), _f(0.0), _f(1.0)),
    ActivationType.SILU: lambda x, a, b: x * special.expit(x),
    ActivationType.GELU_ERF: lambda x, a, b: _f(0.5) * x * (_f(1.0) + special.erf(x * _INV_SQRT_2)),
    ActivationType.GELU_TANH: lambda x, a, b: _f(0.5) * x * (
        _f(1.0) + np.tanh(_SQRT_2_OVER_PI * (x + _f(0.044715) * x * x * x))),
    ActivationType.SOFTPLUS: lambda x, a, b: _softplus(x),
    ActivationType.SOFTSIGN: lambda x, a, b: x / (_f(1.0) + np.abs(x)),
    ActivationType.ELU: lambda x, a, b: np.where(x > 0, x, _elu_neg(x, _f(a))),
    ActivationType.SELU: lambda x, a, b: _f(b) * np.where(x > 0, x, _elu_neg(x, _f(a))),
    ActivationType.CELU: lambda x, a, b: np.maximum(x, _f(0.0)) + np.minimum(
        _f(0.0), _f(a) * np.expm1(np.minimum(x, _f(0.0)) / _f(a))),
    ActivationType.THRESHOLDED_RELU: lambda x, a, b: np.where(x > _f(a), x, _f(0.0)),
    ActivationType.MISH: lambda x, a, b: x * np.tanh(_softplus(x)),
}


def apply_activation(x: np.ndarray, spec: ActivationSpec) -> np.ndarray:
    """``spec`` applied to the float array ``x``; the result keeps ``x``'s dtype."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        y = _FUNCS[ActivationType(spec.type)](x, spec.alpha, spec.beta)
    return np.asarray(y, dtype=x.dtype)


def activation(layer, inputs, weights):
    return [apply_activation(inputs[0], layer.params.activation)]


def parametric_relu(layer, inputs, weights):
    x = inputs[0]
    slope = weights["slope"].astype(x.dtype, copy=False)
    return [np.where(x >= 0, x, x * slope).astype(x.dtype, copy=False)]
