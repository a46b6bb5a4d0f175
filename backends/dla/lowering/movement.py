"""Data movement: resize, and addressing-only concatenation, slice, split, shuffle, identity and
constant (views and assemblies; BDMA copies or 0/1 convolutions where addressing cannot reach)."""

from __future__ import annotations

import numpy as np

from dla_sim.ops import BdmaOp, ConvOp, CubeDesc, HwOp, RubikOp, SdpOp
from dla_sim.ops import Precision as HwPrecision
from engine.ir.errors import UnsupportedError
from engine.ir.network import Layer

from .. import int8, resize, shuffle
from ..cubes import atom_channels, cube_shape, make_cube
from .context import Assembly, Shape4, View, _Ctx


def lower_resize(ctx: _Ctx, layer: Layer) -> None:
    """Nearest upsampling by (fy, fx): ``fy*fx`` 1x1 depthwise copies (weight 1, identity converter)
    written side by side along C, then a RUBIK contract interleaves them (module ``resize``)."""
    x, out = layer.inputs[0], layer.outputs[0]
    xc = ctx.cube(x)
    fy, fx = resize.nearest_factors(layer.params, ctx.net.tensors[x].shape)
    if fy * fx == 1:
        _window(ctx, layer, x, out, (0, 0, 0, 0), cube_shape(ctx.net.tensors[out].shape))
        return
    c = xc.c
    atom = atom_channels(ctx.hp)
    if c % atom:
        raise UnsupportedError(f"nearest Resize of {c} channels: the copies are placed side by side along C, which "
                               f"needs C to be a multiple of the {atom}-channel atom")
    is_int = ctx.hp is HwPrecision.INT8
    ones = None
    if ctx.with_weights:
        ones = np.ones((c, 1, 1, 1), dtype=np.int8 if is_int else np.float16)
    wname = ctx.blob(f"{layer.name}.w", ones)
    identity = int8.PLACEHOLDER if is_int else None
    parts, ops = [], []
    for i in range(fy * fx):
        ph = f"{layer.name}.ph{i}"
        phc = ctx.new_cube(ph, (xc.n, c, xc.h, xc.w))
        acc = f"{layer.name}.acc{i}"
        ops.append(ConvOp(name=f"{layer.name}.copy{i}", input=xc, output=phc, kernel=(1, 1), groups=c,
                          weight_precision=ctx.hp, inputs=(x, wname), outputs=(acc,)))
        ops.append(SdpOp(name=f"{layer.name}.sdp{i}", input=phc, output=phc, source="flying",
                         out_requant=identity, inputs=(acc,), outputs=(ph,)))
        parts.append((ph, i * c))
    ext = f"{layer.name}.ext"
    extc = ctx.new_cube(ext, (xc.n, c * fy * fx, xc.h, xc.w))
    ctx.out.assemblies.append(Assembly(ext, tuple(parts)))
    oc = ctx.ir_out(out)
    ops.append(RubikOp(name=f"{layer.name}.contract", input=extc, output=oc, mode="contract", stride=(fy, fx),
                       inputs=(ext,), outputs=(out,)))
    ctx.emit(layer, *ops)

# ----------------------------------------------------------------------------------------------
# addressing: concatenation, slices, splits, reshapes


def _place(ctx: _Ctx, layer: Layer, t: str, dst: str, c0: int, copies: list[HwOp]) -> str:
    """The tensor to write into channel offset ``c0`` of ``dst``: ``t`` itself, or a BDMA copy of it
    when ``t`` already lives elsewhere (placed in another slot, or a window of another cube)."""
    c = ctx.cube(t)
    is_view = any(v.name == t for v in ctx.out.views)
    if t not in ctx.placed and not is_view and ctx.const_value(t) is None:
        ctx.placed.add(t)
        return t
    if c.n != 1:
        raise UnsupportedError(f"tensor '{t}' is needed in two places with batch {c.n}: the BDMA copy "
                               f"supports batch 1 only")
    name = f"{dst}.copy{c0}"
    yc = ctx.out.cubes[name] = CubeDesc(n=1, c=c.c, h=c.h, w=c.w, precision=c.precision, name=name)
    ab = c.atom_bytes
    copies.append(BdmaOp(name=name, src_memory="dram", dst_memory="dram", line_bytes=c.w * ab, lines=c.h,
                         surfaces=c.surfaces, src_line_stride=c.line_stride, dst_line_stride=yc.line_stride,
                         src_surface_stride=c.surface_stride, dst_surface_stride=yc.surface_stride,
                         inputs=(t,), outputs=(name,)))
    ctx.placed.add(name)
    return name


