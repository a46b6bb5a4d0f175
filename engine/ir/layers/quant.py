"""Parameter records of explicit quantization: QuantizeLinear and DequantizeLinear."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from engine.ir.dtypes import DataType
from engine.ir.layers.base import LayerKind, LayerParams, TensorInfo, _axis, _fail, _float_input, _weight


def _quant_scale(x: TensorInfo, weights: dict[str, np.ndarray], axis: int, what: str) -> None:
    """Scale: one value (per tensor) or one per channel of ``axis``; zero point absent or all 0."""
    s = _weight(weights, "scale")
    if s.dtype.kind != "f":
        _fail(f"{what} scale must be float, got {s.dtype}")
    if s.size != 1:
        ax = _axis(axis, x.rank)
        if s.shape != (x.shape[ax],):
            _fail(f"{what} scale shape {s.shape} is neither one value nor one per channel of axis {ax} "
                  f"({x.shape[ax]})")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        _fail(f"{what} scales must be finite and > 0")
    zp = weights.get("zero_point")
    if zp is not None and np.any(zp != 0):
        _fail(f"{what} zero point must be 0 (symmetric quantization)")


@dataclass(frozen=True)
class QuantizeParams(LayerParams):
    """q = saturate_int8(round_half_even(x / scale)) (ONNX QuantizeLinear, symmetric).

    Weights: scale (one value or one per channel of ``axis``), optional zero_point (must be 0).
    """

    kind: ClassVar[LayerKind] = LayerKind.QUANTIZE
    axis: int = 1

    def infer(self, inputs, weights):
        x = inputs[0]
        _float_input(x, "quantize input")
        _quant_scale(x, weights, self.axis, "quantize")
        return [TensorInfo(x.shape, DataType.INT8)]


@dataclass(frozen=True)
class DequantizeParams(LayerParams):
    """x = q * scale (ONNX DequantizeLinear, symmetric); int8 or int32 input, float32 output."""

    kind: ClassVar[LayerKind] = LayerKind.DEQUANTIZE
    axis: int = 1

    def infer(self, inputs, weights):
        x = inputs[0]
        if x.dtype not in (DataType.INT8, DataType.INT32):
            _fail(f"dequantize input must be int8 or int32, got {x.dtype.value}")
        _quant_scale(x, weights, self.axis, "dequantize")
        return [TensorInfo(x.shape, DataType.FLOAT)]
