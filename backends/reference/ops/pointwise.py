"""Element-wise kernels: binary ops, unary ops, Scale and fused Pointwise chains (ONNX semantics)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import special

from engine.ir.errors import UnsupportedError
from engine.ir.layers import ActivationSpec, ActivationType, ElementWiseOp, ScaleMode, UnaryOp

from . import channels_last
from .activation import apply_activation


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # ONNX Div on integers truncates toward zero (C semantics), numpy's // floors.
    q = np.floor_divide(a, b)
    fix = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
    return q + fix.astype(q.dtype)


def _int_pow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # Integer Pow as ONNX runtimes compute it: negative exponents give trunc(a ** b) (0 unless |a| == 1).
    a, b = np.broadcast_arrays(a, b)
    neg = b < 0
    out = np.power(a, np.where(neg, 0, b))
    if neg.any():
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            f = np.trunc(np.power(a[neg].astype(np.float64), b[neg].astype(np.float64)))
        out[neg] = np.nan_to_num(f, nan=0.0, posinf=0.0, neginf=0.0).astype(out.dtype)
    return out


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        return _int_div(a, b)
    return np.divide(a, b)


def _power(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        return _int_pow(a, b)
    return np.power(a, b)


_BINARY: dict[ElementWiseOp, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    ElementWiseOp.SUM: np.add,
    ElementWiseOp.SUB: np.subtract,
    ElementWiseOp.PROD: np.multiply,
    ElementWiseOp.DIV: _divide,
    ElementWiseOp.MAX: np.maximum,
    ElementWiseOp.MIN: np.minimum,
    ElementWiseOp.POW: _power,
    ElementWiseOp.EQUAL: np.equal,
    ElementWiseOp.GREATER: np.greater,
    ElementWiseOp.LESS: np.less,
    ElementWiseOp.AND: np.logical_and,
    ElementWiseOp.OR: np.logical_or,
    ElementWiseOp.XOR: np.logical_xor,
}

_ARITHMETIC = (ElementWiseOp.SUM, ElementWiseOp.SUB, ElementWiseOp.PROD, ElementWiseOp.DIV, ElementWiseOp.POW)


def binary(op: ElementWiseOp, a: np.ndarray, b: np.ndarray, where: str) -> np.ndarray:
    """``a op b`` with broadcasting; arithmetic results keep the operands' dtype."""
    op = ElementWiseOp(op)
    if op in _ARITHMETIC and a.dtype == np.bool_:
        raise UnsupportedError(f"{where}: elementwise {op.value} on bool tensors is not defined")
    with np.errstate(all="ignore"):
        y = _BINARY[op](a, b)
    if not (op.is_comparison or op.is_logical):
        y = np.asarray(y, dtype=np.result_type(a, b))
    return np.asarray(y)


# Float ops that ``channels_last.per_channel_binary`` may compute row by row (same ufunc, same values).
_ROW_UFUNCS: dict[ElementWiseOp, np.ufunc] = {
    ElementWiseOp.SUM: np.add, ElementWiseOp.SUB: np.subtract, ElementWiseOp.PROD: np.multiply,
    ElementWiseOp.DIV: np.divide, ElementWiseOp.MAX: np.maximum, ElementWiseOp.MIN: np.minimum,
}


def elementwise(layer, inputs, weights):
    a, b = inputs
    fn = _ROW_UFUNCS.get(layer.params.op)
    if fn is not None and a.ndim == 4 and b.ndim == 4:
        with np.errstate(all="ignore"):
            y = channels_last.per_channel_binary(fn, a, b)
        if y is not None:
            return [y]
    return [binary(layer.params.op, a, b, layer.describe())]


def _sign(x: np.ndarray) -> np.ndarray:
    return np.sign(x)