def lower_concatenation(ctx: _Ctx, layer: Layer) -> None:
    out = layer.outputs[0]
    shape = ctx.net.tensors[out].shape
    axis = layer.params.axis % len(shape)
    if axis != 1 or len(shape) not in (2, 4):
        raise UnsupportedError(f"concatenation on axis {axis}: the DLA concatenates channels only")
    if len(layer.inputs) < 2:
        raise UnsupportedError("concatenation of one input: the DLA needs at least two")
    atom = atom_channels(ctx.hp)
    offsets = np.cumsum([0] + [ctx.net.tensors[t].shape[1] for t in layer.inputs])[:-1]
    if len(shape) == 4 and any(int(c) % atom for c in offsets):
        _concat_by_placement(ctx, layer, out, [int(c) for c in offsets])
        return
    parts, copies, c0 = [], [], 0
    for t in layer.inputs:
        if c0 % atom:
            raise UnsupportedError(f"concatenation input '{t}' starts at channel {c0}, not a multiple of the "
                                   f"{atom}-channel {ctx.hp.value.upper()} atom: the DLA concatenates by "
                                   f"addressing whole 32-byte atoms")
        if ctx.cube(t).n != 1:
            raise UnsupportedError(f"concatenation with batch {ctx.cube(t).n}: addressing a channel slot of "
                                   f"a multi-image cube is not modelled")
        parts.append((_place(ctx, layer, t, out, c0, copies), c0))
        c0 += ctx.net.tensors[t].shape[1]
    ctx.ir_out(out)
    ctx.emit(layer, *copies)
    ctx.out.assemblies.append(Assembly(out, tuple(parts)))


def _matrix_conv(ctx: _Ctx, layer: Layer, name: str, x: str, out: str, rows: np.ndarray, k: int,
                 residual: str | None = None) -> None:
    """A 1x1 convolution whose weights are 0/1 (output channel ``j`` copies input channel ``rows[j]``;
    -1: none), plus ``residual`` added by the SDP: moves channels to any offset exactly (one product
    per output, INT8 through identity converters). The DLA's way to reach channels addressing cannot
    (a channel window or a concatenation slot off the 32-byte atom)."""
    xc = ctx.cube(x)
    is_int = ctx.hp is HwPrecision.INT8
    w = None
    if ctx.with_weights:
        w = np.zeros((k, xc.c, 1, 1), dtype=np.int8 if is_int else np.float16)
        sel = np.flatnonzero(rows >= 0)
        w[sel, rows[sel], 0, 0] = 1
    yc = ctx.out.cubes.get(out) or ctx.new_cube(out, (xc.n, k, xc.h, xc.w))
    wname = ctx.blob(f"{name}.w", w)
    acc = f"{name}.acc"
    ident = int8.PLACEHOLDER if is_int else None  # Requant scale 1, shift 0: the identity
    fields: dict = {}
    ins: tuple[str, ...] = (acc,)
    if residual is not None:
        fields.update(eltwise="add", eltwise_input=ctx.out.cubes[residual], in_requant=ident)
        ins = (acc, residual)
    ctx.emit(layer, ConvOp(name=name, input=xc, output=yc, kernel=(1, 1), weight_precision=ctx.hp,
                           inputs=(x, wname), outputs=(acc,)),
             SdpOp(name=f"{name}.sdp", input=yc, output=yc, source="flying", out_requant=ident, inputs=ins,
                   outputs=(out,), **fields))


def _concat_by_placement(ctx: _Ctx, layer: Layer, out: str, offsets: list[int]) -> None:
    """A concatenation whose slots are off the atom: each input placed at its offset by a 0/1 1x1
    convolution, the partial results summed by the SDP (zeros elsewhere: exact)."""
    total = ctx.net.tensors[out].shape[1]
    prev = None
    for i, (t, c0) in enumerate(zip(layer.inputs, offsets)):
        c = ctx.net.tensors[t].shape[1]
        rows = np.full(total, -1)
        rows[c0:c0 + c] = np.arange(c)
        last = i == len(layer.inputs) - 1
        dst = out if last else f"{out}.part{i}"
        if last:
            ctx.ir_out(out)
        _matrix_conv(ctx, layer, f"{layer.name}.place{i}", t, dst, rows, total, prev)
        prev = dst


def _window(ctx: _Ctx, layer: Layer, x: str, out: str, start: Shape4, shape: Shape4) -> None:
    xc = ctx.cube(x)
    atom = atom_channels(ctx.hp)
    if start[0] != 0 or shape[0] != xc.n:
        raise UnsupportedError("slicing the batch dimension: the DLA slices C, H and W only")
    if start[1] % atom and tuple(start[2:]) == (0, 0) and tuple(shape[2:]) == (xc.h, xc.w):
        rows = np.arange(start[1], start[1] + shape[1])
        ctx.out.cubes[out] = make_cube(out, tuple(shape), ctx.hp)
        _matrix_conv(ctx, layer, f"{layer.name}.{out}.select", x, out, rows, shape[1])
        return
    if start[1] % atom:
        raise UnsupportedError(f"channel window starting at {start[1]}: not a multiple of the {atom}-channel "
                               f"{ctx.hp.value.upper()} atom, so it is not addressable")
    ctx.out.cubes[out] = CubeDesc(n=shape[0], c=shape[1], h=shape[2], w=shape[3], precision=ctx.hp, name=out,
                                  line_stride_bytes=xc.line_stride, surface_stride_bytes=xc.surface_stride)
    ctx.out.views.append(View(out, x, start, shape))


