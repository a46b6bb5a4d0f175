"""Data movement: concat, reshape family, slice/split, pad, gather, cast, resize, tile/expand."""

from __future__ import annotations

import math

import numpy as np

from engine.ir.layers import (
    CastParams,
    ConcatenationParams,
    ElementWiseOp,
    ElementWiseParams,
    GatherParams,
    IdentityParams,
    PaddingMode,
    PaddingParams,
    ResizeMode,
    ResizeParams,
    ShuffleParams,
    SliceParams,
    SplitParams,
)
from engine.onnx_parser.context import NodeContext, Ref, contiguous, hetrt_dtype, numpy_dtype_of
from engine.onnx_parser.registry import converter


def _int_list(values: np.ndarray) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


def _norm_axes(nc: NodeContext, axes: list[int], rank: int) -> list[int]:
    out = []
    for a in axes:
        if not -rank <= a < rank:
            raise nc.error(f"axis {a} is out of range for rank {rank}")
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise nc.error(f"axes {axes} repeat an axis")
    return out


def reshape_to(nc: NodeContext, x: Ref, shape: tuple[int, ...], final: bool = True) -> Ref:
    if nc.shape(x) == tuple(shape) and not final:
        return x
    return nc.add1(ShuffleParams(reshape=tuple(int(d) for d in shape)), [x], final=final)


@converter("Concat")
def concat(nc):
    refs = nc.inputs()
    if not refs:
        raise nc.error("needs at least one input")
    rank = nc.rank(refs[0])
    axis = nc.attr("axis")
    if axis is None:
        raise nc.error("attribute 'axis' is required")
    axis = _norm_axes(nc, [int(axis)], rank)[0]
    # Zero-sized pieces (PyTorch emits them for empty shape lists) contribute nothing.
    kept = [r for r in refs if nc.shape(r)[axis] != 0] or refs[:1]
    if len(kept) == 1:
        return [nc.add1(IdentityParams(), kept)]
    return [nc.add1(ConcatenationParams(axis=axis), kept)]


@converter("Reshape")
def reshape(nc):
    x = nc.input(0)
    in_shape = nc.shape(x)
    spec = _int_list(nc.const(1, "shape"))
    allowzero = bool(nc.attr("allowzero", 0))
    out: list[int] = []
    infer_at = None
    for i, d in enumerate(spec):
        if d == 0 and not allowzero:
            if i >= len(in_shape):
                raise nc.error(f"shape {spec} copies dim {i} (0) but the input {in_shape} has rank {len(in_shape)}")
            d = in_shape[i]
        elif d == -1:
            if infer_at is not None:
                raise nc.error(f"shape {spec} has more than one -1")
            infer_at = i
            d = 1
        elif d < 0:
            raise nc.error(f"shape {spec} has a negative dim {d}")
        out.append(d)
    total = math.prod(in_shape)
    if infer_at is not None:
        rest = math.prod(out)
        if rest == 0 or total % rest:
            raise nc.error(f"cannot reshape {in_shape} to {spec}")
        out[infer_at] = total // rest
    if math.prod(out) != total:
        raise nc.error(f"cannot reshape {in_shape} ({total} elements) to {spec}")
    return [reshape_to(nc, x, tuple(out))]


@converter("Transpose")
def transpose(nc):
    x = nc.input(0)
    rank = nc.rank(x)
    perm = nc.ints("perm", tuple(reversed(range(rank))))
    if sorted(perm) != list(range(rank)):
        raise nc.error(f"perm {perm} is not a permutation of rank {rank}")
    return [nc.add1(ShuffleParams(first_perm=tuple(perm)), [x])]


@converter("Flatten")
def flatten(nc):
    x = nc.input(0)
    shape = nc.shape(x)
    axis = int(nc.attr("axis", 1))
    if not -len(shape) <= axis <= len(shape):
        raise nc.error(f"axis {axis} is out of range for rank {len(shape)}")
    if axis < 0:
        axis += len(shape)
    return [reshape_to(nc, x, (math.prod(shape[:axis]), math.prod(shape[axis:])))]


