"""QuantizeLinear and DequantizeLinear (explicit quantization, as QAT tools export it).

As in TensorRT's ONNX parser: int8 only, symmetric (zero point 0), scale per tensor or per
channel of ``axis``; blocked quantization (opset 21 ``block_size``) is not supported. A
DequantizeLinear of a constant (quantized weights, int32 biases) is evaluated at parse time, so
the Conv/Gemm that reads it sees float weights ``q * scale`` (exact in float32); the weight
scales themselves are recovered from the model by ``engine.quantization.qdq``.
"""

from __future__ import annotations

import numpy as np

from engine.ir.int8_math import dequantize, quantize
from engine.ir.layers import DequantizeParams, QuantizeParams
from engine.onnx_parser.context import NodeContext
from engine.onnx_parser.registry import converter


def _params(nc: NodeContext, x_rank: int, int_dtype_index: int | None) -> tuple[np.ndarray, int]:
    scale = np.asarray(nc.const(1, "scale"), dtype=np.float32)
    if nc.attr("block_size", 0):
        raise nc.unsupported("blocked quantization (block_size) is not supported")
    axis = int(nc.attr("axis", 1))
    if scale.ndim > 1:
        raise nc.unsupported(f"scale of rank {scale.ndim}; hetrt takes one scale or one per channel")
    if nc.has_input(2):
        zp = np.asarray(nc.const(2, "zero point"))
        if zp.dtype != np.int8 and not (int_dtype_index is not None and zp.dtype == np.int32):
            raise nc.unsupported(f"zero point of type {zp.dtype}; hetrt quantizes to int8 only")
        if np.any(zp != 0):
            raise nc.unsupported("asymmetric quantization (zero point != 0) is not supported, as in TensorRT")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise nc.error("quantization scales must be finite and > 0")
    if scale.size > 1 and not -x_rank <= axis < x_rank:
        raise nc.error(f"axis {axis} out of range for rank {x_rank}")
    return scale.reshape(-1) if scale.ndim else scale.reshape(1), axis % max(x_rank, 1)


@converter("QuantizeLinear")
def quantize_linear(nc):
    x = nc.input(0)
    if nc.np_dtype(x).kind != "f":
        raise nc.error(f"QuantizeLinear input must be float, got {nc.np_dtype(x)}")
    if nc.attr("output_dtype", 0) not in (0, 3):  # 3 = INT8
        raise nc.unsupported("QuantizeLinear to a type other than int8")
    scale, axis = _params(nc, nc.rank(x), None)
    if x.is_const:
        from engine.onnx_parser.context import Ref

        return [Ref(const=quantize(x.const, scale, axis if scale.size > 1 else None))]
    return [nc.add1(QuantizeParams(axis=axis), [x], {"scale": scale})]


@converter("DequantizeLinear")
def dequantize_linear(nc):
    x = nc.input(0)
    dt = nc.np_dtype(x)
    if dt not in (np.int8, np.int32):
        raise nc.unsupported(f"DequantizeLinear of {dt}; hetrt takes int8 (and int32 biases)")
    scale, axis = _params(nc, nc.rank(x), 0)
    if x.is_const:
        from engine.onnx_parser.context import Ref

        return [Ref(const=dequantize(x.const, scale, axis if scale.size > 1 else None))]
    return [nc.add1(DequantizeParams(axis=axis), [x], {"scale": scale})]
