"""Parameter records of normalisations and reductions: LRN, softmax, reduce, normalization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from engine.ir.dtypes import DataType
from engine.ir.layers.base import (
    LayerKind,
    LayerParams,
    ReduceOp,
    TensorInfo,
    _axis,
    _broadcasts_to,
    _fail,
    _float_input,
)


@dataclass(frozen=True)
class LRNParams(LayerParams):
    """Cross-channel LRN: y = x / (bias + alpha/size * sum(x^2 over window)) ** beta."""

    kind: ClassVar[LayerKind] = LayerKind.LRN
    size: int
    alpha: float
    beta: float
    bias: float = 1.0

    def infer(self, inputs, weights):
        x = inputs[0]
        _float_input(x, "LRN input")
        if x.rank < 3:
            _fail(f"LRN input must be (N, C, spatial...), got {x.shape}")
        if self.size < 1:
            _fail(f"LRN size must be >= 1, got {self.size}")
        return [x]


@dataclass(frozen=True)
class SoftMaxParams(LayerParams):
    kind: ClassVar[LayerKind] = LayerKind.SOFTMAX
    axis: int = -1
    log: bool = False

    def infer(self, inputs, weights):
        _float_input(inputs[0], "softmax input")
        _axis(self.axis, inputs[0].rank)
        return [inputs[0]]


@dataclass(frozen=True)
class ReduceParams(LayerParams):
    kind: ClassVar[LayerKind] = LayerKind.REDUCE
    op: ReduceOp
    axes: tuple[int, ...]
    keep_dims: bool = True

    def infer(self, inputs, weights):
        x = inputs[0]
        axes = {_axis(a, x.rank) for a in self.axes}
        if len(axes) != len(self.axes):
            _fail(f"reduce axes {self.axes} repeat an axis")
        if self.keep_dims:
            shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        else:
            shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        if self.op in (ReduceOp.ARGMAX, ReduceOp.ARGMIN):
            if len(axes) != 1 or x.shape[next(iter(axes))] == 0:
                _fail(f"reduce {self.op.value} takes one axis of nonzero length, got axes {self.axes} of {x.shape}")
            return [TensorInfo(shape, DataType.INT64)]
        return [TensorInfo(shape, x.dtype)]


@dataclass(frozen=True)
class NormalizationParams(LayerParams):
    """(x - mean) / sqrt(var + eps) over ``axes``, then * scale + bias (weights, broadcastable).

    LayerNormalization normalises the trailing axes; InstanceNormalization the spatial axes.
    """

    kind: ClassVar[LayerKind] = LayerKind.NORMALIZATION
    axes: tuple[int, ...]
    epsilon: float = 1e-5

    def infer(self, inputs, weights):
        x = inputs[0]
        _float_input(x, "normalization input")
        for a in self.axes:
            _axis(a, x.rank)
        for name in ("scale", "bias"):
            w = weights.get(name)
            if w is not None and not _broadcasts_to(w.shape, x.shape):
                _fail(f"normalization {name} shape {w.shape} does not broadcast to {x.shape}")
        return [x]
