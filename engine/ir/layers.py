"""Typed layer descriptors: validated parameters and shape inference.

Each layer kind is a frozen dataclass of parameters. ``infer`` checks the parameters against the
input tensors and weights and returns the output tensor infos; it raises ``NetworkError`` with a
reason (the network adds the layer name). Weights (kernels, biases, constants) are numpy arrays
held by the layer, not by the parameters, so parameters stay small, hashable and JSON-friendly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, ClassVar

import numpy as np

from engine.ir import plugin_registry
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


class ResizeMode(StrEnum):
    NEAREST = "nearest"
    LINEAR = "linear"


class PaddingMode(StrEnum):
    CONSTANT = "constant"
    REFLECT = "reflect"
    EDGE = "edge"
    WRAP = "wrap"


# ---------------------------------------------------------------------------------------------
# helpers


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
        return _encode(self)

    def replace(self, **changes: Any) -> LayerParams:
        return dataclasses.replace(self, **changes)


def _conv_geometry(kind: str, rank_sp: int, kernel, stride, pre, post, dilation) -> None:
    for name, vals in (("kernel", kernel), ("stride", stride), ("pre_padding", pre),
                       ("post_padding", post), ("dilation", dilation)):
        if len(vals) != rank_sp:
            _fail(f"{kind} {name} {tuple(vals)} has {len(vals)} dims but input has {rank_sp} spatial dims")
    _ints(kernel, "kernel", 1)
    _ints(stride, "stride", 1)
    _ints(dilation, "dilation", 1)
    _ints(pre, "pre_padding", 0)
    _ints(post, "post_padding", 0)


@dataclass(frozen=True)
class ConvolutionParams(LayerParams):
    """N-d convolution (1-3 spatial dims). Weights: kernel (K, C/groups, *k), optional bias (K).

    Fused epilogue (set by the optimizer): y = activation(conv(x) + bias + residual), where the
    residual is the layer's second input when ``residual`` is true.
    """

    kind: ClassVar[LayerKind] = LayerKind.CONVOLUTION
    max_inputs: ClassVar[int] = 2
    num_output_maps: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pre_padding: tuple[int, ...]
    post_padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int = 1
    activation: ActivationSpec | None = None
    residual: bool = False

    def infer(self, inputs, weights):
        x = inputs[0]
        _float_input(x, "convolution input")
        if x.rank < 3:
            _fail(f"convolution input must be (N, C, spatial...), got shape {x.shape}")
        sp = x.rank - 2
        _conv_geometry("convolution", sp, self.kernel, self.stride, self.pre_padding,
                       self.post_padding, self.dilation)
        c, k, g = x.shape[1], self.num_output_maps, self.groups
        if g < 1 or c % g or k % g:
            _fail(f"groups {g} must divide input channels {c} and output maps {k}")
        w = _weight(weights, "kernel")
        if w.shape != (k, c // g, *self.kernel):
            _fail(f"kernel weights shape {w.shape} != expected {(k, c // g, *self.kernel)}")
        b = _weight(weights, "bias", required=False)
        if b is not None and b.shape != (k,):
            _fail(f"bias shape {b.shape} != ({k},)")
        out = tuple(_spatial_out(x.shape[2 + i], self.kernel[i], self.stride[i], self.pre_padding[i],
                                 self.post_padding[i], self.dilation[i]) for i in range(sp))
        y = TensorInfo((x.shape[0], k, *out), x.dtype)
        if self.residual:
            if len(inputs) != 2:
                _fail("residual convolution needs a second input")
            if inputs[1].shape != y.shape:
                _fail(f"residual shape {inputs[1].shape} != convolution output {y.shape}")
        elif len(inputs) != 1:
            _fail("convolution takes one input unless residual is set")
        return [y]


@dataclass(frozen=True)
class DeconvolutionParams(LayerParams):
    """Transposed convolution. Weights: kernel (C, K/groups, *k), optional bias (K)."""

    kind: ClassVar[LayerKind] = LayerKind.DECONVOLUTION
    num_output_maps: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pre_padding: tuple[int, ...]
    post_padding: tuple[int, ...]
    dilation: tuple[int, ...]
    output_padding: tuple[int, ...] = ()
    groups: int = 1
    activation: ActivationSpec | None = None

    def infer(self, inputs, weights):
        x = inputs[0]
        _float_input(x, "deconvolution input")
        if x.rank < 3:
            _fail(f"deconvolution input must be (N, C, spatial...), got shape {x.shape}")
        sp = x.rank - 2
        _conv_geometry("deconvolution", sp, self.kernel, self.stride, self.pre_padding,
                       self.post_padding, self.dilation)
        opad = self.output_padding or (0,) * sp
        if len(opad) != sp:
            _fail(f"output_padding {opad} must have {sp} dims")
        c, k, g = x.shape[1], self.num_output_maps, self.groups
        if g < 1 or c % g or k % g:
            _fail(f"groups {g} must divide input channels {c} and output maps {k}")
        w = _weight(weights, "kernel")
        if w.shape != (c, k // g, *self.kernel):
            _fail(f"kernel weights shape {w.shape} != expected {(c, k // g, *self.kernel)}")
        b = _weight(weights, "bias", required=False)
        if b is not None and b.shape != (k,):
            _fail(f"bias shape {b.shape} != ({k},)")
        out = []
        for i in range(sp):
            o = (self.stride[i] * (x.shape[2 + i] - 1) + opad[i] + self.dilation[i] * (self.kernel[i] - 1)
                 + 1 - self.pre_padding[i] - self.post_padding[i])
            if o < 1:
                _fail(f"deconvolution output dim {i} would be {o}")
            out.append(o)
        return [TensorInfo((x.shape[0], k, *out), x.dtype)]


@dataclass(frozen=True)
class PoolingParams(LayerParams):
    """Max/average/Lp pooling; ``global_pool`` takes the whole spatial extent."""

    kind: ClassVar[LayerKind] = LayerKind.POOLING
    type: PoolingType
    window: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    pre_padding: tuple[int, ...] = ()
    post_padding: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    ceil_mode: bool = False
    count_include_pad: bool = False
    global_pool: bool = False
    lp_order: int = 2

    def resolved(self, spatial: tuple[int, ...]) -> PoolingParams:
        """Window/stride/padding filled in for a global pool or defaulted fields."""
        sp = len(spatial)
        if self.global_pool:
            return self.replace(window=tuple(spatial), stride=(1,) * sp, pre_padding=(0,) * sp,
                                post_padding=(0,) * sp, dilation=(1,) * sp)
        return self.replace(stride=self.stride or (1,) * sp, pre_padding=self.pre_padding or (0,) * sp,
                            post_padding=self.post_padding or (0,) * sp,
                            dilation=self.dilation or (1,) * sp)

    def infer(self, inputs, weights):
        x = inputs[0]
        _float_input(x, "pooling input")
        if x.rank < 3:
            _fail(f"pooling input must be (N, C, spatial...), got shape {x.shape}")
        p = self.resolved(x.shape[2:])
        _conv_geometry("pooling", x.rank - 2, p.window, p.stride, p.pre_padding, p.post_padding, p.dilation)
        for i in range(x.rank - 2):
            if p.pre_padding[i] >= p.window[i] * p.dilation[i] or p.post_padding[i] >= p.window[i] * p.dilation[i]:
                _fail(f"pooling padding {p.pre_padding}/{p.post_padding} must be smaller than window {p.window}")
        out = tuple(_spatial_out(x.shape[2 + i], p.window[i], p.stride[i], p.pre_padding[i],
                                 p.post_padding[i], p.dilation[i], p.ceil_mode) for i in range(x.rank - 2))
        return [TensorInfo((*x.shape[:2], *out), x.dtype)]


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
class MatrixMultiplyParams(LayerParams):
    """numpy.matmul semantics (batch broadcasting, 1-D promotion), optional transposes."""

    kind: ClassVar[LayerKind] = LayerKind.MATRIX_MULTIPLY
    min_inputs: ClassVar[int] = 2
    max_inputs: ClassVar[int] = 2
    transpose_a: bool = False
    transpose_b: bool = False

    def infer(self, inputs, weights):
        a, b = inputs
        _float_input(a, "matmul input A")
        if a.dtype != b.dtype:
            _fail(f"matmul inputs have different dtypes {a.dtype.value}, {b.dtype.value}")
        sa, sb = list(a.shape), list(b.shape)
        if self.transpose_a and len(sa) >= 2:
            sa[-1], sa[-2] = sa[-2], sa[-1]
        if self.transpose_b and len(sb) >= 2:
            sb[-1], sb[-2] = sb[-2], sb[-1]
        shape = matmul_shape(tuple(sa), tuple(sb))
        if shape is None:
            _fail(f"matmul shapes {tuple(sa)} and {tuple(sb)} are incompatible")
        return [TensorInfo(tuple(shape), a.dtype)]


@dataclass(frozen=True)
class FullyConnectedParams(LayerParams):
    """y = x @ kernel.T + bias over the last axis. Weights: kernel (K, C), optional bias (K)."""

    kind: ClassVar[LayerKind] = LayerKind.FULLY_CONNECTED
    num_outputs: int
    activation: ActivationSpec | None = None

    def infer(self, inputs, weights):
        x = inputs[0]
        _float_input(x, "fully connected input")
        if x.rank < 1:
            _fail("fully connected input must have rank >= 1")
        w = _weight(weights, "kernel")
        if w.shape != (self.num_outputs, x.shape[-1]):
            _fail(f"kernel shape {w.shape} != ({self.num_outputs}, {x.shape[-1]})")
        b = _weight(weights, "bias", required=False)
        if b is not None and b.shape != (self.num_outputs,):
            _fail(f"bias shape {b.shape} != ({self.num_outputs},)")
        return [TensorInfo((*x.shape[:-1], self.num_outputs), x.dtype)]


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
class ConcatenationParams(LayerParams):
    """Concatenation; ``in_place`` (set by the optimizer) makes producers write into the output."""

    kind: ClassVar[LayerKind] = LayerKind.CONCATENATION
    max_inputs: ClassVar[int] = 1 << 16
    axis: int
    in_place: bool = False

    def infer(self, inputs, weights):
        rank = inputs[0].rank
        ax = _axis(self.axis, rank)
        for t in inputs[1:]:
            if t.rank != rank or t.dtype != inputs[0].dtype:
                _fail(f"concat inputs differ in rank or dtype: {inputs[0]} vs {t}")
            if any(t.shape[i] != inputs[0].shape[i] for i in range(rank) if i != ax):
                _fail(f"concat inputs {[i.shape for i in inputs]} differ outside axis {ax}")
        shape = list(inputs[0].shape)
        shape[ax] = sum(t.shape[ax] for t in inputs)
        return [TensorInfo(tuple(shape), inputs[0].dtype)]


@dataclass(frozen=True)
class ShuffleParams(LayerParams):
    """TensorRT's shuffle: transpose, then reshape (fully resolved dims), then transpose."""

    kind: ClassVar[LayerKind] = LayerKind.SHUFFLE
    first_perm: tuple[int, ...] | None = None
    reshape: tuple[int, ...] | None = None
    second_perm: tuple[int, ...] | None = None

    def infer(self, inputs, weights):
        x = inputs[0]
        shape = x.shape
        if self.first_perm is not None:
            if sorted(self.first_perm) != list(range(len(shape))):
                _fail(f"first_perm {self.first_perm} is not a permutation of rank {len(shape)}")
            shape = tuple(shape[p] for p in self.first_perm)
        if self.reshape is not None:
            _ints(self.reshape, "reshape dims", 0)
            if math.prod(self.reshape) != math.prod(shape):
                _fail(f"cannot reshape {shape} ({math.prod(shape)} elements) to {self.reshape}")
            shape = tuple(int(d) for d in self.reshape)
        if self.second_perm is not None:
            if sorted(self.second_perm) != list(range(len(shape))):
                _fail(f"second_perm {self.second_perm} is not a permutation of rank {len(shape)}")
            shape = tuple(shape[p] for p in self.second_perm)
        return [TensorInfo(shape, x.dtype)]