def _axes_arg(nc: NodeContext, input_since: int) -> list[int] | None:
    if nc.opset >= input_since:
        return _int_list(nc.const(1, "axes")) if nc.has_input(1) else None
    axes = nc.ints("axes")
    return None if axes is None else list(axes)


@converter("Squeeze")
def squeeze(nc):
    x = nc.input(0)
    shape = nc.shape(x)
    axes = _axes_arg(nc, 13)
    if axes is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
    axes = _norm_axes(nc, axes, len(shape))
    for a in axes:
        if shape[a] != 1:
            raise nc.error(f"cannot squeeze axis {a} of size {shape[a]} (input shape {shape})")
    return [reshape_to(nc, x, tuple(d for i, d in enumerate(shape) if i not in axes))]


@converter("Unsqueeze")
def unsqueeze(nc):
    x = nc.input(0)
    shape = nc.shape(x)
    axes = _axes_arg(nc, 13)
    if axes is None:
        raise nc.error("axes are required")
    rank = len(shape) + len(axes)
    axes = _norm_axes(nc, axes, rank)
    it = iter(shape)
    out = tuple(1 if i in axes else next(it) for i in range(rank))
    return [reshape_to(nc, x, out)]


def slice_geometry(dim: int, start: int, end: int, step: int) -> tuple[int, int]:
    """ONNX Slice clamping for one axis → (first index, element count)."""
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        start = min(max(start, 0), dim)
        end = min(max(end, 0), dim)
    else:
        start = min(max(start, 0), dim - 1)
        end = min(max(end, -1), dim - 1)
    count = max(0, -(-(end - start) // step))
    return (start if count else 0), count


@converter("Slice")
def slice_(nc):
    x = nc.input(0)
    shape = nc.shape(x)
    rank = len(shape)
    if nc.opset >= 10:
        starts = _int_list(nc.const(1, "starts"))
        ends = _int_list(nc.const(2, "ends"))
        axes = _int_list(nc.const(3, "axes")) if nc.has_input(3) else list(range(len(starts)))
        steps = _int_list(nc.const(4, "steps")) if nc.has_input(4) else [1] * len(starts)
    else:
        starts, ends = list(nc.ints("starts", ())), list(nc.ints("ends", ()))
        axes = list(nc.ints("axes", range(len(starts))))
        steps = [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise nc.error(f"starts {starts}, ends {ends}, axes {axes} and steps {steps} differ in length")
    axes = _norm_axes(nc, axes, rank)
    start, size, step = [0] * rank, list(shape), [1] * rank
    for a, s, e, st in zip(axes, starts, ends, steps):
        if st == 0:
            raise nc.error(f"step on axis {a} is 0")
        start[a], size[a] = slice_geometry(shape[a], s, e, st)
        step[a] = st
    return [nc.add1(SliceParams(tuple(start), tuple(size), tuple(step)), [x])]


@converter("Split")
def split(nc):
    x = nc.input(0)
    shape = nc.shape(x)
    axis = _norm_axes(nc, [int(nc.attr("axis", 0))], len(shape))[0]
    dim = shape[axis]
    n_out = len(nc.node.output)
    if nc.opset >= 13:
        sizes = _int_list(nc.const(1, "split")) if nc.has_input(1) else None
    else:
        sizes = list(nc.ints("split")) if nc.ints("split") is not None else None
    if sizes is None:
        parts = int(nc.attr("num_outputs", n_out))
        if parts != n_out:
            raise nc.error(f"num_outputs {parts} differs from the node's {n_out} outputs")
        if nc.attr("num_outputs") is not None:
            chunk = -(-dim // parts)
            sizes = [min(chunk, max(dim - chunk * i, 0)) for i in range(parts)]
        else:
            if dim % parts:
                raise nc.error(f"axis {axis} of size {dim} does not split evenly into {parts} outputs")
            sizes = [dim // parts] * parts
    if len(sizes) != n_out or sum(sizes) != dim:
        raise nc.error(f"split sizes {sizes} must be {n_out} values summing to {dim}")
    return nc.add(SplitParams(axis=axis, sizes=tuple(sizes)), [x])


_PAD_MODES = {"constant": PaddingMode.CONSTANT, "reflect": PaddingMode.REFLECT, "edge": PaddingMode.EDGE,
              "wrap": PaddingMode.WRAP}


@converter("Pad")
def pad(nc):
    x = nc.input(0)
    rank = nc.rank(x)
    mode = nc.attr("mode", "constant")
    if mode not in _PAD_MODES:
        raise nc.unsupported(f"pad mode '{mode}' is not one of {', '.join(_PAD_MODES)}")
    if nc.opset < 11:
        pads = list(nc.ints("pads", ()))
        value = float(nc.attr("value", 0.0))
        axes = list(range(rank))
    else:
        pads = _int_list(nc.const(1, "pads"))
        cv = nc.const(2, "constant_value") if nc.has_input(2) else None
        if cv is not None and np.asarray(cv).size > 1:
            raise nc.error(f"constant_value must be a scalar, got shape {list(np.shape(cv))}")
        value = float(np.asarray(cv).reshape(-1)[0]) if cv is not None and np.asarray(cv).size else 0.0
        axes = _norm_axes(nc, _int_list(nc.const(3, "axes")), rank) if nc.has_input(3) else list(range(rank))
    if len(pads) != 2 * len(axes):
        raise nc.error(f"pads {pads} must have {2 * len(axes)} values")
    pre, post = [0] * rank, [0] * rank
    for k, a in enumerate(axes):
        pre[a], post[a] = pads[k], pads[len(axes) + k]
    if not any(pre) and not any(post):
        return [nc.add1(IdentityParams(), [x])]
    return [nc.add1(PaddingParams(tuple(pre), tuple(post), _PAD_MODES[mode], value), [x])]


@converter("Gather")
def gather(nc):
    x = nc.input(0)
    rank = nc.rank(x)
    axis = _norm_axes(nc, [int(nc.attr("axis", 0))], rank)[0]
    idx = nc.const(1, "indices")
    if idx.dtype.kind not in "iu":
        raise nc.error(f"indices must be integers, got {idx.dtype}")
    n = nc.shape(x)[axis]
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise nc.error(f"indices out of range [-{n}, {n - 1}] for axis {axis}")
    return [nc.add1(GatherParams(axis=axis), [x], {"indices": idx.astype(np.int64)})]


def _cast(nc: NodeContext, x: Ref, target: np.dtype) -> list[Ref]:
    if x.is_const:
        return [Ref(const=x.const.astype(target))]
    if nc.np_dtype(x) == target:
        return [nc.add1(IdentityParams(), [x])]
    dt = hetrt_dtype(target)
    if dt is None:
        raise nc.unsupported(f"cast to element type {target} is not supported by hetrt")
    return [nc.add1(CastParams(to=dt), [x])]


@converter("Cast")
def cast(nc):
    to = nc.attr("to")
    target = numpy_dtype_of(int(to)) if to is not None else None
    if target is None or target.kind not in "biuf":
        raise nc.unsupported(f"cast to element type {to} is not supported by hetrt")
    return _cast(nc, nc.input(0), target)


@converter("CastLike")
def cast_like(nc):
    return _cast(nc, nc.input(0), np.dtype(nc.np_dtype(1)))


@converter("Identity")
def identity(nc):
    x = nc.input(0)
    return [x if x.is_const else nc.add1(IdentityParams(), [x])]


@converter("Dropout")
def dropout(nc):
    """Inference: Dropout is the identity; the mask output and training mode are rejected."""
    if nc.output_used(1):
        raise nc.unsupported("the mask output of Dropout is not supported (inference only)")
    if nc.has_input(2) and bool(np.asarray(nc.const(2, "training_mode")).reshape(-1)[0]):
        raise nc.unsupported("training_mode=true is not supported (inference only)")
    if int(nc.attr("is_test", 1)) == 0 and nc.opset < 7:
        raise nc.unsupported("is_test=0 (training) is not supported")
    x = nc.input(0)
    return [x if x.is_const else nc.add1(IdentityParams(), [x]), None]


_RESIZE_COORDS = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric")


@converter("Resize")
def resize(nc):
    x = nc.input(0)
    shape = nc.shape(x)
    rank = len(shape)
    mode = nc.attr("mode", "nearest")
    if mode not in ("nearest", "linear"):
        raise nc.unsupported(f"resize mode '{mode}' is not supported (hetrt: nearest, linear)")
    coord = nc.attr("coordinate_transformation_mode", "half_pixel")
    if coord not in _RESIZE_COORDS:
        raise nc.unsupported(f"coordinate_transformation_mode '{coord}' is not supported "
                             f"(hetrt: {', '.join(_RESIZE_COORDS)})")
    if int(nc.attr("antialias", 0)) and mode != "nearest":
        raise nc.unsupported("antialias=1 is not supported")
    policy = nc.attr("keep_aspect_ratio_policy", "stretch")
    if policy != "stretch":
        raise nc.unsupported(f"keep_aspect_ratio_policy '{policy}' is not supported (hetrt: stretch)")
    nearest_mode = nc.attr("nearest_mode", "round_prefer_floor")
    if nearest_mode not in ResizeParams.NEAREST_MODES:
        raise nc.unsupported(f"nearest_mode '{nearest_mode}' is not supported")
    axes = nc.ints("axes")
    axes = list(range(rank)) if axes is None else _norm_axes(nc, list(axes), rank)
    scales_in = nc.const(2, "scales") if nc.has_input(2) else None
    sizes_in = nc.const(3, "sizes") if nc.has_input(3) else None
    scales = None
    if sizes_in is not None and np.asarray(sizes_in).size:
        sizes = _int_list(sizes_in)
        if len(sizes) != len(axes):
            raise nc.error(f"sizes {sizes} must have {len(axes)} values")
        out = list(shape)
        for a, s in zip(axes, sizes):
            out[a] = s
    elif scales_in is not None and np.asarray(scales_in).size:
        sc = [float(s) for s in np.asarray(scales_in).reshape(-1)]
        if len(sc) != len(axes):
            raise nc.error(f"scales {sc} must have {len(axes)} values")
        full = [1.0] * rank
        for a, s in zip(axes, sc):
            if s <= 0:
                raise nc.error(f"scale {s} must be positive")
            full[a] = s
        out = [int(math.floor(d * s)) for d, s in zip(shape, full)]
        scales = tuple(full)
    else:
        raise nc.error("one of scales or sizes must be given")
    params = ResizeParams(output_shape=tuple(out), mode=ResizeMode(mode), coordinate_transformation=coord,
                          nearest_mode=nearest_mode, scales=scales)
    return [nc.add1(params, [x])]


@converter("Tile")
def tile(nc):
    """Constant input: folded. Run-time input: one concatenation per repeated axis."""
    x = nc.input(0)
    repeats = _int_list(nc.const(1, "repeats"))
    if len(repeats) != nc.rank(x) or any(r < 0 for r in repeats):
        raise nc.error(f"repeats {repeats} must be {nc.rank(x)} non-negative values")
    if x.is_const:
        return [Ref(const=np.tile(x.const, repeats))]
    if 0 in repeats:
        raise nc.unsupported(f"repeats {repeats} produce an empty tensor")
    todo = [a for a, r in enumerate(repeats) if r > 1]
    if not todo:
        return [nc.add1(IdentityParams(), [x])]
    v = x
    for k, a in enumerate(todo):
        v = nc.add1(ConcatenationParams(axis=a), [v] * repeats[a], final=k == len(todo) - 1)
    return [v]


@converter("Expand")
def expand(nc):
    """Constant input: folded. Run-time input: multiplied by ones of the broadcast shape."""
    x = nc.input(0)
    target = _int_list(nc.const(1, "shape"))
    try:
        out = tuple(int(d) for d in np.broadcast_shapes(nc.shape(x), tuple(target)))
    except ValueError:
        raise nc.error(f"shape {target} does not broadcast with input shape {nc.shape(x)}") from None
    if x.is_const:
        return [Ref(const=contiguous(np.broadcast_to(x.const, out)))]
    if out == nc.shape(x):
        return [nc.add1(IdentityParams(), [x])]
    dtype = nc.np_dtype(x)
    if dtype == np.bool_:
        raise nc.unsupported("Expand of a run-time bool tensor is not supported unless constant")
    ones = np.ones(out, dtype)
    return [nc.add1(ElementWiseParams(ElementWiseOp.PROD), [x, Ref(const=ones)])]
