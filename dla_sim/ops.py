"""Hardware-operation descriptors: the contract between the DLA units, the loadable and the simulator.

Everything here describes what the NVDLA hardware is programmed to do (register-level meaning),
independent of any framework graph.  Descriptors are frozen dataclasses; per-channel parameters are
tuples so that an op is hashable and serialises to JSON without loss.

Conventions (fixed; every unit follows them):

* Logical tensors handed to ``run`` functions are numpy arrays in NCHW order.  The in-memory layout
  (32-byte atoms, line/surface strides) is described by :class:`CubeDesc` and computed by
  ``dla_sim.formats``; byte counts for timing always come from the padded layout, never from N*C*H*W.
* INT8 arithmetic: the CONV core multiplies int8 x int8 and accumulates in wide integers (INT34 in
  CACC [IAS]); CACC hands int32 to SDP, saturating on overflow.  FP16 inputs are multiplied exactly and
  accumulated in float32 (CACC keeps FP44 and truncates to FP32 [IAS]).
* The SDP output converter (also used for the input converters) is
  ``y = sat(round(((x - offset) * scale) >> shift))`` [IAS §SDP]: ``offset`` int32, ``scale`` int16,
  ``shift`` 0..63 per channel or per layer; the right shift rounds half away from zero [PREC].
  :func:`convert` (via ``formats.convert_int``) is the executable definition used project-wide.
* Fusion: an ``SdpOp`` with ``source='flying'`` takes its input from the CACC of the preceding
  ``ConvOp``; a ``PdpOp`` with ``source='flying'`` takes it from the preceding SDP.  A maximal chain
  CONV -> SDP(flying) -> PDP(flying) forms one fused hardware layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

import numpy as np

ATOM_BYTES = 32  # memory atom of nv_full / Jetson DLA feature cubes [FMT]


class Precision(StrEnum):
    """Element precision of a cube or weight tensor."""

    INT8 = "int8"
    FP16 = "fp16"
    INT16 = "int16"  # present in open NVDLA; Jetson TRT exposes INT8/FP16 only [FAQ]

    @property
    def bytes(self) -> int:
        return 1 if self is Precision.INT8 else 2

    @property
    def dtype(self) -> np.dtype:
        return np.dtype({"int8": np.int8, "fp16": np.float16, "int16": np.int16}[self.value])

    @property
    def is_int(self) -> bool:
        return self is not Precision.FP16

    def atom_channels(self, atom_bytes: int = ATOM_BYTES) -> int:
        """Channels per memory atom: 32 for INT8, 16 for FP16 with 32-byte atoms [FMT]."""
        return atom_bytes // self.bytes


Memory = Literal["dram", "sram"]


@dataclass(frozen=True, kw_only=True)
class CubeDesc:
    """A feature cube N x C x H x W in DLA memory (DRAM or on-chip SRAM).

    Layout [FMT]: 1x1xatom atoms, order C'(one atom) -> W -> H -> C-surfaces -> N; C is padded to a
    whole atom.  ``line_stride``/``surface_stride`` default to the packed values.
    """

    n: int = 1
    c: int
    h: int
    w: int
    precision: Precision = Precision.INT8
    memory: Memory = "dram"
    atom_bytes: int = ATOM_BYTES
    line_stride_bytes: int | None = None
    surface_stride_bytes: int | None = None
    name: str = ""

    @property
    def atom_c(self) -> int:
        return self.precision.atom_channels(self.atom_bytes)

    @property
    def surfaces(self) -> int:
        return -(-self.c // self.atom_c)

    @property
    def c_padded(self) -> int:
        return self.surfaces * self.atom_c

    @property
    def line_stride(self) -> int:
        return self.line_stride_bytes if self.line_stride_bytes is not None else self.w * self.atom_bytes

    @property
    def surface_stride(self) -> int:
        if self.surface_stride_bytes is not None:
            return self.surface_stride_bytes
        return self.h * self.line_stride

    @property
    def batch_stride(self) -> int:
        return self.surfaces * self.surface_stride

    @property
    def bytes(self) -> int:
        """Bytes the cube occupies in memory (padded channels and strides included)."""
        return self.n * self.batch_stride

    @property
    def payload_bytes(self) -> int:
        """Bytes actually transferred when reading/writing the whole cube (padded atoms, packed)."""
        return self.n * self.surfaces * self.h * self.w * self.atom_bytes

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c, self.h, self.w)

    def with_(self, **kw) -> CubeDesc:
        from dataclasses import replace

        return replace(self, **kw)


@dataclass(frozen=True, kw_only=True)
class Requant:
    """SDP output converter parameters: y = sat(((x - offset) * scale) >> shift).

    ``scale``/``shift`` hold one value (per layer) or one per output channel.  ``out_precision`` is
    the saturation target.
    """

    scale: tuple[int, ...]
    shift: tuple[int, ...]
    offset: int = 0
    out_precision: Precision = Precision.INT8

    def arrays(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        sc = np.asarray(self.scale, dtype=np.int64)
        sh = np.asarray(self.shift, dtype=np.int64)
        if sc.size == 1:
            sc = np.full(c, sc.item(), np.int64)
        if sh.size == 1:
            sh = np.full(c, sh.item(), np.int64)
        if sc.size != c or sh.size != c:
            raise ValueError(f"requant has {sc.size} scales/{sh.size} shifts for {c} channels")
        return sc, sh


def saturate(x: np.ndarray, precision: Precision) -> np.ndarray:
    """Saturate integers to the range of ``precision`` (hardware saturation, no wrap)."""
    if precision is Precision.INT8:
        return np.clip(x, -128, 127).astype(np.int8)
    if precision is Precision.INT16:
        return np.clip(x, -32768, 32767).astype(np.int16)
    return np.asarray(x).astype(np.float16)


def convert(x: np.ndarray, rq: Requant, channel_axis: int = 1) -> np.ndarray:
    """The SDP converter, exactly: sat(round(((x - offset) * scale) >> shift)).

    Rounding is half away from zero, the hardware's rule ([PREC]; cmod ``AC_RND_INF``); the
    executable rule lives in ``formats.convert_int`` so that SDP and this path agree bit-for-bit.
    """
    from .formats import convert_int

    x = np.asarray(x, dtype=np.int64)
    c = x.shape[channel_axis]
    sc, sh = rq.arrays(c)
    bshape = [1] * x.ndim
    bshape[channel_axis] = c
    bits = 8 if rq.out_precision is Precision.INT8 else 16
    if rq.out_precision is Precision.FP16:
        raise ValueError("an integer converter cannot target FP16; use the FP16 pipeline")
    y = convert_int(x, rq.offset, sc.reshape(bshape), sh.reshape(bshape), bits)
    return y.astype(rq.out_precision.dtype)


@dataclass(frozen=True, kw_only=True)
class HwOp:
    """Base of all hardware operations.  ``unit`` names the NVDLA unit that executes it."""

    name: str = ""
    unit: str = field(init=False, default="")
    inputs: tuple[str, ...] = ()  # tensor names (wired by the loadable)
    outputs: tuple[str, ...] = ()


ConvMode = Literal["direct", "winograd", "image"]


@dataclass(frozen=True, kw_only=True)
class ConvOp(HwOp):
    """One convolution layer on the CONV core (CDMA -> CBUF -> CSC -> CMAC -> CACC).

    ``output`` is the cube that leaves the layer (after the SDP converter when no SdpOp follows).
    ``weight_compression``: fraction of weight bytes saved by the sparse weight format [HWARCH].
    ``sparse_2_4``: structured 2:4 sparsity along C (Orin only, INT8, C > 64 [FAQ]).
    """

    unit: str = field(init=False, default="conv")
    input: CubeDesc
    output: CubeDesc
    kernel: tuple[int, int]  # (R, S) = (kernel_h, kernel_w)
    stride: tuple[int, int] = (1, 1)  # (y, x)
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # (top, left, bottom, right)
    dilation: tuple[int, int] = (1, 1)  # (y, x)
    groups: int = 1
    mode: ConvMode = "direct"
    weight_precision: Precision | None = None  # defaults to input precision
    has_bias: bool = False
    requant: Requant | None = None  # SDP converter applied when no SdpOp is fused after
    pad_value: int = 0  # CDMA pad value (int input zero point)
    weight_compression: float = 0.0
    sparse_2_4: bool = False
    weight_memory: Memory = "dram"
    pra_trunc: int = 0  # INT8/INT16 Winograd: right shift of the PRA-transformed input (0-2 [HWARCH], [PREC])

    @property
    def k(self) -> int:
        return self.output.c

    @property
    def wprec(self) -> Precision:
        return self.weight_precision or self.input.precision

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.output.c, self.input.c // self.groups, self.kernel[0], self.kernel[1])

    @property
    def macs(self) -> int:
        k, cg, r, s = self.weight_shape
        return self.output.n * k * cg * r * s * self.output.h * self.output.w


SdpOperandMode = Literal["none", "per_layer", "per_channel", "per_element"]
Activation = Literal["none", "relu", "prelu", "clip", "sigmoid", "tanh"]
EltwiseKind = Literal["add", "sub", "mul", "max", "min"]


@dataclass(frozen=True, kw_only=True)
class SdpOp(HwOp):
    """Single-point data processor: bias, BN (scale), eltwise, activation, LUT, converters.

    Operand values for bias/scale are passed as arrays to ``sdp.run``; here only their modes.
    """

    unit: str = field(init=False, default="sdp")
    input: CubeDesc
    output: CubeDesc
    source: Literal["flying", "memory"] = "flying"
    bias: SdpOperandMode = "none"
    scale: SdpOperandMode = "none"
    activation: Activation = "none"
    clip_max: float | None = None
    prelu_slope: float | None = None
    eltwise: EltwiseKind | None = None
    eltwise_input: CubeDesc | None = None
    in_requant: Requant | None = None  # eltwise operand converter
    out_requant: Requant | None = None  # output converter
    bias_shift: int = 0  # X1 ALU: int16 bias operand << bias_shift before the add
    scale_shift: int = 0  # X1 MUL: (x + bias) * scale >> scale_shift
    eltwise_shift: int = 0  # X2 MUL: x * operand >> eltwise_shift (eltwise mul)
    prelu_shift: int = 0  # Y MUL, PReLU: negative x * slope >> prelu_shift
    lut_in_scale: float | None = None  # INT pipeline: real value of one LUT-input LSB
    fp_out_scale: float | None = None  # FP pipeline, INT8 output: the converter's quantization step


@dataclass(frozen=True, kw_only=True)
class PdpOp(HwOp):
    """Planar data processor: max/min/average pooling."""

    unit: str = field(init=False, default="pdp")
    input: CubeDesc
    output: CubeDesc
    mode: Literal["max", "min", "avg"] = "max"
    kernel: tuple[int, int] = (2, 2)  # (h, w)
    stride: tuple[int, int] = (2, 2)  # (y, x)
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # (top, left, bottom, right)
    pad_value: float = 0.0
    source: Literal["flying", "memory"] = "flying"
    split_width: int = 1


@dataclass(frozen=True, kw_only=True)
class CdpOp(HwOp):
    """Channel data processor: local response normalisation across channels (LUT-based)."""

    unit: str = field(init=False, default="cdp")
    input: CubeDesc
    output: CubeDesc
    local_size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0


@dataclass(frozen=True, kw_only=True)
class RubikOp(HwOp):
    """Data reshape engine: contract (deconvolution interleave), split, merge."""

    unit: str = field(init=False, default="rubik")
    input: CubeDesc
    output: CubeDesc
    mode: Literal["contract", "split", "merge"] = "contract"
    stride: tuple[int, int] = (1, 1)  # (y, x) deconvolution stride for contract


@dataclass(frozen=True, kw_only=True)
class BdmaOp(HwOp):
    """Bridge DMA copy between DRAM and on-chip SRAM (line/surface repeat)."""

    unit: str = field(init=False, default="bdma")
    src_memory: Memory = "dram"
    dst_memory: Memory = "sram"
    line_bytes: int = 0
    lines: int = 1
    surfaces: int = 1
    src_line_stride: int = 0
    dst_line_stride: int = 0
    src_surface_stride: int = 0
    dst_surface_stride: int = 0

    @property
    def bytes(self) -> int:
        return self.line_bytes * self.lines * self.surfaces


AnyOp = ConvOp | SdpOp | PdpOp | CdpOp | RubikOp | BdmaOp


@dataclass(frozen=True, kw_only=True)
class UnitTiming:
    """Timing result of one unit for one op (cycles at the DLA core clock)."""

    unit: str
    cycles: float
    compute_cycles: float = 0.0
    dram_read_bytes: int = 0
    dram_write_bytes: int = 0
    sram_read_bytes: int = 0
    sram_write_bytes: int = 0
    macs: int = 0
    elem_ops: int = 0
    notes: tuple[str, ...] = ()

    @property
    def dram_bytes(self) -> int:
        return self.dram_read_bytes + self.dram_write_bytes

    @property
    def sram_bytes(self) -> int:
        return self.sram_read_bytes + self.sram_write_bytes
