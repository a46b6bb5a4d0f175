"""Layer IR foundations: tensor infos, layer kinds, parameter enums, validation helpers and the
``LayerParams`` base every layer's parameter record derives from.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

import numpy as np

from engine.ir.dtypes import DataType
from engine.ir.errors import NetworkError


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: DataType

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


class LayerKind(StrEnum):
    CONVOLUTION = "convolution"
    DECONVOLUTION = "deconvolution"
    POOLING = "pooling"
    ACTIVATION = "activation"
    PARAMETRIC_RELU = "parametric_relu"
    SCALE = "scale"
    ELEMENTWISE = "elementwise"
    UNARY = "unary"
    LRN = "lrn"
    MATRIX_MULTIPLY = "matrix_multiply"
    FULLY_CONNECTED = "fully_connected"
    SOFTMAX = "softmax"
    CONCATENATION = "concatenation"
    SHUFFLE = "shuffle"
    SLICE = "slice"
    SPLIT = "split"
    RESIZE = "resize"
    REDUCE = "reduce"
    PADDING = "padding"
    CONSTANT = "constant"
    GATHER = "gather"
    CAST = "cast"
    NORMALIZATION = "normalization"
    IDENTITY = "identity"
    POINTWISE = "pointwise"
    QUANTIZE = "quantize"
    DEQUANTIZE = "dequantize"
    RNN = "rnn"
    LSTM = "lstm"
    GRU = "gru"
    PLUGIN = "plugin"


class ActivationType(StrEnum):
    RELU = "relu"
    LEAKY_RELU = "leaky_relu"  # alpha = negative slope
    CLIP = "clip"  # alpha = min, beta = max
    SIGMOID = "sigmoid"
    TANH = "tanh"
    HARD_SIGMOID = "hard_sigmoid"  # max(0, min(1, alpha*x + beta))
    HARD_SWISH = "hard_swish"  # x * hard_sigmoid(x; 1/6, 0.5)
    SILU = "silu"
    GELU_ERF = "gelu_erf"
    GELU_TANH = "gelu_tanh"
    SOFTPLUS = "softplus"
    SOFTSIGN = "softsign"
    ELU = "elu"  # alpha
    SELU = "selu"  # alpha, beta = gamma
    CELU = "celu"  # alpha
    THRESHOLDED_RELU = "thresholded_relu"  # alpha = threshold
    MISH = "mish"


@dataclass(frozen=True)
class ActivationSpec:
    """An activation as a value: used by Activation layers and fused epilogues."""

    type: ActivationType
    alpha: float = 0.0
    beta: float = 0.0


class PoolingType(StrEnum):
    MAX = "max"
    AVERAGE = "average"
    LP = "lp"  # p = ``lp_order``


class ScaleMode(StrEnum):
    UNIFORM = "uniform"
    CHANNEL = "channel"
    ELEMENTWISE = "elementwise"


class ElementWiseOp(StrEnum):
    SUM = "sum"
    SUB = "sub"
    PROD = "prod"
    DIV = "div"
    MAX = "max"
    MIN = "min"
    POW = "pow"
    EQUAL = "equal"
    GREATER = "greater"
    LESS = "less"
    AND = "and"
    OR = "or"
    XOR = "xor"

    @property
    def is_comparison(self) -> bool:
        return self in (ElementWiseOp.EQUAL, ElementWiseOp.GREATER, ElementWiseOp.LESS)

    @property
    def is_logical(self) -> bool:
        return self in (ElementWiseOp.AND, ElementWiseOp.OR, ElementWiseOp.XOR)


class UnaryOp(StrEnum):
    ABS = "abs"
    NEG = "neg"
    SQRT = "sqrt"
    EXP = "exp"
    LOG = "log"
    RECIPROCAL = "reciprocal"
    FLOOR = "floor"
    CEIL = "ceil"
    ROUND = "round"
    SIGN = "sign"
    SIN = "sin"
    COS = "cos"
    TAN = "tan"
    ASIN = "asin"
    ACOS = "acos"
    ATAN = "atan"
    SINH = "sinh"
    COSH = "cosh"
    ERF = "erf"
    NOT = "not"


class ReduceOp(StrEnum):
    MEAN = "mean"
    MAX = "max"
    MIN = "min"
    SUM = "sum"
    PROD = "prod"
    L1 = "l1"
    L2 = "l2"
    SUM_SQUARE = "sum_square"
    LOG_SUM = "log_sum"
    LOG_SUM_EXP = "log_sum_exp"
    ARGMAX = "argmax"  # the index (int64) of the first largest element along the one axis
    ARGMIN = "argmin"


class ResizeMode(StrEnum):
    NEAREST = "nearest"
    LINEAR = "linear"


class PaddingMode(StrEnum):
    CONSTANT = "constant"
    REFLECT = "reflect"
    EDGE = "edge"
    WRAP = "wrap"


def _fail(msg: str) -> None:
    raise NetworkError(msg)


def _ints(values: Sequence[int], what: str, minimum: int | None = None) -> None:
    for v in values:
        if not isinstance(v, (int, np.integer)):
            _fail(f"{what} must be integers, got {values!r}")
        if minimum is not None and v < minimum:
            _fail(f"{what} must be >= {minimum}, got {tuple(values)}")


def _axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < max(rank, 1):
        _fail(f"{what} {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def _float_input(info: TensorInfo, what: str) -> None:
    if not info.dtype.is_float:
        _fail(f"{what} must be a float tensor, got {info.dtype.value}")


def _weight(weights: dict[str, np.ndarray], name: str, required: bool = True) -> np.ndarray | None:
    w = weights.get(name)
    if w is None and required:
        _fail(f"missing weights '{name}'")
    return w


def matmul_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    """numpy.matmul's output shape, or None when the shapes do not match."""
    if not a or not b:
        return None
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        return None
    try:
        batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    except ValueError:
        return None
    out = (*batch, a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return tuple(out)


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether ``shape`` broadcasts to exactly ``target`` (numpy rules)."""
    try:
        return np.broadcast_shapes(target, shape) == tuple(target)
    except ValueError:
        return False


def _spatial_out(size: int, k: int, s: int, pre: int, post: int, d: int, ceil_mode: bool = False) -> int:
    span = d * (k - 1) + 1
    padded = size + pre + post
    if padded < span:
        _fail(f"window span {span} is larger than padded input {padded}")
    if ceil_mode:
        out = -(-(padded - span) // s) + 1
        if (out - 1) * s >= size + pre:  # last window must start inside the input or left pad
            out -= 1
        return out
    return (padded - span) // s + 1


@dataclass(frozen=True)
class LayerParams:
    """Base of all layer parameter records."""

    kind: ClassVar[LayerKind]
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int] = 1

    def infer(self, inputs: list[TensorInfo], weights: dict[str, np.ndarray]) -> list[TensorInfo]:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        from engine.ir.layers.registry import encode

        return encode(self)

    def replace(self, **changes: Any) -> LayerParams:
        return dataclasses.replace(self, **changes)