def lower_slice(ctx: _Ctx, layer: Layer) -> None:
    p = layer.params
    x = layer.inputs[0]
    shape = ctx.net.tensors[x].shape
    if len(shape) != 4 or any(s != 1 for s in p.step):
        raise UnsupportedError(f"Slice of a rank-{len(shape)} tensor with steps {tuple(p.step)}: the DLA slices "
                               f"static 4-D tensors with stride 1")
    _window(ctx, layer, x, layer.outputs[0], tuple(p.start), tuple(p.size))


def lower_split(ctx: _Ctx, layer: Layer) -> None:
    p = layer.params
    x = layer.inputs[0]
    shape = ctx.net.tensors[x].shape
    if len(shape) != 4 or p.axis % 4 != 1:
        raise UnsupportedError(f"Split on axis {p.axis}: the DLA splits 4-D tensors along channels only")
    c0 = 0
    for out, size in zip(layer.outputs, p.sizes):
        _window(ctx, layer, x, out, (0, c0, 0, 0), (shape[0], size, shape[2], shape[3]))
        c0 += size


def _order_preserving(shape: tuple[int, ...], perm: tuple[int, ...] | None) -> bool:
    if perm is None:
        return True
    moved = [d for d in perm if shape[d] != 1]
    return moved == sorted(moved)


def _lower_channel_shuffle(ctx: _Ctx, layer: Layer, pair) -> None:
    """One half of a channel-shuffle pair (module ``shuffle``): the first writes the permuted channels
    into a 4-D cube held under the rank-5 tensor's name, the second is a view of that cube."""
    first, second, perm = pair
    if first.name not in ctx.names or second.name not in ctx.names:
        raise UnsupportedError(f"channel shuffle '{first.name}' -> '{second.name}' passes a rank-5 tensor, which "
                               f"the DLA holds only inside one partition: place both layers on the same core")
    if layer is first:
        x, mid = layer.inputs[0], layer.outputs[0]
        xc = ctx.cube(x)
        ctx.out.cubes[mid] = make_cube(mid, xc.shape, ctx.hp)
        _matrix_conv(ctx, layer, f"{layer.name}.permute", x, mid, np.asarray(perm), xc.c)
        return
    mid, out = layer.inputs[0], layer.outputs[0]
    mc = ctx.out.cubes[mid]
    ctx.out.cubes[out] = CubeDesc(n=mc.n, c=mc.c, h=mc.h, w=mc.w, precision=mc.precision, name=out,
                                  line_stride_bytes=mc.line_stride, surface_stride_bytes=mc.surface_stride)
    ctx.out.views.append(View(out, mid, (0, 0, 0, 0), mc.shape))


def lower_shuffle(ctx: _Ctx, layer: Layer) -> None:
    p = layer.params
    pair = shuffle.channel_shuffle_pair(ctx.network, layer)
    if pair is not None:
        _lower_channel_shuffle(ctx, layer, pair)
        return
    x, out = layer.inputs[0], layer.outputs[0]
    si, so = ctx.net.tensors[x].shape, ctx.net.tensors[out].shape
    mid = tuple(si[d] for d in p.first_perm) if p.first_perm is not None else si
    mid = tuple(p.reshape) if p.reshape is not None else mid
    same = _order_preserving(si, p.first_perm) and _order_preserving(mid, p.second_perm)
    try:
        same = same and cube_shape(si) == cube_shape(so)
    except UnsupportedError:
        same = False
    if not same:
        raise UnsupportedError(f"Shuffle {si} → {so}: changes the element order of the DLA's channel-"
                               f"interleaved layout; RUBIK only contracts, splits and merges planes")
    _window(ctx, layer, x, out, (0, 0, 0, 0), cube_shape(so))


def lower_identity(ctx: _Ctx, layer: Layer) -> None:
    x, out = layer.inputs[0], layer.outputs[0]
    _window(ctx, layer, x, out, (0, 0, 0, 0), cube_shape(ctx.net.tensors[out].shape))


def lower_constant(ctx: _Ctx, layer: Layer) -> None:
    """Constants emit nothing: their consumers fold them into weights or operands."""
    t = layer.outputs[0]
    if ctx.needed_outside(t):
        raise UnsupportedError(f"constant '{t}' is also read outside the DLA partition: let the GPU own it")
