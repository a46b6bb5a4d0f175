"""Activations, unary math, binary element-wise ops, comparisons and logic."""

from __future__ import annotations

import numpy as np

from engine.ir.layers import (
    ActivationParams,
    ActivationSpec,
    ActivationType,
    CastParams,
    ElementWiseOp,
    ElementWiseParams,
    IdentityParams,
    ParametricReLUParams,
    ScaleMode,
    ScaleParams,
    UnaryOp,
    UnaryParams,
)
from engine.onnx_parser.context import NodeContext, Ref, hetrt_dtype
from engine.onnx_parser.registry import converter

# ------------------------------------------------------------------------------------------
# activations

_SELU_ALPHA = 1.67326319217681884765625
_SELU_GAMMA = 1.05070102214813232421875


def _activation(nc: NodeContext, spec: ActivationSpec) -> list[Ref]:
    return [nc.add1(ActivationParams(spec), [nc.input(0)])]


@converter("Relu")
def relu(nc):
    return _activation(nc, ActivationSpec(ActivationType.RELU))


@converter("LeakyRelu")
def leaky_relu(nc):
    return _activation(nc, ActivationSpec(ActivationType.LEAKY_RELU, float(nc.attr("alpha", 0.01))))


@converter("Sigmoid")
def sigmoid(nc):
    return _activation(nc, ActivationSpec(ActivationType.SIGMOID))


@converter("Tanh")
def tanh(nc):
    return _activation(nc, ActivationSpec(ActivationType.TANH))


@converter("HardSigmoid")
def hard_sigmoid(nc):
    return _activation(nc, ActivationSpec(ActivationType.HARD_SIGMOID, float(nc.attr("alpha", 0.2)),
                                          float(nc.attr("beta", 0.5))))


@converter("HardSwish")
def hard_swish(nc):
    return _activation(nc, ActivationSpec(ActivationType.HARD_SWISH))


@converter("Gelu")
def gelu(nc):
    approx = nc.attr("approximate", "none")
    kinds = {"none": ActivationType.GELU_ERF, "tanh": ActivationType.GELU_TANH}
    if approx not in kinds:
        raise nc.error(f"Gelu approximate='{approx}' is not one of none, tanh")
    return _activation(nc, ActivationSpec(kinds[approx]))


@converter("Softplus")
def softplus(nc):
    return _activation(nc, ActivationSpec(ActivationType.SOFTPLUS))


@converter("Softsign")
def softsign(nc):
    return _activation(nc, ActivationSpec(ActivationType.SOFTSIGN))


@converter("Elu")
def elu(nc):
    return _activation(nc, ActivationSpec(ActivationType.ELU, float(nc.attr("alpha", 1.0))))


@converter("Selu")
def selu(nc):
    return _activation(nc, ActivationSpec(ActivationType.SELU, float(nc.attr("alpha", _SELU_ALPHA)),
                                          float(nc.attr("gamma", _SELU_GAMMA))))


@converter("Celu")
def celu(nc):
    return _activation(nc, ActivationSpec(ActivationType.CELU, float(nc.attr("alpha", 1.0))))


@converter("ThresholdedRelu")
def thresholded_relu(nc):
    return _activation(nc, ActivationSpec(ActivationType.THRESHOLDED_RELU, float(nc.attr("alpha", 1.0))))


@converter("Mish")
def mish(nc):
    return _activation(nc, ActivationSpec(ActivationType.MISH))


@converter("PRelu")
def prelu(nc):
    x = nc.input(0)
    slope = nc.const(1, "slope").astype(nc.np_dtype(x))
    xs = nc.shape(x)
    if nc.ctx.source_opset < 7 and slope.ndim == 1 and len(xs) >= 2 and slope.size == xs[1] > 1:
        # Opset 6 and older: a 1-D slope is per channel (axis 1), not broadcast from the right.
        slope = slope.reshape((xs[1],) + (1,) * (len(xs) - 2))
    try:
        ok = np.broadcast_shapes(xs, slope.shape) == xs
    except ValueError:
        ok = False
    if not ok:
        raise nc.error(f"slope shape {slope.shape} does not broadcast to input shape {xs}")
    if slope.ndim > len(xs):
        slope = slope.reshape(slope.shape[slope.ndim - len(xs):])
    return [nc.add1(ParametricReLUParams(), [x], {"slope": slope})]


