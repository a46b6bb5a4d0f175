"""What GPU lowering produces: device tensors (``Slot``), launches (``Op``) and a segment's ``Lowered``.

Layouts. A slot is ``linear`` (row-major over the IR's logical shape) or ``nhwc`` (a rank-4 fp16
tensor stored N, H, W, Cp with C padded to a multiple of 8 and zero padding). The tensor-core
convolution, depthwise convolution and pooling kernels need ``nhwc``; every generated kernel
addresses tensors through logical coordinates times strides, so it reads either layout and
writes ``nhwc`` when its main input is ``nhwc`` (element-wise chains between convolutions stay in
that layout). Conversions therefore happen only where a layer that needs ``nhwc`` reads a
``linear`` tensor (a partition input, a reshape's output) and where a partition output leaves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backends.gpu.kernels import gen
from backends.gpu.kernels.conv import ConvGeometry
from backends.gpu.layout import round_up
from engine.ir.dtypes import Precision
from engine.ir.network import Layer, Network


def prec(layer: Layer) -> Precision:
    """The precision a layer computes in (FP32 unless the build assigned one)."""
    return layer.precision or Precision.FP32


# ------------------------------------------------------------------------------------------ slots


@dataclass
class Slot:
    """A device tensor of a segment. ``const`` slots hold uploaded weights (outside the arena).

    Layouts: ``linear`` (row-major), ``nhwc`` (rank 4, C padded to 8), and for int8 tensors
    ``nhwc16`` (C padded to 16) and ``rows16`` (last dim padded to 16).
    ``alias``: the slot whose bytes this one is (a transpose/reshape that moves no byte: no launch,
    no buffer of its own; the arena keeps that slot live while this one is read). Always a slot
    without an alias itself.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    layout: str = "linear"
    const: np.ndarray | None = None
    alias: str | None = None

    @property
    def phys_shape(self) -> tuple[int, ...]:
        if self.layout in ("nhwc", "nhwc16"):
            n, c, h, w = self.shape
            return (n, h, w, round_up(c, 8 if self.layout == "nhwc" else 16))
        if self.layout == "rows16":
            return (*self.shape[:-1], round_up(self.shape[-1], 16))
        return self.shape

    @property
    def strides(self) -> tuple[int, ...]:
        """Element strides per logical dim."""
        if self.layout in ("nhwc", "nhwc16"):
            n, c, h, w = self.shape
            cp = round_up(c, 8 if self.layout == "nhwc" else 16)
            return (h * w * cp, 1, w * cp, cp)
        if self.layout == "rows16":
            return gen.row_major(self.phys_shape)
        return gen.row_major(self.shape)

    @property
    def elements(self) -> int:
        return math.prod(self.phys_shape)

    @property
    def nbytes(self) -> int:
        return self.elements * np.dtype(self.dtype).itemsize

    def operand(self, out_shape: tuple[int, ...] | None = None, fp16_round: bool = False) -> gen.Operand:
        strides = self.strides if out_shape is None else gen.broadcast_strides(self.shape, self.strides, out_shape)
        dtype = "float32r" if fp16_round and self.dtype == "float32" else self.dtype
        return gen.Operand(dtype, strides)


# ------------------------------------------------------------------------------------------ ops


@dataclass
class Op:
    """One launch. ``kind``: 'gen' (a generated kernel), 'conv', 'depthwise', 'pool', 'gpool' (global
    average/max), 'conv8', 'dwconv8' (INT8 depthwise), 'pool8', 'quant8' (float32 NCHW -> int8
    NHWC16), 's2d' (float32 NCHW -> the fp16 NHWC 2x2 space-to-depth a stem convolution reads),
    'gemm_cublas' (a batched fp16 product through cuBLAS, ``kernels.cublas``), 'conv_gdirect' (the
    direct grouped convolution, ``kernels.grouped``), and the whole-layer convolution tactics
    'conv_cublas', 'conv_cublaslt', 'conv_gemv' and 'conv_cudnn' (``kernels.cudnn``).

    ``args`` names slots (or holds scalars) in the kernel's parameter order for 'gen'; the other
    kinds carry their geometry in ``info``.
    """

    label: str
    kind: str
    reads: list[str]
    writes: list[str]
    args: list[Any] = field(default_factory=list)
    grid: tuple[int, ...] = (1,)
    kernel: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    workspace: int = 0  # bytes of scratch (split-K partials), live during this op only
    block: int = 256  # threads per block of a 'gen' launch
    smem: int = 0  # bytes of dynamic shared memory of a 'gen' launch


@dataclass
class Lowered:
    slots: dict[str, Slot]
    ops: list[Op]
    inputs: list[str]  # slots staged from outside (linear, their storage dtype)
    outputs: dict[str, str]  # tensor name -> linear slot holding it for the caller
    source: str  # CUDA source of every generated kernel of the segment
    conv_layers: dict[str, ConvGeometry]  # layer name -> geometry of its tensor-core conv


# ------------------------------------------------------------------------------------------ support checks

FLOAT = ("float16", "float32")
Dtypes = dict[str, str]  # tensor -> numpy name of its storage dtype


def input_dtypes(layer: Layer, dtypes: Dtypes) -> list[str]:
    return [dtypes[t] for t in layer.inputs]


def check_float(layer: Layer, network: Network, dtypes: Dtypes) -> str | None:
    """The support check of kinds whose generated kernel computes in float: every input is float."""
    ins = input_dtypes(layer, dtypes)
    return None if all(d in FLOAT for d in ins) else f"{layer.kind.value} on {ins} tensors has no GPU kernel"