@dataclass(frozen=True)
class SliceParams(LayerParams):
    """out[i] = in[start + i * step] per axis; full rank, resolved (steps may be negative)."""

    kind: ClassVar[LayerKind] = LayerKind.SLICE
    start: tuple[int, ...]
    size: tuple[int, ...]
    step: tuple[int, ...]

    def infer(self, inputs, weights):
        x = inputs[0]
        if not (len(self.start) == len(self.size) == len(self.step) == x.rank):
            _fail(f"slice start/size/step must have rank {x.rank}")
        for d, (s0, n, st) in enumerate(zip(self.start, self.size, self.step)):
            if st == 0:
                _fail(f"slice step on axis {d} is 0")
            if n < 0:
                _fail(f"slice size on axis {d} is negative")
            if n and not (0 <= s0 < x.shape[d] and 0 <= s0 + (n - 1) * st < x.shape[d]):
                _fail(f"slice on axis {d} (start {s0}, size {n}, step {st}) leaves dim {x.shape[d]}")
        return [TensorInfo(tuple(self.size), x.dtype)]


@dataclass(frozen=True)
class SplitParams(LayerParams):
    kind: ClassVar[LayerKind] = LayerKind.SPLIT
    axis: int
    sizes: tuple[int, ...]

    def infer(self, inputs, weights):
        x = inputs[0]
        ax = _axis(self.axis, x.rank)
        _ints(self.sizes, "split sizes", 0)
        if sum(self.sizes) != x.shape[ax]:
            _fail(f"split sizes {self.sizes} do not sum to dim {x.shape[ax]} of axis {ax}")
        outs = []
        for s in self.sizes:
            shape = list(x.shape)
            shape[ax] = s
            outs.append(TensorInfo(tuple(shape), x.dtype))
        return outs


