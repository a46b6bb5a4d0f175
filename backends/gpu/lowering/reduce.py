"""GPU lowering of reductions, normalisations and pooling: reduce, softmax, normalization, LRN,
pooling.

Reductions over axes become one generated group kernel (``gen_group.group_kernel``: a warp or a block
per kept coordinate on long rows, a thread per coordinate on short ones); a global
average/max over H*W of an NHWC fp16 tensor (global pooling, or a reduce over axes 2, 3) is the
block-parallel 'gpool' launch; windowed pooling is the NHWC fp16 'pool' kernel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backends.gpu.kernels import gen, gen_group
from backends.gpu.kernels.direct import PoolGeometry
from backends.gpu.layout import round_up
from backends.gpu.lowering.row_maps import row_body
from backends.gpu.lowering.slots import FLOAT, Dtypes, Op, Slot, input_dtypes, prec
from engine.ir.dtypes import Precision
from engine.ir.layers import PoolingType, ReduceOp
from engine.ir.network import Layer, Network

if TYPE_CHECKING:
    from backends.gpu.lowering.lowerer import Lowerer


def check_pooling(layer: Layer, network: Network, dtypes: Dtypes) -> str | None:
    p = layer.params
    if len(network.tensors[layer.inputs[0]].shape) != 4:
        return "pooling other than 2-D has no GPU kernel"
    if p.type is PoolingType.LP:
        return "Lp pooling has no GPU kernel"
    if prec(layer) is not Precision.FP16:
        return "FP32 pooling has no GPU kernel (the NHWC pooling kernel is fp16)"
    return None


def check_reduce(layer: Layer, network: Network, dtypes: Dtypes) -> str | None:
    ins = input_dtypes(layer, dtypes)
    if layer.params.op in (ReduceOp.LOG_SUM_EXP, ReduceOp.ARGMAX, ReduceOp.ARGMIN):
        return f"reduce {layer.params.op.value} has no GPU kernel"
    return None if all(d in FLOAT for d in ins) else f"reduce on {ins[0]} has no GPU kernel"


def group(lw: Lowerer, layer: Layer, axes, kind: str, residual: tuple[Layer, str] | None = None, **kw) -> None:
    """One group kernel for ``layer``; ``residual``: (the add, the tensor it adds) of a norm that
    stores the add's output itself (``norm_residual``)."""
    from backends.gpu.lowering.movement import view_operand

    s = lw.slots[layer.inputs[0]]
    rank = len(s.shape)
    red = sorted(a % rank for a in axes)
    writer = kw.pop("out_layer", None) or layer  # a row map writes its reader's output
    # a softmax / norm over the channels of an NHWC tensor writes NHWC: whole rows stay contiguous
    # (coalesced stores) and a following convolution reads it without a conversion
    nhwc = kind != "reduce" and red == [1] and lw.out_layout(writer) == "nhwc"
    out = lw.new_slot(residual[0].outputs[0] if residual else writer.outputs[0], "nhwc" if nhwc else "linear")
    if nhwc:
        kw["pad_to"] = round_up(s.shape[1], 8)
    fp16 = prec(layer) is Precision.FP16
    # through its chain's view: a gather or slice in front (an attention's Q/K split) needs no copy
    root, x = view_operand(lw, layer.inputs[0], s.shape, fp16)
    if kind == "reduce":
        if kw.pop("keep"):
            ys = tuple(0 if d in red else st for d, st in enumerate(out.strides))
        else:
            it = iter(out.strides)
            ys = tuple(0 if d in red else next(it) for d in range(rank))
        y = gen.Operand(out.dtype, ys)
    else:
        y = gen.Operand(out.dtype, out.strides)
    extra: list[gen.Operand | None] = []
    args = [root, out.name]
    reads = [root]
    for key, w in kw.pop("weights", ()):  # (key, value or None), uploaded under the writer's name
        if w is None:
            extra.append(None)
            args.append(root)  # an unused parameter slot
            continue
        c = lw.const(f"{writer.name}/{key}", w, fp16)
        extra.append(gen.Operand("float32", gen.broadcast_strides(c.shape, c.strides, s.shape)))
        reads.append(c.name)
        args.append(c.name)
    label = layer.name if writer is layer else f"{layer.name} + {writer.name}"
    if residual is not None:
        name, operand = view_operand(lw, residual[1], s.shape, fp16)
        extra.append(operand)
        reads.append(name)
        args.append(name)
        kw["round_to"] = lw.dtypes[layer.outputs[0]]
        label = f"{layer.name} + {residual[0].name}"
    kname = lw.kernel_name(layer.name)
    # n counts threads, not rows: a thread, a warp (32) or a block (256) per kept coordinate
    src, n = gen_group.group_kernel(kname, s.shape, red, x, y, kind, extra,
                                    span=max(s.elements, lw.slots[root].elements), **kw)
    lw.emit(label, kname, src, reads, [out.name], (max(1, -(-n // 256)),), args)


def gpool(lw: Lowerer, label: str, xs: str, out: Slot, average: bool) -> None:
    """Global average/max over H*W of an NHWC fp16 tensor (a block-parallel reduction)."""
    n, c, h, w = lw.slots[xs].shape
    ldy = out.strides[0] if out.layout == "nhwc" else c
    lw.ops.append(Op(label, "gpool", [xs], [out.name],
                     info={"x": xs, "y": out.name, "n": n, "hw": h * w, "c": c, "ldy": ldy,
                             "average": average}))


def lower_reduce(lw: Lowerer, layer: Layer) -> None:
    p = layer.params
    x = lw.slots[layer.inputs[0]]
    axes = sorted(a % len(x.shape) for a in p.axes) if len(x.shape) == 4 else []
    if (axes == [2, 3] and x.layout == "nhwc" and x.dtype == "float16" and p.op.value in ("mean", "max")
            and lw.dtypes[layer.outputs[0]] == "float16" and prec(layer) is Precision.FP16):
        # (N, C, 1, 1) as NHWC, or (N, C) rows: both are y[n * ldy + c]
        out = lw.new_slot(layer.outputs[0], "nhwc" if p.keep_dims else "linear")
        gpool(lw, layer.name, x.name, out, p.op.value == "mean")
        return
    reader = lw.row_maps.get(layer.name)
    if reader is not None:  # the reader maps each row with its reduced value (``row_maps``)
        body, weights = row_body(layer, reader)
        group(lw, layer, p.axes, "rowmap", op=p.op.value, out_layer=reader, row_body=body, weights=weights,
              round_to=lw.dtypes[layer.outputs[0]])
        return
    group(lw, layer, p.axes, "reduce", op=p.op.value, keep=p.keep_dims)


def lower_softmax(lw: Lowerer, layer: Layer) -> None:
    p = layer.params
    group(lw, layer, (p.axis,), "logsoftmax" if p.log else "softmax")


def lower_normalization(lw: Lowerer, layer: Layer) -> None:
    p = layer.params
    group(lw, layer, p.axes, "norm", residual=lw.norm_residuals.get(layer.name), eps=float(p.epsilon),
          weights=[(key, layer.weights.get(key)) for key in ("scale", "bias")])


def lower_lrn(lw: Lowerer, layer: Layer) -> None:
    p = layer.params
    s = lw.slots[layer.inputs[0]]
    out = lw.new_slot(layer.outputs[0], lw.out_layout(layer))
    fp16 = prec(layer) is Precision.FP16
    lo, hi = (p.size - 1) // 2, p.size - 1 - (p.size - 1) // 2
    c = s.shape[1]
    st = s.strides
    ld = gen.load("float32r" if fp16 and s.dtype == "float32" else s.dtype,
                  "x0[" + " + ".join([f"(IT)cc * {st[1]}"]
                                     + [f"(IT)l{d} * {st[d]}" for d in range(len(st)) if d != 1])
                  + "]")
    body = (f"float acc = 0.f; for (int j = -{lo}; j <= {hi}; ++j) {{ const int cc = (int)l1 + j; "
            f"if (cc >= 0 && cc < {c}) {{ float v = {ld}; acc += v * v; }} }} "
            f"y = X0 / powf({float(p.bias)!r}f + {float(p.alpha / p.size)!r}f * acc, {float(p.beta)!r}f);")
    lw.emit_map(layer.name, out, [(s.name, s.operand(None, fp16))], body)


def lower_pooling(lw: Lowerer, layer: Layer) -> None:
    p = layer.params
    x = lw.slots[layer.inputs[0]]
    n, c, h, w = x.shape
    r = p.resolved((h, w))
    _, _, oh, ow = lw.net.tensors[layer.outputs[0]].shape
    g = PoolGeometry(n, h, w, c, oh, ow, tuple(r.window), tuple(r.stride), tuple(r.pre_padding),
                     tuple(r.post_padding), tuple(r.dilation))
    xs = lw.nhwc(layer.inputs[0])
    out = lw.new_slot(layer.outputs[0], "nhwc")
    if (oh, ow) == (1, 1) and g.window == (h, w) and not any(g.pad + g.pad_end) and g.dilation == (1, 1):
        gpool(lw, layer.name, xs, out, r.type is PoolingType.AVERAGE)
        return
    lw.ops.append(Op(layer.name, "pool", [xs], [out.name],
                     info={"geom": g, "average": r.type is PoolingType.AVERAGE,
                             "count_pad": bool(r.count_include_pad), "x": xs, "y": out.name}))
