"""Single-point ops on the SDP: activation, PReLU, scale, element-wise, unary and pointwise chains."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from dla_sim.ops import CubeDesc
from engine.ir.errors import UnsupportedError
from engine.ir.layers import (
    ActivationSpec,
    ActivationType,
    ElementWiseOp,
    ScaleMode,
    UnaryOp,
)
from engine.ir.network import Layer

# ----------------------------------------------------------------------------------------------
# single-point ops (SDP)
from .context import DECOMPOSED, _Ctx, _sdp, emit_activation, sdp_activation


def _fold_into_conv(ctx: _Ctx, layer: Layer, x: str, out: str, **changes) -> bool:
    """Fold a pointwise op writing ``out`` into the convolution SDP that writes ``x``; False when it
    cannot (``x`` has other readers, or the SDP's activation/element-wise slot is taken)."""
    prev = ctx.last_flying_sdp(x, layer)
    if prev is None or prev.activation != "none":
        return False
    if "eltwise" in changes and prev.eltwise is not None:
        return False
    yc = prev.output.with_(name=out)
    ctx.out.cubes[out] = yc
    extra = changes.pop("extra_inputs", ())
    op = replace(prev, output=yc, outputs=(out,), inputs=(*prev.inputs, *extra), **changes)
    ctx.replace_last(op, layer)
    return True



def lower_activation(ctx: _Ctx, layer: Layer) -> None:
    spec = layer.params.activation
    x = layer.inputs[0]
    if spec is not None and spec.type in DECOMPOSED:
        ctx.cube(x)
        emit_activation(ctx, layer, x, layer.outputs[0], spec)
        return
    fields = sdp_activation(spec)
    if not _fold_into_conv(ctx, layer, x, layer.outputs[0], **fields):
        _sdp(ctx, layer, x, layer.outputs[0], **fields)


def lower_parametric_relu(ctx: _Ctx, layer: Layer) -> None:
    x = layer.inputs[0]
    slope = np.asarray(layer.weights["slope"])
    ctx.cube(x)
    mode = broadcast_mode(slope.shape, ctx.net.tensors[x].shape)
    if mode == "per_layer":
        _sdp(ctx, layer, x, layer.outputs[0], activation="prelu", prelu_slope=float(slope.reshape(-1)[0]))
        return
    if mode != "per_channel":
        raise UnsupportedError(f"PReLU slope of shape {slope.shape}: the DLA takes one slope per layer or per "
                               f"channel")
    op = ctx.blob(f"{layer.name}.slope", ctx.weight(slope.reshape(-1)), "operand")
    _sdp(ctx, layer, x, layer.outputs[0], (op,), activation="prelu")


def lower_scale(ctx: _Ctx, layer: Layer) -> None:
    p = layer.params
    x, out = layer.inputs[0], layer.outputs[0]
    power = layer.weights.get("power")
    if power is not None and np.any(np.asarray(power) != 1):
        raise UnsupportedError("Scale with a power term: the DLA scales and shifts only")
    xc = ctx.cube(x)
    if p.mode is ScaleMode.CHANNEL and p.channel_axis % len(ctx.net.tensors[x].shape) != 1:
        raise UnsupportedError(f"per-channel Scale on axis {p.channel_axis}: the DLA scales along C only")
    mode = {ScaleMode.UNIFORM: "per_layer", ScaleMode.CHANNEL: "per_channel", ScaleMode.ELEMENTWISE: "per_element"}[
        p.mode]

    def operand(key: str) -> str:
        v = np.asarray(layer.weights[key])
        v = v.reshape(xc.c, xc.h, xc.w) if mode == "per_element" else v.reshape(-1)
        return ctx.blob(f"{layer.name}.{key}", ctx.weight(v), "operand")

    scale, shift = "scale" in layer.weights, "shift" in layer.weights
    if scale and shift:  # the SDP's X1 adds before it multiplies: x*s + b takes two passes
        mid = f"{layer.name}.scaled"
        ctx.new_cube(mid, xc.shape)
        _sdp(ctx, layer, x, mid, (operand("scale"),), scale=mode)
        _sdp(ctx, layer, mid, out, (operand("shift"),), bias=mode)
    elif scale:
        _sdp(ctx, layer, x, out, (operand("scale"),), scale=mode)
    else:
        _sdp(ctx, layer, x, out, (operand("shift"),), bias=mode)


_SDP_ELTWISE = {ElementWiseOp.SUM: "add", ElementWiseOp.SUB: "sub", ElementWiseOp.PROD: "mul",
                ElementWiseOp.MAX: "max", ElementWiseOp.MIN: "min", ElementWiseOp.DIV: "mul"}


def _shape(ctx: _Ctx, t: str) -> tuple[int, ...]:
    """Shape of an IR tensor, or of a cube the lowering added (a step of a fused chain)."""
    return ctx.net.tensors[t].shape if t in ctx.net.tensors else ctx.out.cubes[t].shape


def _eltwise(ctx: _Ctx, layer: Layer, a: str, b: str, op: ElementWiseOp, out: str) -> None:
    """``out = a op b`` for tensors or constants ``a``, ``b`` (one SDP pass, or folded into a conv)."""
    if op not in _SDP_ELTWISE:
        raise UnsupportedError(f"ElementWise {op.value}: no DLA support (the SDP adds, subtracts, multiplies, "
                               f"takes max and min, and divides by a constant)")
    kind = _SDP_ELTWISE[op]
    av, bv = ctx.const_value(a), ctx.const_value(b)
    if op is ElementWiseOp.DIV:  # x / c = x * (1/c), the reciprocal an fp16 operand (TensorRT: Div [TRTDOC])
        if bv is None or av is not None or np.any(np.asarray(bv) == 0):
            raise UnsupportedError("ElementWise div: the DLA divides only by a non-zero constant (a multiply by "
                                   "its reciprocal)")
        bv = 1.0 / np.asarray(bv, dtype=np.float64)
        ctx.consts[f"{out}.recip"] = bv
        b = f"{out}.recip"
    if av is not None and bv is not None:
        raise UnsupportedError("ElementWise of two constants: fold it before placement")
    if av is not None:  # constant first: commute, or c - x = (x + (-c)) * -1
        if kind == "sub":
            mode, arr = _const_operand(ctx, -np.asarray(av), _shape(ctx, b), ctx.cube(b))
            neg = ctx.blob(f"{out}.bias", arr, "operand")
            m1 = ctx.blob(f"{out}.scale", ctx.weight(np.array([-1.0])), "operand")
            _sdp(ctx, layer, b, out, (neg, m1), bias=mode, scale="per_layer")
            return
        a, b, av, bv = b, a, bv, av
    if bv is not None:
        xc = ctx.cube(a)
        if kind in ("add", "sub", "mul"):
            v = -np.asarray(bv) if kind == "sub" else np.asarray(bv)
            slot = "scale" if kind == "mul" else "bias"
            mode, arr = _const_operand(ctx, v, _shape(ctx, a), xc)
            name = ctx.blob(f"{out}.{slot}", arr, "operand")
            _sdp(ctx, layer, a, out, (name,), **{slot: mode})
            return
        full = np.broadcast_to(np.asarray(bv), (1, xc.c, xc.h, xc.w)) if ctx.with_weights else None
        name = ctx.blob(f"{out}.operand", ctx.weight(full) if full is not None else None, "operand")
        ctx.out.cubes[name] = xc.with_(n=1, name=name)
        _sdp(ctx, layer, a, out, (name,), eltwise=kind, eltwise_input=ctx.out.cubes[name])
        return
    sa, sb = _shape(ctx, a), _shape(ctx, b)
    if sa != sb:
        if kind in ("add", "mul") and len(sb) == 4 and sb[0] == 1 and sb[2:] == (1, 1) and sa[0] == 1:
            ctx.cube(b)  # a per-channel tensor operand (e.g. squeeze-excitation): SDP bias/scale from memory
            slot = "scale" if kind == "mul" else "bias"
            _sdp(ctx, layer, a, out, (b,), **{slot: "per_channel"})
            return
        if kind in ("add", "mul") and len(sa) == 4 and sa[0] == 1 and sa[2:] == (1, 1) and sb[0] == 1:
            _eltwise(ctx, layer, b, a, op, out)
            return
        raise UnsupportedError(f"ElementWise {op.value} of shapes {sa} and {sb}: the DLA broadcasts only a "
                               f"(1, C, 1, 1) operand in add/mul")
    if _fold_into_conv(ctx, layer, a, out, eltwise=kind, eltwise_input=ctx.cube(b), extra_inputs=(b,)):
        return
    if kind != "sub" and _fold_into_conv(ctx, layer, b, out, eltwise=kind, eltwise_input=ctx.cube(a),
                                         extra_inputs=(a,)):
        return
    bc = ctx.cube(b)
    _sdp(ctx, layer, a, out, (b,), eltwise=kind, eltwise_input=bc)


def _const_operand(ctx: _Ctx, v: np.ndarray, x_shape: tuple[int, ...], xc: CubeDesc
                   ) -> tuple[str, np.ndarray | None]:
    """(SDP operand mode, fp16 array) of a constant broadcast (numpy rules) against a tensor of
    shape ``x_shape`` held as cube ``xc``."""
    mode = broadcast_mode(np.shape(v), x_shape)
    v = np.asarray(v)
    if mode == "per_layer":
        return mode, ctx.weight(v.reshape(1))
    if mode == "per_channel":
        return mode, ctx.weight(v.reshape(-1))
    if mode == "per_element":
        full = np.broadcast_to(v, x_shape).reshape(xc.n, xc.c, xc.h, xc.w)[0]
        return mode, ctx.weight(full)
    raise UnsupportedError(f"constant operand of shape {v.shape} varies over the batch of {x_shape}: the DLA's "
                           f"operands are per layer, per channel or per element of one image")


def broadcast_mode(shape: tuple[int, ...], x_shape: tuple[int, ...]) -> str | None:
    """How a constant of ``shape`` broadcasts over ``x_shape`` (numpy rules): 'per_layer',
    'per_channel', 'per_element' (same for every image), or None (varies with the batch or does
    not broadcast)."""
    r = len(x_shape)
    if len(shape) > r:
        return None
    s = (1,) * (r - len(shape)) + tuple(shape)
    if any(d not in (1, x) for d, x in zip(s, x_shape)):
        return None
    if all(d == 1 for d in s):
        return "per_layer"
    if r >= 2 and all(d == 1 for i, d in enumerate(s) if i != 1):
        return "per_channel"
    if s[0] == 1 or x_shape[0] == 1:
        return "per_element"
    return None


def lower_elementwise(ctx: _Ctx, layer: Layer) -> None:
    a, b = layer.inputs
    _eltwise(ctx, layer, a, b, layer.params.op, layer.outputs[0])


def lower_unary(ctx: _Ctx, layer: Layer) -> None:
    op = layer.params.op
    if op is not UnaryOp.ABS:
        raise UnsupportedError(f"Unary {op.value}: no DLA support (abs only)")
    _sdp(ctx, layer, layer.inputs[0], layer.outputs[0], activation="prelu", prelu_slope=-1.0)


def lower_pointwise(ctx: _Ctx, layer: Layer) -> None:
    """A fused pointwise chain as one SDP pass per step (each step rounds to fp16)."""
    steps = layer.params.steps
    cur = layer.inputs[0]
    shape = ctx.net.tensors[layer.inputs[0]].shape
    for i, s in enumerate(steps):
        out = layer.outputs[0] if i == len(steps) - 1 else f"{layer.name}.s{i}"
        if out != layer.outputs[0]:
            ctx.new_cube(out, shape)
        if s.kind == "activation":
            emit_activation(ctx, layer, cur, out, ActivationSpec(ActivationType(s.op), s.alpha, s.beta))
        elif s.kind == "unary":
            if s.op != UnaryOp.ABS.value:
                raise UnsupportedError(f"pointwise step unary {s.op}: no DLA support (abs only)")
            _sdp(ctx, layer, cur, out, activation="prelu", prelu_slope=-1.0)
        else:
            if s.operand_input is not None:
                other = layer.inputs[s.operand_input]
            else:  # a constant of the chain: an SDP operand, as a Constant layer's value would be
                other = f"{layer.name}.{s.operand_weight}"
                ctx.consts[other] = np.asarray(layer.weights[s.operand_weight])
            a, b = (other, cur) if s.reverse else (cur, other)
            _eltwise(ctx, layer, a, b, ElementWiseOp(s.op), out)
        cur = out