@dataclass(frozen=True)
class ResizeParams(LayerParams):
    """Resize to ``output_shape``; coordinate modes as ONNX names them."""

    kind: ClassVar[LayerKind] = LayerKind.RESIZE
    output_shape: tuple[int, ...]
    mode: ResizeMode = ResizeMode.NEAREST
    coordinate_transformation: str = "half_pixel"
    nearest_mode: str = "round_prefer_floor"
    scales: tuple[float, ...] | None = None  # when given, used for coordinate mapping

    COORDINATE_MODES: ClassVar[tuple[str, ...]] = ("half_pixel", "pytorch_half_pixel", "align_corners",
                                                    "asymmetric", "half_pixel_symmetric")
    NEAREST_MODES: ClassVar[tuple[str, ...]] = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")

    def infer(self, inputs, weights):
        x = inputs[0]
        _float_input(x, "resize input")
        if len(self.output_shape) != x.rank:
            _fail(f"resize output shape {self.output_shape} must have rank {x.rank}")
        _ints(self.output_shape, "resize output shape", 1)
        if self.coordinate_transformation not in self.COORDINATE_MODES:
            _fail(f"resize coordinate_transformation_mode '{self.coordinate_transformation}' not supported")
        if self.nearest_mode not in self.NEAREST_MODES:
            _fail(f"resize nearest_mode '{self.nearest_mode}' not supported")
        if self.scales is not None and len(self.scales) != x.rank:
            _fail(f"resize scales {self.scales} must have rank {x.rank}")
        return [TensorInfo(tuple(self.output_shape), x.dtype)]


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
        return [TensorInfo(shape, x.dtype)]


