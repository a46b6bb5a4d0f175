"""GPU lowering of data movement: shuffle (transpose/reshape), slice, split, concatenation, padding,
gather and resize.

A shuffle that moves no byte (a reshape of a linear tensor, a transpose between an NHWC slot and
the linear (N, H, W, C) tensor when C % 8 = 0) becomes an alias of its input's slot, with no
launch. A shuffle or a gather at one constant index that is a strided view of its input is
composed with the views before it (``views.View``) and copies straight from the first
materialized tensor of the chain; the copies in between then have no reader and are dropped.
Each other layer becomes one generated map kernel that computes, per output element, the
offset of the element it copies (``RAW`` loads keep non-float types bit-exact); resize blends up to 2^d such
loads with per-axis tables of source indices and weights uploaded as constants.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from backends.gpu.kernels import gen
from backends.gpu.lowering.slots import FLOAT, Dtypes, Slot, input_dtypes
from backends.gpu.lowering.views import Digits, View, root_digits
from engine.ir.layers import LayerKind, PaddingMode
from engine.ir.network import Layer, Network
from engine.ir.resize_coords import axis_scales, is_identity, linear_taps, nearest_indices, source_coordinates

if TYPE_CHECKING:
    from backends.gpu.lowering.lowerer import Lowerer


def check_movement(layer: Layer, network: Network, dtypes: Dtypes) -> str | None:
    """Data movement copies raw elements: every input (and a constant's value) of a type kernels can hold."""
    ins = input_dtypes(layer, dtypes)
    if any(d not in gen.CTYPE for d in ins):
        return f"{layer.kind.value} on {ins} has no GPU kernel"
    if layer.kind is LayerKind.CONSTANT and layer.weights["value"].dtype.name not in gen.CTYPE:
        return "constant of an unsupported dtype"
    return None


def check_resize(layer: Layer, network: Network, dtypes: Dtypes) -> str | None:
    """Float inputs, and positive scales (the reference reports other scales as an error)."""
    ins = input_dtypes(layer, dtypes)
    if any(d not in FLOAT for d in ins):
        return f"{layer.kind.value} on {ins} tensors has no GPU kernel"
    p = layer.params
    scales = axis_scales(p.scales, p.output_shape, network.tensors[layer.inputs[0]].shape)
    if any(sc <= 0 for sc in scales):
        return f"resize scales {[float(sc) for sc in scales]} must be positive"
    return None


def _identity(perm: tuple[int, ...] | None) -> bool:
    return perm is None or tuple(perm) == tuple(range(len(perm)))


def alias_layout(lw: Lowerer, layer: Layer, s: Slot) -> str | None:
    """The layout in which a shuffle's output is its input slot's bytes as they are (None: a copy).

    A reshape alone of a linear slot; a transpose alone whose permuted input strides are the
    output's strides in ``linear`` or ``nhwc`` (size-1 dims aside): (0, 2, 3, 1) of an NHWC slot
    with C % 8 = 0 is the linear (N, H, W, C) tensor, (0, 3, 1, 2) of a linear fp16 (N, H, W, C)
    tensor with C % 8 = 0 the NHWC slot of (N, C, H, W). Never a staged input or a constant (a
    segment keeps at least one launch), never a change of dtype.
    """
    p = layer.params
    out = layer.outputs[0]
    oshape = lw.net.tensors[out].shape
    if (s.const is not None or s.name in lw.inputs or lw.dtypes[out] != s.dtype or s.layout not in ("linear", "nhwc")
            or (s.layout == "nhwc" and s.phys_shape[3] != s.shape[1])):
        return None
    if not _identity(p.second_perm):
        return None
    if _identity(p.first_perm):
        return "linear" if s.layout == "linear" else None
    tshape = tuple(s.shape[i] for i in p.first_perm)
    if p.reshape is not None and tuple(p.reshape) != tshape:
        return None
    xst = [s.strides[i] for i in p.first_perm]
    for layout in ("linear", "nhwc"):
        if layout == "nhwc" and (len(oshape) != 4 or s.dtype != "float16" or oshape[1] % 8):
            continue
        ost = Slot("", oshape, s.dtype, layout).strides
        if all(a == b for a, b, n in zip(xst, ost, oshape) if n > 1):
            return layout
    return None


def chain_view(lw: Lowerer, tensor: str) -> View:
    """``tensor`` as a view of the first materialized slot of its chain of movement (possibly
    composite: only a chain goes on through such a view)."""
    return lw.views.get(tensor) or View.of(lw.slots[tensor])


def input_view(lw: Lowerer, tensor: str) -> View:
    """``tensor`` as a strided view a kernel can read: its chain's when that is affine, else its own slot."""
    view = lw.views.get(tensor)
    return view if view is not None and view.affine else View.of(lw.slots[tensor])


def view_operand(lw: Lowerer, tensor: str, out_shape: tuple[int, ...], fp16: bool = False) -> tuple[str, gen.Operand]:
    """``tensor`` as a map kernel's operand over ``out_shape`` (broadcast), read through ``input_view``:
    from its chain's first slot, so that the copies in between may go; ``fp16``: an FP16 layer
    reading an fp32 slot rounds on load."""
    v = input_view(lw, tensor)
    root = lw.slots[v.root]
    strides = gen.broadcast_strides(v.shape, v.strides, out_shape)
    return root.name, gen.Operand(root.operand(None, fp16).dtype, strides, v.base)


def concat_layout(lw: Lowerer, concat: Layer) -> str:
    """NHWC for an fp16 concatenation along C whose inputs are NHWC slots or views of them (the
    parts of a merged 1x1 convolution's split), else linear: the readers of such a concatenation
    (convolutions, pools) want NHWC, and writing it linear would cost them a second pass."""
    out = concat.outputs[0]
    shape = lw.net.tensors[out].shape
    if len(shape) != 4 or concat.params.axis % 4 != 1 or lw.dtypes[out] != "float16":
        return "linear"
    roots = [lw.slots[input_view(lw, t).root] for t in concat.inputs]
    return "nhwc" if all(r.layout == "nhwc" for r in roots) else "linear"


def concat_select(lw: Lowerer, concat: Layer, out_shape: tuple[int, ...], fp16: bool, first_index: int,
                  next_index: int, digits: Digits | None = None) -> tuple[list[tuple[str, gen.Operand]], str]:
    """The operands of a concatenation's inputs in a map kernel over ``out_shape``, the first loaded
    as X{first_index} and the others as X{next_index}, ..., and the C expression that selects the
    element of output coordinate l. ``digits``: how the kernel's output walks the concatenation
    (None: as it is, ``out_shape`` being its shape). Each input is read through its view and
    based at minus its offset along the axis, so that its default offset at l is its own element's."""
    shape = lw.net.tensors[concat.outputs[0]].shape
    ax = concat.params.axis % len(shape)
    digits = digits or Digits.identity(len(shape))
    operands, at, picks = [], 0, []
    select_dims = tuple(j for j, (d, _) in enumerate(digits.dims) if d == ax)
    coordinate = digits.coordinate(ax)
    for i, t in enumerate(concat.inputs):
        v = input_view(lw, t)
        root = lw.slots[v.root]
        st = [0 if n == 1 else s for n, s in zip(v.shape, v.strides)]
        strides = tuple(k * st[d] if d >= 0 else 0 for d, k in digits.dims)
        base = v.base + sum(b * s for b, s in zip(digits.base, st)) - at * st[ax]
        end = at + lw.net.tensors[t].shape[ax]
        operands.append((root.name, gen.Operand(root.operand(None, fp16).dtype, strides, base, select_dims,
                                                (coordinate, at, end))))
        at = end
        picks.append((at, f"X{first_index if i == 0 else next_index + i - 1}"))
    expr = picks[-1][1]
    for end, x in reversed(picks[:-1]):
        expr = f"({coordinate} < {end} ? {x} : {expr})"
    return operands, expr


def concat_copy(lw: Lowerer, label: str, out: Slot, concat: Layer, digits: Digits | None = None) -> None:
    """One copy into ``out`` from the concatenation's inputs (``concat_select``; ``digits``: how
    ``out`` walks the concatenation, None for the concatenation itself)."""
    operands, expr = concat_select(lw, concat, out.shape, False, 0, 1, digits)
    lw.emit_map(label, out, operands, f"RAW yr = {expr};",
                span=max([out.elements] + [lw.slots[name].elements for name, _ in operands]))


def copy_view(lw: Lowerer, label: str, tensor: str, view: View) -> None:
    """``tensor`` as one copy of ``view`` (remembered for the movement layers after it)."""
    out = lw.new_slot(tensor)
    root = lw.slots[view.root]
    if out.elements == 0 or root.dtype != out.dtype:
        raise ValueError(f"{label}: no view copy from {root.dtype} to {out.dtype}")
    lw.views[out.name] = view
    if view.affine:
        operand = gen.Operand(root.dtype, view.strides, view.base)
        body = "RAW yr = X0;"
    else:  # a composite dim: its factors' digits from the output coordinate
        operand = gen.Operand(root.dtype, (0,) * len(view.shape))
        body = f"RAW yr = LD0({view.offset_expr([f'l{d}' for d in range(len(view.shape))])});"
    lw.emit_map(label, out, [(root.name, operand)], body, span=max(root.elements, out.elements))


def viewable(lw: Lowerer, x: View, out: str) -> bool:
    """Whether tensor ``out`` may be a view of ``x``: a non-empty arena slot of the output's dtype."""
    root = lw.slots[x.root]
    return root.const is None and root.dtype == lw.dtypes[out] and 0 not in x.shape


def _shuffled(x: View, layer: Layer) -> View | None:
    p = layer.params
    v: View | None = x.permute(p.first_perm)
    if p.reshape is not None:
        v = v.reshape(p.reshape)
    return None if v is None else v.permute(p.second_perm)


def shuffle_view(lw: Lowerer, layer: Layer) -> View | None:
    """The shuffle's output as a view of its chain's first slot, or None."""
    x = chain_view(lw, layer.inputs[0])
    return _shuffled(x, layer) if viewable(lw, x, layer.outputs[0]) else None


def shuffle_digits(layer: Layer, shape: tuple[int, ...]) -> Digits | None:
    """How a shuffle's output walks its input of ``shape`` (row-major) when every output dim stays
    within one input dim (a transpose, a split of a dim, ShuffleNet's channel shuffle), else None."""
    v = _shuffled(View("", tuple(shape), gen.row_major(shape)), layer)
    return None if v is None or 0 in shape else root_digits(v, shape)


def lower_shuffle(lw: Lowerer, layer: Layer) -> None:
    p = layer.params
    concat = lw.concat_reads.get(layer.inputs[0])
    if concat is not None:  # one copy from the concatenation's inputs (``concat_reads``)
        concat_copy(lw, layer.name, lw.new_slot(layer.outputs[0]), concat,
                    shuffle_digits(layer, lw.net.tensors[layer.inputs[0]].shape))
        return
    s = lw.slots[layer.inputs[0]]
    layout = alias_layout(lw, layer, s)
    if layout is not None:
        lw.alias_slot(layer.outputs[0], layout, s)
        if layer.inputs[0] in lw.views:  # the chain of views goes on through the alias
            view = shuffle_view(lw, layer)
            if view is not None:
                lw.views[layer.outputs[0]] = view
        return
    view = shuffle_view(lw, layer)
    if view is not None:
        copy_view(lw, layer.name, layer.outputs[0], view)
        return
    out = lw.new_slot(layer.outputs[0])
    x = input_view(lw, layer.inputs[0])  # the generic copy reads its chain's first slot too
    s = lw.slots[x.root]
    xshape = x.shape
    tshape = tuple(xshape[i] for i in p.first_perm) if p.first_perm is not None else xshape
    rshape = tuple(p.reshape) if p.reshape is not None else tshape
    oshape = out.shape
    ro = len(oshape)
    lines = []
    # reshape-space coordinates r_j from output coordinates (undo second_perm)
    rc = [""] * len(rshape)
    for i in range(ro):
        rc[p.second_perm[i] if p.second_perm is not None else i] = f"l{i}"
    if p.reshape is not None:
        rm = gen.row_major(rshape)
        lin = " + ".join(f"(IT){c} * {m}" for c, m in zip(rc, rm)) or "0"
        lines.append(f"IT q = {lin};")
        tc = [f"t{j}" for j in range(len(tshape))]
        for j in range(len(tshape) - 1, -1, -1):
            lines.append(f"const IT {tc[j]} = q % {tshape[j]}; q /= {tshape[j]};" if j
                         else f"const IT {tc[j]} = q;")
    else:
        tc = rc
    xc = [""] * len(xshape)
    for j in range(len(tshape)):
        xc[p.first_perm[j] if p.first_perm is not None else j] = tc[j]
    off = " + ".join([str(x.base)] * bool(x.base) + [f"(IT){c} * {st}" for c, st in zip(xc, x.strides)]) or "0"
    lines.append(f"RAW yr = LD0({off});")
    lw.emit_map(layer.name, out, [(s.name, gen.Operand(s.dtype, (0,) * ro))], " ".join(lines))


def _slice(lw: Lowerer, label: str, s: Slot, out: Slot, start, step) -> None:
    strides = tuple(st * k for st, k in zip(s.strides, step))
    base = sum(a * st for a, st in zip(start, s.strides))
    neg = any(v < 0 for v in strides)
    lw.emit_map(label, out, [(s.name, gen.Operand(s.dtype, strides, base))], "RAW yr = X0;",
                span=2**31 if neg else 0)


def _slice_of(lw: Lowerer, label: str, x: View, src: Slot, tensor: str, start, step) -> None:
    """``tensor`` as the elements start + i * step of ``src`` (whose chain's view is ``x``): a
    strided view of the chain's first slot with one copy, which is dropped when every reader
    reads the view instead (element-wise layers, concatenations, later movement, NHWC
    conversions), or else a copy of its own."""
    shape = lw.net.tensors[tensor].shape
    view = x.slice(start, step, shape) if 0 not in shape and viewable(lw, x, tensor) else None
    if view is not None:
        copy_view(lw, label, tensor, view)
        return
    out = lw.new_slot(tensor)
    if out.elements:
        _slice(lw, label, src, out, start, step)


def lower_slice(lw: Lowerer, layer: Layer) -> None:
    p = layer.params
    x = input_view(lw, layer.inputs[0])  # a composite chain: from the input's own slot
    _slice_of(lw, layer.name, x, lw.slots[layer.inputs[0]], layer.outputs[0], p.start, p.step)


def lower_split(lw: Lowerer, layer: Layer) -> None:
    """Each output is a slice of the input along the axis (``_slice_of``): a horizontally merged
    1x1 convolution's split then costs only the NHWC conversions in front of the convolutions
    that read its parts."""
    p = layer.params
    s = lw.slots[layer.inputs[0]]
    ax = p.axis % len(s.shape)
    x = input_view(lw, layer.inputs[0])
    at = 0
    for t, size in zip(layer.outputs, p.sizes):
        start = [0] * len(s.shape)
        start[ax] = at
        at += size
        _slice_of(lw, f"{layer.name}_{t}", x, s, t, start, [1] * len(s.shape))


def lower_concatenation(lw: Lowerer, layer: Layer) -> None:
    if layer.outputs[0] in lw.concat_reads:
        return  # its element-wise reader selects from the inputs (``concat_reads``)
    concat_copy(lw, layer.name, lw.new_slot(layer.outputs[0], concat_layout(lw, layer)), layer)


def lower_padding(lw: Lowerer, layer: Layer) -> None:
    p = layer.params
    s = lw.slots[layer.inputs[0]]
    out = lw.new_slot(layer.outputs[0], spatial_layout(lw, s, layer.outputs[0]))
    mode = PaddingMode(p.mode)
    lines = ["bool ok = true;"]
    xc = []
    for d, (a, b, n) in enumerate(zip(p.pre, p.post, s.shape)):
        crop = max(0, -a)
        cd = n - crop - max(0, -b)
        lines.append(f"long long c{d} = (long long)l{d} - {max(0, a)};")
        if mode is PaddingMode.CONSTANT:
            lines.append(f"ok = ok && c{d} >= 0 && c{d} < {cd};")
        elif mode is PaddingMode.REFLECT:
            lines.append(f"if (c{d} < 0) c{d} = -c{d}; if (c{d} >= {cd}) c{d} = {2 * (cd - 1)} - c{d};")
        elif mode is PaddingMode.EDGE:
            lines.append(f"c{d} = c{d} < 0 ? 0 : (c{d} >= {cd} ? {cd - 1} : c{d});")
        else:
            lines.append(f"c{d} = ((c{d} % {cd}) + {cd}) % {cd};")
        xc.append(f"(c{d} + {crop})")
    off = " + ".join(f"{c} * {st}LL" for c, st in zip(xc, s.strides)) or "0"
    if gen.can_load_float(s.dtype) and s.dtype != out.dtype:
        val = f"{float(p.value)!r}f"  # the kernel copies through float
    elif gen.can_load_float(s.dtype):
        val = f"{gen.store(s.dtype, f'{float(p.value)!r}f')}"
    else:
        val = f"({gen.CTYPE[s.dtype]})({int(p.value)})"
    lines.append(f"RAW yr = ok ? LD0({off}) : {val};")
    lw.emit_map(layer.name, out, [(s.name, gen.Operand(s.dtype, (0,) * len(s.shape)))], " ".join(lines),
                span=2**31)


def lower_gather(lw: Lowerer, layer: Layer) -> None:
    s = lw.slots[layer.inputs[0]]
    ax = layer.params.axis % len(s.shape)
    idx = layer.weights["indices"].astype(np.int64)
    idx = np.where(idx < 0, idx + s.shape[ax], idx).astype(np.int32)
    x = chain_view(lw, layer.inputs[0])
    if idx.ndim == 0 and 0 <= int(idx) < s.shape[ax] and viewable(lw, x, layer.outputs[0]):
        copy_view(lw, layer.name, layer.outputs[0], x.take(ax, int(idx)))  # one index: a strided view of the input
        return
    out = lw.new_slot(layer.outputs[0])
    ik = lw.const(f"{layer.name}/indices", idx.reshape(-1) if idx.ndim else idx.reshape(1), False)
    nd = idx.ndim
    im = gen.row_major(idx.shape)
    flat = " + ".join(f"(IT)l{ax + j} * {m}" for j, m in enumerate(im)) or "0"
    xc = [f"(IT)l{d}" for d in range(ax)] + ["(IT)x1[" + flat + "]"]
    xc += [f"(IT)l{d - 1 + nd}" for d in range(ax + 1, len(s.shape))]
    off = " + ".join(f"{c} * {st}" for c, st in zip(xc, s.strides)) or "0"
    lw.emit_map(layer.name, out, [(s.name, gen.Operand(s.dtype, (0,) * len(out.shape))),
                                  (ik.name, gen.Operand("int32", (0,) * len(out.shape)))], f"RAW yr = LD0({off});")


def spatial_layout(lw: Lowerer, s: Slot, out: str) -> str:
    """NHWC for the fp16 output of a resize or padding that keeps the channels of an NHWC input
    (an upsampling in front of a concatenation and a convolution, a zero padding in front of a
    convolution): written row-major, its readers would convert it back; else linear, as a segment's
    output leaves (a segmentation network's final upsampling)."""
    shape = lw.net.tensors[out].shape
    keeps = (s.layout == "nhwc" and len(shape) == 4 and shape[1] == s.shape[1] and lw.dtypes[out] == "float16"
             and out not in lw.want and out not in lw.net.outputs)
    return "nhwc" if keeps else "linear"


def lower_resize(lw: Lowerer, layer: Layer) -> None:
    p = layer.params
    s = lw.slots[layer.inputs[0]]
    out = lw.new_slot(layer.outputs[0], spatial_layout(lw, s, layer.outputs[0]))
    scales = axis_scales(p.scales, p.output_shape, s.shape)
    ins: list[tuple[str, gen.Operand]] = [(s.name, gen.Operand(s.dtype, (0,) * len(s.shape)))]
    base = []  # per dim: either ('id',) or ('near', table arg) or ('lin', lo, hi, frac args)
    for d, (o, n, sc) in enumerate(zip(p.output_shape, s.shape, scales)):
        if is_identity(o, n, sc):
            base.append(("id",))
            continue
        c = source_coordinates(o, n, sc, p.coordinate_transformation)
        if p.mode.value == "nearest":
            near = nearest_indices(c, p.nearest_mode, n).astype(np.int32)
            t = lw.const(f"{layer.name}/near{d}", near, False)
            ins.append((t.name, gen.Operand("int32", ())))
            base.append(("near", len(ins) - 1))
        else:
            lo, hi, fr = linear_taps(c, n)
            for key, arr in (("lo", lo.astype(np.int32)), ("hi", hi.astype(np.int32)), ("fr", fr.astype(np.float32))):
                t = lw.const(f"{layer.name}/{key}{d}", arr, False)
                ins.append((t.name, gen.Operand(t.dtype, ())))
            base.append(("lin", len(ins) - 3, len(ins) - 2, len(ins) - 1))
    lin = [d for d, b in enumerate(base) if b[0] == "lin"]
    terms = []
    for corner in range(1 << len(lin)):
        w, coords = [], []
        for d, b in enumerate(base):
            if b[0] == "id":
                coords.append(f"(IT)l{d}")
            elif b[0] == "near":
                coords.append(f"(IT)x{b[1]}[l{d}]")
            else:
                bit = (corner >> lin.index(d)) & 1
                coords.append(f"(IT)x{b[2] if bit else b[1]}[l{d}]")
                w.append(f"x{b[3]}[l{d}]" if bit else f"(1.f - x{b[3]}[l{d}])")
        off = " + ".join(f"{c} * {st}" for c, st in zip(coords, s.strides))
        val = gen.load(s.dtype, f"x0[{off}]")
        terms.append(" * ".join([val, *w]))
    lw.emit_map(layer.name, out, ins, "y = " + " + ".join(terms) + ";")
