"""The GPU backend's layer table: for every ``LayerKind``, how it is lowered or why it is not.

An entry is a ``GpuLowering`` (``check``: the reason a particular layer of that kind cannot run,
None when it can; ``lower``: append its slots and launches to the ``Lowerer``) or an explicit
``Unsupported`` with the reason. ``supports`` answers the builder's question per layer; INT8
layers are decided by ``backends.gpu.lower_int8`` (its own table). Adding a layer kind means one
entry here, with its lowering in the family module it belongs to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from backends.gpu.lower_int8 import supports_int8
from backends.gpu.lowering import conv, movement, pointwise, reduce
from backends.gpu.lowering.slots import check_float, prec
from backends.table import Unsupported, check_complete
from engine.ir.dtypes import Precision
from engine.ir.layers import LayerKind
from engine.ir.memory import storage_dtypes
from engine.ir.network import Layer, Network

if TYPE_CHECKING:
    from backends.gpu.lowering.lowerer import Lowerer


@dataclass(frozen=True)
class GpuLowering:
    """How the GPU backend runs one layer kind."""

    check: Callable[[Layer, Network, dict[str, str]], str | None]
    lower: Callable[[Lowerer, Layer], None]


_QDQ = Unsupported("Q/DQ conversions have no GPU kernel")
_RECURRENT = Unsupported("recurrent layers (RNN/LSTM/GRU) are not captured in a CUDA graph (cuBLAS per step): the GPU "
                         "backend runs FP32/FP16 ones eagerly with CuPy between its graphs (backends/gpu/eager.py); "
                         "INT8 ones run on the reference backend")

GPU_LOWERINGS: dict[LayerKind, GpuLowering | Unsupported] = {
    # convolution family
    LayerKind.CONVOLUTION: GpuLowering(conv.check_conv, conv.lower_convolution),
    LayerKind.DECONVOLUTION: GpuLowering(conv.check_conv, conv.lower_deconvolution),
    LayerKind.FULLY_CONNECTED: GpuLowering(check_float, conv.lower_fully_connected),
    LayerKind.MATRIX_MULTIPLY: GpuLowering(check_float, conv.lower_matrix_multiply),
    # element-wise family
    LayerKind.ACTIVATION: GpuLowering(check_float, pointwise.lower_activation),
    LayerKind.PARAMETRIC_RELU: GpuLowering(check_float, pointwise.lower_parametric_relu),
    LayerKind.SCALE: GpuLowering(check_float, pointwise.lower_scale),
    LayerKind.POINTWISE: GpuLowering(check_float, pointwise.lower_pointwise),
    LayerKind.UNARY: GpuLowering(pointwise.check_unary, pointwise.lower_unary),
    LayerKind.ELEMENTWISE: GpuLowering(pointwise.check_elementwise, pointwise.lower_elementwise),
    LayerKind.IDENTITY: GpuLowering(movement.check_movement, pointwise.lower_identity),
    LayerKind.CAST: GpuLowering(pointwise.check_cast, pointwise.lower_cast),
    LayerKind.CONSTANT: GpuLowering(movement.check_movement, pointwise.lower_constant),
    # reductions, normalisations, pooling
    LayerKind.POOLING: GpuLowering(reduce.check_pooling, reduce.lower_pooling),
    LayerKind.REDUCE: GpuLowering(reduce.check_reduce, reduce.lower_reduce),
    LayerKind.SOFTMAX: GpuLowering(check_float, reduce.lower_softmax),
    LayerKind.NORMALIZATION: GpuLowering(check_float, reduce.lower_normalization),
    LayerKind.LRN: GpuLowering(check_float, reduce.lower_lrn),
    # data movement
    LayerKind.SHUFFLE: GpuLowering(movement.check_movement, movement.lower_shuffle),
    LayerKind.SLICE: GpuLowering(movement.check_movement, movement.lower_slice),
    LayerKind.SPLIT: GpuLowering(movement.check_movement, movement.lower_split),
    LayerKind.CONCATENATION: GpuLowering(movement.check_movement, movement.lower_concatenation),
    LayerKind.PADDING: GpuLowering(movement.check_movement, movement.lower_padding),
    LayerKind.GATHER: GpuLowering(movement.check_movement, movement.lower_gather),
    LayerKind.RESIZE: GpuLowering(movement.check_resize, movement.lower_resize),
    # explicit quantization
    LayerKind.QUANTIZE: _QDQ,
    LayerKind.DEQUANTIZE: _QDQ,
    # recurrent
    LayerKind.RNN: _RECURRENT,
    LayerKind.LSTM: _RECURRENT,
    LayerKind.GRU: _RECURRENT,
    # custom layers: not lowered into a graph; the GPU backend runs a plugin's own CuPy implementation
    # between its graphs (backends/gpu/plugin.py) when the plugin registered one
    LayerKind.PLUGIN: Unsupported("plugin layers run the plugin's own implementation, not a hetrt kernel"),
}
check_complete(GPU_LOWERINGS, "GPU")


def supports(layer: Layer, network: Network) -> tuple[bool, str]:
    """Whether the GPU backend runs ``layer``, with the reason when it does not."""
    entry = GPU_LOWERINGS[layer.kind]
    if isinstance(entry, Unsupported):
        return False, entry.reason
    if prec(layer) is Precision.INT8:
        return supports_int8(layer, network)
    dtypes = {t: d.numpy.name for t, d in storage_dtypes(network).items()}
    why = entry.check(layer, network, dtypes)
    return (True, "") if why is None else (False, why)