@converter("Clip")
def clip(nc):
    """Clip: min/max are attributes before opset 11 and optional constant inputs since.

    Both bounds on a float tensor → a CLIP activation; a single bound (or an integer tensor) →
    element-wise max/min with a scalar constant, which keeps ±inf and integer semantics exact.
    """
    x = nc.input(0)
    dtype = nc.np_dtype(x)
    if nc.opset < 11:
        lo = nc.attr("min")
        hi = nc.attr("max")
    else:
        lo = nc.const(1, "min") if nc.has_input(1) else None
        hi = nc.const(2, "max") if nc.has_input(2) else None
        if lo is not None and lo.size != 1 or hi is not None and hi.size != 1:
            raise nc.error("min and max must be scalars")
    lo = None if lo is None else np.asarray(lo).reshape(()).astype(dtype)
    hi = None if hi is None else np.asarray(hi).reshape(()).astype(dtype)
    if lo is None and hi is None:
        return [nc.add1(IdentityParams(), [x])]
    if lo is not None and hi is not None and dtype.kind == "f":
        return _activation(nc, ActivationSpec(ActivationType.CLIP, float(lo), float(hi)))
    v = x
    if lo is not None:
        v = nc.add1(ElementWiseParams(ElementWiseOp.MAX), [v, Ref(const=lo.reshape((1,) * nc.rank(x)))],
                    final=hi is None)
    if hi is not None:
        v = nc.add1(ElementWiseParams(ElementWiseOp.MIN), [v, Ref(const=hi.reshape((1,) * nc.rank(x)))])
    return [v]


# ------------------------------------------------------------------------------------------
# unary

_UNARY = {
    "Abs": UnaryOp.ABS, "Neg": UnaryOp.NEG, "Sqrt": UnaryOp.SQRT, "Exp": UnaryOp.EXP, "Log": UnaryOp.LOG,
    "Reciprocal": UnaryOp.RECIPROCAL, "Floor": UnaryOp.FLOOR, "Ceil": UnaryOp.CEIL, "Round": UnaryOp.ROUND,
    "Sign": UnaryOp.SIGN, "Sin": UnaryOp.SIN, "Cos": UnaryOp.COS, "Tan": UnaryOp.TAN, "Asin": UnaryOp.ASIN,
    "Acos": UnaryOp.ACOS, "Atan": UnaryOp.ATAN, "Sinh": UnaryOp.SINH, "Cosh": UnaryOp.COSH, "Erf": UnaryOp.ERF,
    "Not": UnaryOp.NOT,
}


@converter(*_UNARY)
def unary(nc):
    return [nc.add1(UnaryParams(_UNARY[nc.op]), [nc.input(0)])]


# ------------------------------------------------------------------------------------------
# binary element-wise

_BINARY = {
    "Add": ElementWiseOp.SUM, "Sub": ElementWiseOp.SUB, "Mul": ElementWiseOp.PROD, "Div": ElementWiseOp.DIV,
    "Pow": ElementWiseOp.POW, "Equal": ElementWiseOp.EQUAL, "Greater": ElementWiseOp.GREATER,
    "Less": ElementWiseOp.LESS, "And": ElementWiseOp.AND, "Or": ElementWiseOp.OR, "Xor": ElementWiseOp.XOR,
}


def _same_dtype(nc: NodeContext, ref: Ref, dtype: np.dtype) -> Ref:
    """Pow may raise a float to an integer exponent: bring the exponent to the base's type."""
    if nc.np_dtype(ref) == dtype:
        return ref
    if ref.is_const:
        return Ref(const=ref.const.astype(dtype))
    target = hetrt_dtype(dtype)
    if target is None:
        raise nc.unsupported(f"element type {dtype} is not supported")
    return nc.add1(CastParams(target), [ref], final=False)


@converter(*_BINARY)
def binary(nc):
    a, b = nc.input(0), nc.input(1)
    if nc.op == "Pow":
        b = _same_dtype(nc, b, nc.np_dtype(a))
    elif nc.np_dtype(a) != nc.np_dtype(b):
        raise nc.error(f"inputs have different element types {nc.np_dtype(a)} and {nc.np_dtype(b)}")
    if a.is_const and b.is_const and nc.op == "Div" and a.const.dtype.kind in "iu":
        # Build-time shape arithmetic: ONNX integer division truncates toward zero.
        q = np.trunc(a.const.astype(np.float64) / b.const.astype(np.float64)).astype(a.const.dtype)
        return [Ref(const=q)]
    return [nc.add1(ElementWiseParams(_BINARY[nc.op]), [a, b])]


_VARIADIC = {"Sum": ElementWiseOp.SUM, "Max": ElementWiseOp.MAX, "Min": ElementWiseOp.MIN,
             "Mean": ElementWiseOp.SUM}


@converter("Sum", "Max", "Min", "Mean")
def variadic(nc):
    """Variadic ops become a chain of binary layers; Mean divides the sum by the input count."""
    refs = nc.inputs()
    if not refs:
        raise nc.error("needs at least one input")
    dtypes = {nc.np_dtype(r) for r in refs}
    if len(dtypes) != 1:
        raise nc.error(f"inputs have different element types {sorted(str(d) for d in dtypes)}")
    if len(refs) == 1:
        return [nc.add1(IdentityParams(), refs)]
    mean = nc.op == "Mean"
    acc = refs[0]
    for k, r in enumerate(refs[1:], start=2):
        acc = nc.add1(ElementWiseParams(_VARIADIC[nc.op]), [acc, r], final=(k == len(refs) and not mean))
    if mean:
        scale = np.array([1.0 / len(refs)], dtype=nc.np_dtype(acc))
        acc = nc.add1(ScaleParams(ScaleMode.UNIFORM, channel_axis=0), [acc], {"scale": scale})
    return [acc]
