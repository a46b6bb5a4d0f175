"""Parameter records of the convolution family: convolution, deconvolution, pooling, matrix
multiply and fully connected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from engine.ir.layers.base import (
    ActivationSpec,
    LayerKind,
    LayerParams,
    PoolingType,
    TensorInfo,
    _fail,
    _float_input,
    _ints,
    _spatial_out,
    _weight,
    matmul_shape,
)


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