_UNARY: dict[UnaryOp, Callable[[np.ndarray], np.ndarray]] = {
    UnaryOp.ABS: np.abs,
    UnaryOp.NEG: np.negative,
    UnaryOp.SQRT: np.sqrt,
    UnaryOp.EXP: np.exp,
    UnaryOp.LOG: np.log,
    UnaryOp.RECIPROCAL: np.reciprocal,
    UnaryOp.FLOOR: np.floor,
    UnaryOp.CEIL: np.ceil,
    UnaryOp.ROUND: np.rint,  # round half to even, as ONNX Round
    UnaryOp.SIGN: _sign,
    UnaryOp.SIN: np.sin,
    UnaryOp.COS: np.cos,
    UnaryOp.TAN: np.tan,
    UnaryOp.ASIN: np.arcsin,
    UnaryOp.ACOS: np.arccos,
    UnaryOp.ATAN: np.arctan,
    UnaryOp.SINH: np.sinh,
    UnaryOp.COSH: np.cosh,
    UnaryOp.ERF: special.erf,
    UnaryOp.NOT: np.logical_not,
}


def unary_op(op: UnaryOp, x: np.ndarray, where: str) -> np.ndarray:
    op = UnaryOp(op)
    if op is UnaryOp.NOT and x.dtype != np.bool_:
        raise UnsupportedError(f"{where}: unary not needs a bool input, got {x.dtype}")
    if op not in (UnaryOp.ABS, UnaryOp.NEG, UnaryOp.SIGN, UnaryOp.NOT) and x.dtype.kind != "f":
        raise UnsupportedError(f"{where}: unary {op.value} needs a float input, got {x.dtype}")
    with np.errstate(all="ignore"):
        y = _UNARY[op](x)
    return np.asarray(y, dtype=x.dtype)


def unary(layer, inputs, weights):
    return [unary_op(layer.params.op, inputs[0], layer.describe())]


def _coefficient(w: np.ndarray, x: np.ndarray, mode: ScaleMode, axis: int) -> np.ndarray:
    w = w.astype(x.dtype, copy=False)
    if mode is ScaleMode.UNIFORM:
        return w.reshape(())
    if mode is ScaleMode.CHANNEL:
        shape = [1] * x.ndim
        shape[axis % x.ndim] = w.shape[0]
        return w.reshape(shape)
    return w  # (x.shape[1:]) broadcasts over the batch axis


def scale(layer, inputs, weights):
    """y = (x * scale + shift) ** power, each coefficient optional."""
    p = layer.params
    x = inputs[0]
    y = x
    with np.errstate(all="ignore"):
        if "scale" in weights:
            y = y * _coefficient(weights["scale"], x, p.mode, p.channel_axis)
        if "shift" in weights:
            y = y + _coefficient(weights["shift"], x, p.mode, p.channel_axis)
        if "power" in weights:
            y = np.power(y, _coefficient(weights["power"], x, p.mode, p.channel_axis))
    return [np.asarray(y, dtype=x.dtype)]


def pointwise(layer, inputs, weights):
    """Apply the fused chain step by step; each step has exactly its unfused layer's semantics."""
    v = inputs[0]
    where = layer.describe()
    for step in layer.params.steps:
        if step.kind == "activation":
            v = apply_activation(v, ActivationSpec(ActivationType(step.op), step.alpha, step.beta))
        elif step.kind == "unary":
            v = unary_op(UnaryOp(step.op), v, where)
        elif step.kind == "elementwise":
            if step.operand_input is not None:
                other = inputs[step.operand_input]
            elif step.operand_weight is not None:
                other = weights[step.operand_weight]
            else:
                raise UnsupportedError(f"{where}: pointwise elementwise step has no operand")
            if other.dtype != v.dtype:
                raise UnsupportedError(f"{where}: pointwise operand dtype {other.dtype} differs from {v.dtype}")
            a, b = (other, v) if step.reverse else (v, other)
            v = binary(ElementWiseOp(step.op), a, b, where)
        else:
            raise UnsupportedError(f"{where}: unknown pointwise step kind '{step.kind}'")
    return [v]
