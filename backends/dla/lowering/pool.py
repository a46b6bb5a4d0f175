"""Pooling (PDP), reduce, LRN (CDP) and softmax lowerings."""

from __future__ import annotations

from dataclasses import replace

from dla_sim import pdp
from dla_sim.ops import CdpOp, PdpOp
from dla_sim.ops import Precision as HwPrecision
from engine.ir.errors import UnsupportedError
from engine.ir.layers import (
    PoolingType,
    ReduceOp,
)
from engine.ir.network import Layer

# ----------------------------------------------------------------------------------------------
# pooling
from .. import int8
from .context import _Ctx


def _emit_pool(ctx: _Ctx, layer: Layer, mode: str, window, stride, pad) -> None:
    x, out = layer.inputs[0], layer.outputs[0]
    prev = ctx.last_flying_sdp(x, layer)
    xc = ctx.out.cubes[x] if prev is not None else ctx.cube(x)
    yc = ctx.ir_out(out)
    op = PdpOp(name=layer.name, input=xc, output=yc, mode=mode, kernel=tuple(window), stride=tuple(stride),
               pad=tuple(pad), source="flying", inputs=(x,), outputs=(out,))
    if pdp.output_shape(op) != yc.shape:
        raise UnsupportedError(f"pooling output {yc.shape} differs from the PDP's window arithmetic "
                               f"{pdp.output_shape(op)}")
    lim = pdp.flying_max_width(op, ctx.cfg)
    if prev is None or yc.w > lim:
        op = replace(op, source="memory", split_width=max(1, -(-yc.w // lim)))
    ctx.emit(layer, op)


def lower_pooling(ctx: _Ctx, layer: Layer) -> None:
    x = layer.inputs[0]
    shape = ctx.net.tensors[x].shape
    if len(shape) != 4:
        raise UnsupportedError(f"{len(shape) - 2}-D pooling: DLA pooling is 2-D only")
    p = layer.params.resolved(shape[2:])
    if p.type is PoolingType.LP:
        raise UnsupportedError("Lp pooling: the DLA pools max and average only")
    if tuple(p.dilation) != (1, 1):
        raise UnsupportedError(f"pooling dilation {tuple(p.dilation)}: the DLA pools without dilation")
    out_hw = ctx.net.tensors[layer.outputs[0]].shape[2:]
    # the PDP computes floor((H + pads - k) / s) + 1; ceil mode adds bottom/right padding
    post = [max(int(b), (o - 1) * s + k - n - a) for o, s, k, n, a, b in
            zip(out_hw, p.stride, p.window, shape[2:], p.pre_padding, p.post_padding)]
    grown = any(q > b for q, b in zip(post, p.post_padding))
    mode = "max" if p.type is PoolingType.MAX else "avg"
    if mode == "avg":
        if grown:
            raise UnsupportedError("average pooling in ceil mode with a partial last window: the PDP divides "
                                   "by the full window")
        if (any(p.pre_padding) or any(p.post_padding)) and not p.count_include_pad:
            raise UnsupportedError("average pooling that excludes padding (count_include_pad=0): the PDP "
                                   "divides by the full window")
    pad = (int(p.pre_padding[0]), int(p.pre_padding[1]), post[0], post[1])
    _emit_pool(ctx, layer, mode, p.window, p.stride, pad)


def lower_reduce(ctx: _Ctx, layer: Layer) -> None:
    p = layer.params
    shape = ctx.net.tensors[layer.inputs[0]].shape
    axes = {a % len(shape) for a in p.axes} if shape else set()
    if len(shape) != 4 or axes != {2, 3} or not p.keep_dims or p.op not in (ReduceOp.MAX, ReduceOp.MEAN):
        raise UnsupportedError(f"Reduce {p.op.value} over axes {tuple(p.axes)}: the DLA reduces only max/mean "
                               f"over H and W (global pooling, keep_dims)")
    _emit_pool(ctx, layer, "max" if p.op is ReduceOp.MAX else "avg", shape[2:], (1, 1), (0, 0, 0, 0))

def lower_lrn(ctx: _Ctx, layer: Layer) -> None:
    p = layer.params
    if ctx.hp is HwPrecision.INT8:
        raise UnsupportedError("LRN in INT8: the CDP's INT pipeline is not a DLA path (TensorRT runs LRN in FP16)")
    x, out = layer.inputs[0], layer.outputs[0]
    xc = ctx.cube(x)
    yc = ctx.ir_out(out)
    ctx.emit(layer, CdpOp(name=layer.name, input=xc, output=yc, local_size=int(p.size), alpha=float(p.alpha),
                          beta=float(p.beta), k=float(p.bias), inputs=(x,), outputs=(out,)))


def lower_softmax(ctx: _Ctx, layer: Layer) -> None:
    if not ctx.cfg.post.softmax:
        raise UnsupportedError(f"Softmax: DLA support on Orin only ({ctx.cfg.name} has none)")
    raise UnsupportedError("Softmax: Orin's DLA runs it, but dla_sim models no softmax unit to lower it to")


def lower_pooling_int8(ctx: _Ctx, layer: Layer) -> None:
    int8.check_pool(layer)
    lower_pooling(ctx, layer)