@dataclass(frozen=True)
class PaddingParams(LayerParams):
    """Pads per axis (full rank); negative pads crop."""

    kind: ClassVar[LayerKind] = LayerKind.PADDING
    pre: tuple[int, ...]
    post: tuple[int, ...]
    mode: PaddingMode = PaddingMode.CONSTANT
    value: float = 0.0

    def infer(self, inputs, weights):
        x = inputs[0]
        if len(self.pre) != x.rank or len(self.post) != x.rank:
            _fail(f"padding pre/post must have rank {x.rank}")
        shape = tuple(d + a + b for d, a, b in zip(x.shape, self.pre, self.post))
        if any(d < 0 for d in shape):
            _fail(f"padding {self.pre}/{self.post} crops input {x.shape} below zero")
        if self.mode is PaddingMode.REFLECT:
            # negative pads crop first; reflection then needs each positive pad below the cropped dim
            cropped = [d + min(a, 0) + min(b, 0) for d, a, b in zip(x.shape, self.pre, self.post)]
            if any(max(a, b) >= c for a, b, c in zip(self.pre, self.post, cropped)):
                _fail(f"reflect padding {self.pre}/{self.post} must be smaller than the cropped dims {tuple(cropped)}")
        return [TensorInfo(shape, x.dtype)]


@dataclass(frozen=True)
class ConstantParams(LayerParams):
    """Produces the weight 'value'."""

    kind: ClassVar[LayerKind] = LayerKind.CONSTANT
    min_inputs: ClassVar[int] = 0
    max_inputs: ClassVar[int] = 0

    def infer(self, inputs, weights):
        v = _weight(weights, "value")
        try:
            dtype = DataType.from_numpy(v.dtype)
        except ValueError as e:
            _fail(str(e))
        return [TensorInfo(tuple(v.shape), dtype)]


@dataclass(frozen=True)
class GatherParams(LayerParams):
    """numpy.take with constant indices (weight 'indices', int64; negative values wrap)."""

    kind: ClassVar[LayerKind] = LayerKind.GATHER
    axis: int = 0

    def infer(self, inputs, weights):
        x = inputs[0]
        ax = _axis(self.axis, x.rank)
        idx = _weight(weights, "indices")
        if idx.dtype.kind not in "iu":
            _fail(f"gather indices must be integers, got {idx.dtype}")
        n = x.shape[ax]
        if idx.size and (idx.min() < -n or idx.max() >= n):
            _fail(f"gather indices out of range [-{n}, {n - 1}] on axis {ax}")
        return [TensorInfo((*x.shape[:ax], *idx.shape, *x.shape[ax + 1:]), x.dtype)]


