"""Caffe layers without weights: Input, activations, Power, Eltwise, Concat, Slice, Split, Softmax,
Dropout, Flatten and Reshape."""

from __future__ import annotations

import math

import numpy as np

from engine.caffe_parser.converter import LayerContext, converter
from engine.ir.layers import (
    ActivationParams,
    ActivationSpec,
    ActivationType,
    ConcatenationParams,
    ElementWiseOp,
    ElementWiseParams,
    IdentityParams,
    ScaleMode,
    ScaleParams,
    ShuffleParams,
    SoftMaxParams,
    SplitParams,
)


def _axis(lc: LayerContext, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise lc.error(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


@converter("Input")
def input_layer(lc: LayerContext) -> None:
    shapes = [tuple(int(d) for d in s.dim) for s in lc.layer.input_param.shape]
    tops = list(lc.layer.top)
    if not shapes:
        raise lc.error("input_param gives no shape; hetrt needs static input shapes")
    if len(shapes) not in (1, len(tops)):
        raise lc.error(f"input_param gives {len(shapes)} shapes for {len(tops)} tops (give 1 or one per top)")
    for i, top in enumerate(tops):
        lc.conv.add_input(top, shapes[0] if len(shapes) == 1 else shapes[i], lc.where)


@converter("ReLU")
def relu(lc: LayerContext) -> None:
    (x,) = lc.bottoms(1)
    slope = float(lc.layer.relu_param.negative_slope)
    spec = ActivationSpec(ActivationType.LEAKY_RELU, slope) if slope else ActivationSpec(ActivationType.RELU)
    lc.add1(ActivationParams(spec), [x])


@converter("Sigmoid")
def sigmoid(lc: LayerContext) -> None:
    (x,) = lc.bottoms(1)
    lc.add1(ActivationParams(ActivationSpec(ActivationType.SIGMOID)), [x])


@converter("TanH")
def tanh(lc: LayerContext) -> None:
    (x,) = lc.bottoms(1)
    lc.add1(ActivationParams(ActivationSpec(ActivationType.TANH)), [x])


@converter("Power")
def power(lc: LayerContext) -> None:
    """y = (shift + scale * x) ** power: one uniform Scale layer."""
    (x,) = lc.bottoms(1)
    p = lc.layer.power_param
    weights = {"scale": np.array([p.scale], np.float32), "shift": np.array([p.shift], np.float32)}
    if p.power != 1.0:
        weights["power"] = np.array([p.power], np.float32)
    lc.add1(ScaleParams(ScaleMode.UNIFORM, channel_axis=0), [x], weights)


@converter("Eltwise")
def eltwise(lc: LayerContext) -> None:
    """SUM (each input times its coefficient), PROD or MAX over two or more equally shaped bottoms."""
    xs = lc.bottoms(at_least=2)
    p = lc.layer.eltwise_param
    shapes = {lc.shape(x) for x in xs}
    if len(shapes) != 1:
        raise lc.error(f"Eltwise bottoms must have one shape, got {sorted(shapes)}")
    op = {0: ElementWiseOp.PROD, 1: ElementWiseOp.SUM, 2: ElementWiseOp.MAX}[p.operation]
    coeff = [float(c) for c in p.coeff]
    if coeff and op is not ElementWiseOp.SUM:
        raise lc.error("coeff applies to the SUM operation only")
    if coeff and len(coeff) != len(xs):
        raise lc.error(f"eltwise_param gives {len(coeff)} coefficients for {len(xs)} bottoms")
    terms = list(xs)
    for i, c in enumerate(coeff):
        if c != 1.0:
            w = {"scale": np.array([c], np.float32)}
            terms[i] = lc.add1(ScaleParams(ScaleMode.UNIFORM, channel_axis=0), [terms[i]], w, final=False)
    acc = terms[0]
    for i, t in enumerate(terms[1:], start=2):
        acc = lc.add1(ElementWiseParams(op), [acc, t], final=i == len(terms))


@converter("Concat")
def concat(lc: LayerContext) -> None:
    xs = lc.bottoms(at_least=1)
    p = lc.layer.concat_param
    axis = p.axis if p.HasField("axis") or not p.HasField("concat_dim") else int(p.concat_dim)
    axis = _axis(lc, axis, len(lc.shape(xs[0])))
    if len(xs) == 1:
        lc.add1(IdentityParams(), xs)
        return
    lc.add1(ConcatenationParams(axis=axis), xs)


@converter("Slice")
def slice_layer(lc: LayerContext) -> None:
    """Split along ``axis`` at ``slice_point``s, or into equal parts (one per top) when none are given."""
    (x,) = lc.bottoms(1)
    p = lc.layer.slice_param
    shape = lc.shape(x)
    axis = p.axis if p.HasField("axis") or not p.HasField("slice_dim") else int(p.slice_dim)
    axis = _axis(lc, axis, len(shape))
    n, tops = shape[axis], len(lc.layer.top)
    points = [int(v) for v in p.slice_point]
    if points:
        if len(points) != tops - 1:
            raise lc.error(f"{len(points)} slice points for {tops} tops (need {tops - 1})")
        bounds = [0, *points, n]
        if any(b <= a for a, b in zip(bounds, bounds[1:])):
            raise lc.error(f"slice points {points} must increase strictly inside (0, {n})")
        sizes = tuple(b - a for a, b in zip(bounds, bounds[1:]))
    else:
        if n % tops:
            raise lc.error(f"axis {axis} of size {n} does not split into {tops} equal parts")
        sizes = (n // tops,) * tops
    lc.add(SplitParams(axis=axis, sizes=sizes), [x])


@converter("Split")
def split(lc: LayerContext) -> None:
    """Caffe's fan-out layer: every top is the bottom."""
    (x,) = lc.bottoms(1)
    for top in lc.layer.top:
        lc.add(IdentityParams(), [x], tops=[top])


@converter("Softmax")
def softmax(lc: LayerContext) -> None:
    (x,) = lc.bottoms(1)
    lc.add1(SoftMaxParams(axis=_axis(lc, lc.layer.softmax_param.axis, len(lc.shape(x)))), [x])


@converter("Dropout")
def dropout(lc: LayerContext) -> None:
    """Identity at inference (Caffe scales during training)."""
    (x,) = lc.bottoms(1)
    lc.add1(IdentityParams(), [x])


@converter("Flatten")
def flatten(lc: LayerContext) -> None:
    (x,) = lc.bottoms(1)
    p = lc.layer.flatten_param
    shape = lc.shape(x)
    a, b = _axis(lc, p.axis, len(shape)), _axis(lc, p.end_axis, len(shape))
    if b < a:
        raise lc.error(f"end_axis {p.end_axis} comes before axis {p.axis}")
    lc.add1(ShuffleParams(reshape=(*shape[:a], math.prod(shape[a:b + 1]), *shape[b + 1:])), [x])


@converter("Reshape")
def reshape(lc: LayerContext) -> None:
    """Caffe's reshape: 0 copies the input dim, one -1 is inferred; ``axis``/``num_axes`` pick the
    part of the input shape that is replaced."""
    (x,) = lc.bottoms(1)
    p = lc.layer.reshape_param
    shape = lc.shape(x)
    rank = len(shape)
    start = p.axis if p.axis >= 0 else rank + p.axis + 1
    if not 0 <= start <= rank:
        raise lc.error(f"axis {p.axis} is out of range for input shape {shape}")
    end = rank if p.num_axes == -1 else start + p.num_axes
    if p.num_axes < -1 or end > rank:
        raise lc.error(f"num_axes {p.num_axes} from axis {start} leaves input shape {shape}")
    dims = [int(d) for d in p.shape.dim]
    new = []
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= rank:
                raise lc.error(f"dim {i} is 0 (copy) but the input has no axis {start + i}")
            d = shape[start + i]
        new.append(d)
    if new.count(-1) > 1 or any(d < -1 for d in new):
        raise lc.error(f"shape {dims} may hold one -1 and no other negative dims")
    out = [*shape[:start], *new, *shape[end:]]
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        total = math.prod(shape)
        if known == 0 or total % known:
            raise lc.error(f"cannot infer the -1 dim of {dims} from input shape {shape}")
        out[out.index(-1)] = total // known
    if math.prod(out) != math.prod(shape):
        raise lc.error(f"cannot reshape {shape} ({math.prod(shape)} values) to {tuple(out)}")
    lc.add1(ShuffleParams(reshape=tuple(out)), [x])
