"""Parameter records of element-wise layers: activation, PReLU, scale, element-wise and unary
ops, cast, identity and fused pointwise chains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from engine.ir.dtypes import DataType
from engine.ir.layers.base import (
    ActivationSpec,
    ActivationType,
    ElementWiseOp,
    LayerKind,
    LayerParams,
    ScaleMode,
    TensorInfo,
    UnaryOp,
    _axis,
    _broadcasts_to,
    _fail,
    _float_input,
    _weight,
)


@dataclass(frozen=True)
class ActivationParams(LayerParams):
    kind: ClassVar[LayerKind] = LayerKind.ACTIVATION
    activation: ActivationSpec

    def infer(self, inputs, weights):
        _float_input(inputs[0], "activation input")
        return [inputs[0]]


@dataclass(frozen=True)
class ParametricReLUParams(LayerParams):
    """y = x if x >= 0 else slope * x. Weights: slope, broadcastable to the input."""

    kind: ClassVar[LayerKind] = LayerKind.PARAMETRIC_RELU

    def infer(self, inputs, weights):
        x = inputs[0]
        _float_input(x, "PReLU input")
        slope = _weight(weights, "slope")
        if not _broadcasts_to(slope.shape, x.shape):
            _fail(f"PReLU slope shape {slope.shape} does not broadcast to input {x.shape}")
        return [x]


@dataclass(frozen=True)
class ScaleParams(LayerParams):
    """y = (x * scale + shift) ** power; per tensor, per channel (``channel_axis``) or per element.

    Weights (each optional): scale, shift, power, shaped (1,), (C,) or the input's shape without batch.
    """

    kind: ClassVar[LayerKind] = LayerKind.SCALE
    mode: ScaleMode
    channel_axis: int = 1

    def coefficient_shape(self, x: TensorInfo) -> tuple[int, ...]:
        if self.mode is ScaleMode.UNIFORM:
            return (1,)
        if self.mode is ScaleMode.CHANNEL:
            return (x.shape[self.channel_axis],)
        return tuple(x.shape[1:])

    def infer(self, inputs, weights):
        x = inputs[0]
        _float_input(x, "scale input")
        _axis(self.channel_axis, x.rank, "channel_axis")
        want = self.coefficient_shape(x)
        for name in ("scale", "shift", "power"):
            w = weights.get(name)
            if w is not None and w.shape != want:
                _fail(f"scale weights '{name}' shape {w.shape} != {want} for mode {self.mode.value}")
        if not any(n in weights for n in ("scale", "shift", "power")):
            _fail("scale layer needs at least one of scale, shift, power")
        return [x]


@dataclass(frozen=True)
class ElementWiseParams(LayerParams):
    """Binary op with numpy broadcasting."""

    kind: ClassVar[LayerKind] = LayerKind.ELEMENTWISE
    min_inputs: ClassVar[int] = 2
    max_inputs: ClassVar[int] = 2
    op: ElementWiseOp

    def infer(self, inputs, weights):
        a, b = inputs
        if a.dtype != b.dtype:
            _fail(f"elementwise {self.op.value} inputs have different dtypes {a.dtype.value} and {b.dtype.value}")
        try:
            shape = np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            _fail(f"elementwise {self.op.value} shapes {a.shape} and {b.shape} do not broadcast")
        if self.op.is_logical and a.dtype is not DataType.BOOL:
            _fail(f"logical {self.op.value} needs bool inputs")
        if not (self.op.is_logical or self.op.is_comparison) and a.dtype is DataType.BOOL:
            _fail(f"arithmetic {self.op.value} does not take bool inputs")
        dtype = DataType.BOOL if (self.op.is_comparison or self.op.is_logical) else a.dtype
        return [TensorInfo(tuple(shape), dtype)]


@dataclass(frozen=True)
class UnaryParams(LayerParams):
    kind: ClassVar[LayerKind] = LayerKind.UNARY
    op: UnaryOp

    def infer(self, inputs, weights):
        x = inputs[0]
        if self.op is UnaryOp.NOT:
            if x.dtype is not DataType.BOOL:
                _fail("unary not needs a bool input")
        elif self.op in (UnaryOp.ABS, UnaryOp.NEG, UnaryOp.SIGN):
            if x.dtype is DataType.BOOL:
                _fail(f"unary {self.op.value} does not take bool")
        else:
            _float_input(x, f"unary {self.op.value} input")
        return [x]


@dataclass(frozen=True)
class CastParams(LayerParams):
    kind: ClassVar[LayerKind] = LayerKind.CAST
    to: DataType

    def infer(self, inputs, weights):
        return [TensorInfo(inputs[0].shape, self.to)]


@dataclass(frozen=True)
class IdentityParams(LayerParams):
    kind: ClassVar[LayerKind] = LayerKind.IDENTITY

    def infer(self, inputs, weights):
        return [inputs[0]]


@dataclass(frozen=True)
class PointwiseStep:
    """One step of a fused pointwise chain, applied to the running value ``v``.

    kind 'activation': v = act(v); 'unary': v = op(v); 'elementwise': v = v op operand (or
    operand op v when ``reverse``), the operand being layer input ``operand_input`` or weight
    ``operand_weight``.
    """

    kind: str
    op: str
    alpha: float = 0.0
    beta: float = 0.0
    operand_input: int | None = None
    operand_weight: str | None = None
    reverse: bool = False


@dataclass(frozen=True)
class PointwiseParams(LayerParams):
    """A fused chain of activations, unary and element-wise ops (one kernel on a GPU)."""

    kind: ClassVar[LayerKind] = LayerKind.POINTWISE
    max_inputs: ClassVar[int] = 64
    steps: tuple[PointwiseStep, ...]

    def infer(self, inputs, weights):
        x = inputs[0]
        shape = x.shape
        for s in self.steps:
            if s.kind == "activation":
                ActivationType(s.op)
            elif s.kind == "unary":
                UnaryOp(s.op)
            elif s.kind == "elementwise":
                op = ElementWiseOp(s.op)
                if op.is_comparison or op.is_logical:
                    _fail(f"pointwise chain cannot hold {op.value}")
                if s.operand_input is not None:
                    if not 0 < s.operand_input < len(inputs):
                        _fail(f"pointwise operand input {s.operand_input} out of range")
                    other = inputs[s.operand_input].shape
                elif s.operand_weight is not None:
                    other = _weight(weights, s.operand_weight).shape
                else:
                    _fail("pointwise elementwise step needs an operand")
                try:
                    shape = tuple(np.broadcast_shapes(shape, other))
                except ValueError:
                    _fail(f"pointwise operand shape {other} does not broadcast with {shape}")
            else:
                _fail(f"unknown pointwise step kind '{s.kind}'")
        return [TensorInfo(shape, x.dtype)]