@dataclass(frozen=True)
class CastParams(LayerParams):
    kind: ClassVar[LayerKind] = LayerKind.CAST
    to: DataType

    def infer(self, inputs, weights):
        return [TensorInfo(inputs[0].shape, self.to)]


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


PARAMS_BY_KIND: dict[LayerKind, type[LayerParams]] = {
    cls.kind: cls
    for cls in (ConvolutionParams, DeconvolutionParams, PoolingParams, ActivationParams,
                ParametricReLUParams, ScaleParams, ElementWiseParams, UnaryParams, LRNParams,
                MatrixMultiplyParams, FullyConnectedParams, SoftMaxParams, ConcatenationParams,
                ShuffleParams, SliceParams, SplitParams, ResizeParams, ReduceParams, PaddingParams,
                ConstantParams, GatherParams, CastParams, NormalizationParams, IdentityParams,
                PointwiseParams, QuantizeParams, DequantizeParams)
}

# Nested value types that may appear inside parameter records, by tag, for JSON round trips.
_NESTED: dict[str, type] = {"ActivationSpec": ActivationSpec, "PointwiseStep": PointwiseStep}
_ENUMS: dict[str, type[Enum]] = {
    e.__name__: e for e in (ActivationType, PoolingType, ScaleMode, ElementWiseOp, UnaryOp, ReduceOp,
                            ResizeMode, PaddingMode, DataType)
}


def _encode(value: Any) -> Any:
    if isinstance(value, Enum):
        return {"$enum": type(value).__name__, "v": value.value}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        body = {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if type(value).__name__ in _NESTED:
            return {"$type": type(value).__name__, **body}
        return body
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


def _decode(value: Any) -> Any:
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
            return cls(**{k: _decode(v) for k, v in value.items() if k != "$type"})
        raise ValueError(f"unexpected object {sorted(value)}")
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    return value


def params_from_dict(kind: str, data: dict[str, Any]) -> LayerParams:
    """Rebuild a parameter record from ``to_dict`` output; raises ValueError on anything odd."""
    cls = PARAMS_BY_KIND[LayerKind(kind)]
    names = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(data, dict) or set(data) - names:
        raise ValueError(f"{kind} parameters have unknown fields {sorted(set(data) - names)}")
    return cls(**{k: _decode(v) for k, v in data.items()})


# Layers that only move or reinterpret data: they keep their input's precision (no FP16/INT8 variant).
SHAPE_ONLY = frozenset({LayerKind.CONSTANT, LayerKind.SHUFFLE, LayerKind.SLICE, LayerKind.SPLIT,
                        LayerKind.CONCATENATION, LayerKind.GATHER, LayerKind.IDENTITY, LayerKind.CAST,
                        LayerKind.PADDING})


# ---------------------------------------------------------------------------------------------
# plugin layers: a registered custom layer, named by (namespace, name, version), with typed fields


@dataclass(frozen=True)
class PluginParams(LayerParams):
    """A custom layer computed by a registered plugin (``engine.plugin``).

    ``fields`` are (name, type, value) triples in the plugin's schema order; values are canonical
    (ints, floats, strings, tuples of numbers, ``PluginArray``) so the record stays hashable and
    serializes as plain data. Shape inference asks the registry; an unregistered plugin is an error.
    """

    kind: ClassVar[LayerKind] = LayerKind.PLUGIN
    min_inputs: ClassVar[int] = 0
    max_inputs: ClassVar[int] = 64
    name: str
    version: str
    namespace: str = ""
    fields: tuple[tuple[str, str, Any], ...] = ()

    @property
    def key(self) -> str:
        return plugin_registry.qualified(self.namespace, self.name)

    def field_values(self) -> dict[str, Any]:
        return plugin_registry.field_values(self.fields)

    def infer(self, inputs, weights):
        spec = plugin_registry.lookup(self.namespace, self.name, self.version)
        if spec is None:
            _fail(f"plugin '{self.key}' version {self.version} is not registered")
        try:
            plugin_registry.check_stored_fields(spec, self.fields, f"plugin '{self.key}'")
            descs = [plugin_registry.TensorDesc(i.shape, i.dtype.numpy) for i in inputs]
            outs = plugin_registry.infer_outputs(spec, descs, self.fields)
        except plugin_registry.PluginError as e:
            _fail(str(e))
        return [TensorInfo(o.shape, DataType.from_numpy(o.dtype)) for o in outs]


PARAMS_BY_KIND[LayerKind.PLUGIN] = PluginParams
_NESTED["PluginArray"] = plugin_registry.PluginArray
