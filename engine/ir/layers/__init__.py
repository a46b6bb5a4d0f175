"""Typed layer descriptors: validated parameters and shape inference.

Each layer kind is a frozen dataclass of parameters. ``infer`` checks the parameters against the
input tensors and weights and returns the output tensor infos; it raises ``NetworkError`` with a
reason (the network adds the layer name). Weights (kernels, biases, constants) are numpy arrays
held by the layer, not by the parameters, so parameters stay small, hashable and JSON-friendly.

The records live in one module per layer family (``base``: kinds, enums, helpers and the
``LayerParams`` base; ``conv``, ``pointwise``, ``normalize``, ``tensor``, ``quant``; ``registry``:
by-kind lookup and JSON encoding); ``from engine.ir.layers import X`` works for every name.
"""

from __future__ import annotations

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
    TensorInfo,
    UnaryOp,
    matmul_shape,
)
from engine.ir.layers.conv import (
    ConvolutionParams,
    DeconvolutionParams,
    FullyConnectedParams,
    MatrixMultiplyParams,
    PoolingParams,
)
from engine.ir.layers.normalize import (
    LRNParams,
    NormalizationParams,
    ReduceParams,
    SoftMaxParams,
)
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
from engine.ir.layers.quant import (
    DequantizeParams,
    QuantizeParams,
)
from engine.ir.layers.registry import (
    PARAMS_BY_KIND,
    SHAPE_ONLY,
    params_from_dict,
)
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

__all__ = [
    "ActivationParams",
    "ActivationSpec",
    "ActivationType",
    "CastParams",
    "ConcatenationParams",
    "ConstantParams",
    "ConvolutionParams",
    "DeconvolutionParams",
    "DequantizeParams",
    "ElementWiseOp",
    "ElementWiseParams",
    "FullyConnectedParams",
    "GatherParams",
    "IdentityParams",
    "LRNParams",
    "LayerKind",
    "LayerParams",
    "MatrixMultiplyParams",
    "NormalizationParams",
    "PARAMS_BY_KIND",
    "PaddingMode",
    "PaddingParams",
    "ParametricReLUParams",
    "PointwiseParams",
    "PluginParams",
    "PointwiseStep",
    "PoolingParams",
    "PoolingType",
    "QuantizeParams",
    "ReduceOp",
    "ReduceParams",
    "ResizeMode",
    "ResizeParams",
    "SHAPE_ONLY",
    "ScaleMode",
    "ScaleParams",
    "ShuffleParams",
    "SliceParams",
    "SoftMaxParams",
    "SplitParams",
    "TensorInfo",
    "UnaryOp",
    "UnaryParams",
    "matmul_shape",
    "params_from_dict",
]

# Recurrent layers (RNN, LSTM, GRU) live in their own module, which registers them in PARAMS_BY_KIND.
import engine.ir.recurrent  # noqa: E402, F401
