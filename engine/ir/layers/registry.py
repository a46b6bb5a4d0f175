"""Parameter records by kind, their JSON encoding (plan files) and the shape-only kinds."""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

import numpy as np

from engine.ir import plugin_registry
from engine.ir.dtypes import DataType
from engine.ir.layers.base import (
    ActivationSpec,
    ActivationType,
    ElementWiseOp,
    LayerKind,
    LayerParams,
    PaddingMode,
    PoolingType,
    ReduceOp,
    ResizeMode,
    ScaleMode,
    UnaryOp,
)
from engine.ir.layers.conv import (
    ConvolutionParams,
    DeconvolutionParams,
    FullyConnectedParams,
    MatrixMultiplyParams,
    PoolingParams,
)
from engine.ir.layers.normalize import LRNParams, NormalizationParams, ReduceParams, SoftMaxParams
from engine.ir.layers.plugin import PluginParams
from engine.ir.layers.pointwise import (
    ActivationParams,
    CastParams,
    ElementWiseParams,
    IdentityParams,
    ParametricReLUParams,
    PointwiseParams,
    PointwiseStep,
    ScaleParams,
    UnaryParams,
)
from engine.ir.layers.quant import DequantizeParams, QuantizeParams
from engine.ir.layers.tensor import (
    ConcatenationParams,
    ConstantParams,
    GatherParams,
    PaddingParams,
    ResizeParams,
    ShuffleParams,
    SliceParams,
    SplitParams,
)

PARAMS_BY_KIND: dict[LayerKind, type[LayerParams]] = {
    cls.kind: cls
    for cls in (ConvolutionParams, DeconvolutionParams, PoolingParams, ActivationParams,
                ParametricReLUParams, ScaleParams, ElementWiseParams, UnaryParams, LRNParams,
                MatrixMultiplyParams, FullyConnectedParams, SoftMaxParams, ConcatenationParams,
                ShuffleParams, SliceParams, SplitParams, ResizeParams, ReduceParams, PaddingParams,
                ConstantParams, GatherParams, CastParams, NormalizationParams, IdentityParams,
                PointwiseParams, QuantizeParams, DequantizeParams, PluginParams)
}


# Nested value types that may appear inside parameter records, by tag, for JSON round trips.
_NESTED: dict[str, type] = {"ActivationSpec": ActivationSpec, "PointwiseStep": PointwiseStep,
                            "PluginArray": plugin_registry.PluginArray}


_ENUMS: dict[str, type[Enum]] = {
    e.__name__: e for e in (ActivationType, PoolingType, ScaleMode, ElementWiseOp, UnaryOp, ReduceOp,
                            ResizeMode, PaddingMode, DataType)
}


def encode(value: Any) -> Any:
    if isinstance(value, Enum):
        return {"$enum": type(value).__name__, "v": value.value}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        body = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if type(value).__name__ in _NESTED:
            return {"$type": type(value).__name__, **body}
        return body
    if isinstance(value, (tuple, list)):
        return [encode(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


def decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "$enum" in value:
            enum = _ENUMS.get(value["$enum"])
            if enum is None:
                raise ValueError(f"unknown enum {value['$enum']!r}")
            return enum(value["v"])
        if "$type" in value:
            cls = _NESTED.get(value["$type"])
            if cls is None:
                raise ValueError(f"unknown record type {value['$type']!r}")
            return cls(**{k: decode(v) for k, v in value.items() if k != "$type"})
        raise ValueError(f"unexpected object {sorted(value)}")
    if isinstance(value, list):
        return tuple(decode(v) for v in value)
    return value


def params_from_dict(kind: str, data: dict[str, Any]) -> LayerParams:
    """Rebuild a parameter record from ``to_dict`` output; raises ValueError on anything odd."""
    cls = PARAMS_BY_KIND[LayerKind(kind)]
    names = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(data, dict) or set(data) - names:
        raise ValueError(f"{kind} parameters have unknown fields {sorted(set(data) - names)}")
    return cls(**{k: decode(v) for k, v in data.items()})


# Layers that only move or reinterpret data: they keep their input's precision (no FP16/INT8 variant).
SHAPE_ONLY = frozenset({LayerKind.CONSTANT, LayerKind.SHUFFLE, LayerKind.SLICE, LayerKind.SPLIT,
                        LayerKind.CONCATENATION, LayerKind.GATHER, LayerKind.IDENTITY, LayerKind.CAST,
                        LayerKind.PADDING})
