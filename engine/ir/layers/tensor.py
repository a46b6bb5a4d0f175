"""Parameter records of data movement: concatenation, shuffle, slice, split, resize, padding,
constant and gather.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from engine.ir.dtypes import DataType
from engine.ir.layers.base import (
    LayerKind,
    LayerParams,
    PaddingMode,
    ResizeMode,
    TensorInfo,
    _axis,
    _fail,
    _float_input,
    _ints,
    _weight,
)


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
