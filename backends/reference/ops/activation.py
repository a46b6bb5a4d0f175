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
    ActivationType.RELU: lambda x, a, b: _clip(x, 0.0, np.inf),
    ActivationType.LEAKY_RELU: lambda x, a, b: np.where(x >= 0, x, x * _f(a)),
    ActivationType.CLIP: lambda x, a, b: _clip(x, a, b),
    ActivationType.SIGMOID: lambda x, a, b: _sigmoid(x),
    ActivationType.TANH: lambda x, a, b: np.tanh(x),
    ActivationType.HARD_SIGMOID: lambda x, a, b: np.clip(_f(a) * x + _f(b), _f(0.0), _f(1.0)),
    ActivationType.HARD_SWISH: lambda x, a, b: x * np.clip(x / _f(6.0) + _f(0.5), _f(0.0), _f(1.0)),
    ActivationType.SILU: lambda x, a, b: _silu(x),
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


_NEG_LOG2E = np.float32(-np.log2(np.e))


def _one_plus_exp_neg(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """1 + exp(-x) (inf where exp overflows, which the callers' divisions turn into 0).

    exp(-x) is computed as exp2(-x * log2(e)): numpy's float32 exp2 is about twice as fast as
    its exp, and the extra rounding of the argument costs |x| * 2**-24 relative (< 6e-6 over the
    whole range where the result is not saturated).
    """
    out = np.multiply(x, _NEG_LOG2E, out=out)
    np.exp2(out, out=out)
    return np.add(out, _f(1.0), out=out)


def _sigmoid(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    # 1 / (1 + exp(-x)): a few ulp in float32, and several times faster than scipy's expit.
    with np.errstate(over="ignore"):
        d = _one_plus_exp_neg(x, out)
    return np.divide(_f(1.0), d, out=d)


def _silu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        d = _one_plus_exp_neg(x)
        return np.divide(x, d, out=d if out is None else out)


def _clip(x: np.ndarray, lo: float, hi: float, out: np.ndarray | None = None) -> np.ndarray:
    # np.clip propagates NaN like maximum/minimum and is one fast pass.
    return np.clip(x, _f(lo), _f(hi), out=out)


# In-place forms of the commonest epilogues: the same float32 operations as ``_FUNCS`` (so the
# same values), without the temporaries.
_INPLACE: dict[ActivationType, Callable[[np.ndarray, float, float], np.ndarray]] = {
    ActivationType.RELU: lambda x, a, b: _clip(x, 0.0, np.inf, out=x),
    ActivationType.CLIP: lambda x, a, b: _clip(x, a, b, out=x),
    ActivationType.SIGMOID: lambda x, a, b: _sigmoid(x, out=x),
    ActivationType.SILU: lambda x, a, b: _silu(x, out=x),
}


def apply_activation_inplace(x: np.ndarray, spec: ActivationSpec) -> np.ndarray:
    """``apply_activation`` written into ``x`` (a freshly computed, owned float array), returned."""
    fn = _INPLACE.get(spec.type)
    if fn is None:
        x[...] = apply_activation(x, spec)
        return x
    return fn(x, spec.alpha, spec.beta)


def activation(layer, inputs, weights):
    return [apply_activation(inputs[0], layer.params.activation)]


def parametric_relu(layer, inputs, weights):
    x = inputs[0]
    slope = weights["slope"].astype(x.dtype, copy=False)
    return [np.where(x >= 0, x, x * slope).astype(x.dtype, copy=False)]
