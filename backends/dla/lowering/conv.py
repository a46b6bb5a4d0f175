"""Convolution family on the CONV core + SDP: convolution, deconvolution, fully connected, matrix
multiply (FP16) and the INT8 convolution emit."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from dla_sim import conv_core
from dla_sim.config import DlaConfig
from dla_sim.limits import DlaLimitError
from dla_sim.ops import ConvOp, CubeDesc, HwOp, SdpOp
from dla_sim.ops import Precision as HwPrecision
from engine.ir.errors import UnsupportedError
from engine.ir.int8_rules import nonlinear_epilogue
from engine.ir.layers import ActivationSpec, ActivationType
from engine.ir.network import Layer

from .. import int8

# ----------------------------------------------------------------------------------------------
# convolution family
from ..cubes import atom_channels, make_cube
from .context import DECOMPOSED, Assembly, View, _Ctx, emit_activation, sdp_activation


def _winograd_ok(cfg: DlaConfig, x: CubeDesc, y: CubeDesc, kernel, stride, dilation, groups) -> bool:
    return (cfg.conv.winograd and tuple(kernel) == (3, 3) and tuple(stride) == (1, 1)
            and tuple(dilation) == (1, 1) and groups == 1 and x.n == 1
            and y.h >= 8 and y.w >= 8 and y.h % 4 == 0 and y.w % 4 == 0)


def _image_input(ctx: _Ctx, x: str, xc: CubeDesc, groups: int, dilation) -> bool:
    """The first convolution reads the network's image in kDLA_HWC4 through the image-input path
    (CDMA IMG, channel pre-extension) rather than direct mode: C <= 4 straight from the host, no
    dilation, groups 1 ([IAS], [PG]; TensorRT's kDLA_HWC4: C in {1, 3, 4}, first layer a conv [TRTR])."""
    return (xc.c <= 4 and x in ctx.network.inputs and groups == 1 and tuple(dilation) == (1, 1)
            and ctx.const_value(x) is None)


def _conv_weights(ctx: _Ctx, name: str, kcrs: np.ndarray | None, mode: str) -> str:
    w = None
    if kcrs is not None:
        w16 = kcrs.astype(np.float16)
        w = conv_core.winograd_weights(w16, HwPrecision.FP16) if mode == "winograd" else w16
    return ctx.blob(f"{name}.w", w)


def _emit_conv(ctx: _Ctx, layer: Layer, x: str, out: str, kcrs: np.ndarray, bias: np.ndarray | None,
               kernel, stride, pad, dilation, groups: int, act: ActivationSpec | None,
               residual: str | None = None) -> None:
    """ConvOp + on-the-fly SdpOp (bias, residual add, activation) writing IR tensor ``out``."""
    xc = ctx.cube(x)
    yc = ctx.ir_out(out)
    mode = "winograd" if _winograd_ok(ctx.cfg, xc, yc, kernel, stride, dilation, groups) else "direct"
    if _image_input(ctx, x, xc, groups, dilation):
        mode = "image"
    wname = _conv_weights(ctx, layer.name, kcrs if ctx.with_weights else None, mode)
    acc = f"{layer.name}.acc"
    conv = ConvOp(name=layer.name, input=xc, output=yc, kernel=tuple(kernel), stride=tuple(stride),
                  pad=tuple(pad), dilation=tuple(dilation), groups=groups, mode=mode,
                  inputs=(x, wname), outputs=(acc,))
    operands: list[str] = []
    if bias is not None:
        operands.append(ctx.blob(f"{layer.name}.b", ctx.weight(bias), "operand"))
    fields: dict = {}
    if residual is not None:
        rc = ctx.cube(residual)
        fields.update(eltwise="add", eltwise_input=rc)
        operands.append(residual)
    split = act is not None and act.type in DECOMPOSED
    pre = f"{out}.pre" if split else out
    if split:
        yc = ctx.new_cube(pre, ctx.net.tensors[out].shape)
        conv = replace(conv, output=yc)
    else:
        fields.update(sdp_activation(act))
    sdp = SdpOp(name=f"{layer.name}.sdp", input=yc, output=yc, source="flying",
                bias="per_channel" if bias is not None else "none", inputs=(acc, *operands), outputs=(pre,),
                **fields)
    ctx.emit(layer, conv, sdp)
    if split:
        ctx.out.cubes[out] = ctx.out.cubes.get(out) or make_cube(out, ctx.net.tensors[out].shape, ctx.hp)
        emit_activation(ctx, layer, pre, out, act)


def _pads2d(pre, post) -> tuple[int, int, int, int]:
    return (int(pre[0]), int(pre[1]), int(post[0]), int(post[1]))


def _conv_lowering(emit):
    """A Convolution lowering over ``emit`` (_emit_conv in FP16, _emit_conv_int8 in INT8)."""

    def lower(ctx: _Ctx, layer: Layer) -> None:
        p = layer.params
        if len(p.kernel) != 2:
            raise UnsupportedError(f"{len(p.kernel)}-D convolution: DLA convolutions are 2-D only")
        residual = layer.inputs[1] if p.residual else None
        emit(ctx, layer, layer.inputs[0], layer.outputs[0], layer.weights["kernel"], layer.weights.get("bias"),
             p.kernel, p.stride, _pads2d(p.pre_padding, p.post_padding), p.dilation, p.groups, p.activation,
             residual)

    return lower


def _fc_lowering(emit):
    """A FullyConnected lowering as a 1×1 convolution over ``emit``."""

    def lower(ctx: _Ctx, layer: Layer) -> None:
        x = layer.inputs[0]
        shape = ctx.net.tensors[x].shape
        if len(shape) != 2:
            raise UnsupportedError(f"fully connected over the last axis of a rank-{len(shape)} tensor {shape}: "
                                   f"the DLA runs FC as a 1×1 convolution over channels of an (N, C) input")
        w = layer.weights["kernel"]
        emit(ctx, layer, x, layer.outputs[0], w.reshape(*w.shape, 1, 1), layer.weights.get("bias"),
             (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, layer.params.activation)

    return lower


def lower_matrix_multiply(ctx: _Ctx, layer: Layer) -> None:
    p = layer.params
    a, b = layer.inputs
    bv = ctx.const_value(b)
    if bv is None:
        raise UnsupportedError("MatMul with a non-constant second input: the DLA runs MatMul only as a 1×1 "
                               "convolution with constant weights")
    ashape = ctx.net.tensors[a].shape
    if len(ashape) != 2 or p.transpose_a or bv.ndim != 2:
        raise UnsupportedError(f"MatMul of {ashape} by {bv.shape} (transpose_a={p.transpose_a}): the DLA "
                               f"lowers only (N, C) @ (C, K) to a 1×1 convolution")
    kc = bv if p.transpose_b else bv.T
    _emit_conv(ctx, layer, a, layer.outputs[0], np.asarray(kc).reshape(*kc.shape, 1, 1), None,
               (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, None)


def lower_deconvolution(ctx: _Ctx, layer: Layer) -> None:
    p = layer.params
    if len(p.kernel) != 2:
        raise UnsupportedError(f"{len(p.kernel)}-D deconvolution: DLA deconvolutions are 2-D only")
    if p.groups != 1:
        raise UnsupportedError(f"deconvolution groups {p.groups}: the DLA supports groups 1 only")
    if tuple(p.dilation) != (1, 1):
        raise UnsupportedError(f"deconvolution dilation {tuple(p.dilation)}: the DLA supports dilation 1 only")
    if any(p.pre_padding) or any(p.post_padding) or any(p.output_padding or ()):
        raise UnsupportedError(f"deconvolution padding {tuple(p.pre_padding)}/{tuple(p.post_padding)} "
                               f"(output padding {tuple(p.output_padding or ())}): the DLA supports padding 0 only")
    if ctx.hp is HwPrecision.INT8:
        raise UnsupportedError("INT8 deconvolution lowering is not implemented (run it in FP16)")
    x, out = layer.inputs[0], layer.outputs[0]
    xc = ctx.cube(x)
    k = p.num_output_maps
    (r, s), (sy, sx) = tuple(p.kernel), tuple(p.stride)
    convs, rub, (hc, wc) = conv_core.lower_deconvolution(xc, k, (r, s), (sy, sx), layer.name, ctx.hp)
    phases = conv_core.deconv_phase_weights(layer.weights["kernel"].astype(np.float16), (sy, sx)) \
        if ctx.with_weights else [None] * len(convs)
    bias = layer.weights.get("bias")
    single = sy * sx == 1
    atom = atom_channels(ctx.hp)
    if not single and k % atom:
        raise UnsupportedError(f"deconvolution with {k} output maps at stride {sy}×{sx}: the phase outputs are "
                               f"placed side by side along C, which needs K to be a multiple of the "
                               f"{atom}-channel atom")
    bname = ctx.blob(f"{layer.name}.b", ctx.weight(bias), "operand") if bias is not None else None
    fields = sdp_activation(p.activation)
    parts = []
    ops: list[HwOp] = []
    for i, (conv, wp) in enumerate(zip(convs, phases)):
        ph = out if single else f"{layer.name}.ph{i}"
        phc = ctx.out.cubes[ph] = conv.output.with_(name=ph)
        wname = ctx.blob(f"{layer.name}.w{i}", wp)
        acc = f"{layer.name}.acc{i}"
        ops.append(replace(conv, input=xc, output=phc, inputs=(x, wname), outputs=(acc,)))
        ops.append(SdpOp(name=f"{layer.name}.sdp{i}", input=phc, output=phc, source="flying",
                         bias="per_channel" if bname else "none", inputs=(acc, *([bname] if bname else [])),
                         outputs=(ph,), **fields))
        parts.append((ph, i * k))
    if single:  # stride 1: one convolution with the flipped kernel gives the output directly
        ctx.emit(layer, *ops)
        return
    ext = f"{layer.name}.ext"
    ctx.out.cubes[ext] = rub.input.with_(name=ext)
    ctx.out.assemblies.append(Assembly(ext, tuple(parts)))
    full = out if (hc, wc) == (rub.output.h, rub.output.w) else f"{layer.name}.full"
    fc = ctx.out.cubes[full] = rub.output.with_(name=full)
    ops.append(replace(rub, input=ctx.out.cubes[ext], output=fc, inputs=(ext,), outputs=(full,)))
    ctx.emit(layer, *ops)
    if full != out:
        n = xc.n
        ctx.out.cubes[out] = CubeDesc(n=n, c=k, h=hc, w=wc, precision=ctx.hp, name=out,
                                      line_stride_bytes=fc.line_stride, surface_stride_bytes=fc.surface_stride)
        ctx.out.views.append(View(out, full, (0, 0, 0, 0), (n, k, hc, wc)))

# ----------------------------------------------------------------------------------------------
# INT8 convolution and fully connected (annotated scales)


def _emit_conv_int8(ctx: _Ctx, layer: Layer, x: str, out: str, kcrs: np.ndarray, bias: np.ndarray | None,
                    kernel, stride, pad, dilation, groups: int, act: ActivationSpec | None,
                    residual: str | None = None) -> None:
    """INT8 ConvOp (direct mode) + on-the-fly SdpOp: bias, residual through the element-wise
    converter, ReLU and the per-channel output converter; a clip below 127 adds an SDP pass."""
    if nonlinear_epilogue(act) is not None:
        _emit_conv_int8_nonlinear(ctx, layer, x, out, kcrs, bias, kernel, stride, pad, dilation, groups, act,
                                  residual)
        return
    ep = int8.conv_epilogue(layer, kcrs, bias, act, residual is not None, ctx.with_weights)
    xc = ctx.cube(x)
    to_float = int8.has_float_output(layer, ctx.network)
    clip = ep.clip_q is not None and not to_float
    first = f"{layer.name}.preclip" if clip else f"{layer.name}.units" if to_float else out
    yc = ctx.new_cube(first, ctx.net.tensors[out].shape)
    sdp_out = yc
    if to_float:  # the INT pipeline's converter writes FP16 (Int17ToFp16)
        sdp_out = ctx.out.cubes[first] = make_cube(first, ctx.net.tensors[out].shape, HwPrecision.FP16)
    conv, acc, operands, fields = _int8_conv(ctx, layer, x, xc, yc, ep, kernel, stride, pad, dilation, groups,
                                             residual)
    sdp = SdpOp(name=f"{layer.name}.sdp", input=yc, output=sdp_out, source="flying",
                bias="per_channel" if ep.has_bias else "none", bias_shift=ep.bias_shift,
                activation="relu" if ep.relu else "none", out_requant=ep.out_requant,
                inputs=(acc, *operands), outputs=(first,), **fields)
    ctx.emit(layer, conv, sdp)
    if to_float:  # FP16 in units of the step, times the step (a power of two: exact)
        oc = ctx.out.cubes[out] = make_cube(out, ctx.net.tensors[out].shape, HwPrecision.FP16)
        step = ctx.blob(f"{layer.name}.step", ctx.weight(np.array([ep.float_step or 1.0])), "operand")
        ctx.emit(layer, SdpOp(name=f"{layer.name}.tofloat", input=sdp_out, output=oc, source="memory",
                              scale="per_layer",
                              inputs=(first, step), outputs=(out,)))
    if clip:
        oc = ctx.ir_out(out)
        ctx.emit(layer, SdpOp(name=f"{layer.name}.clip", input=yc, output=oc, source="memory", activation="clip",
                              clip_max=float(ep.clip_q), inputs=(first,), outputs=(out,)))


# PRA truncate 2: int8 data's transformed input (|V| <= 510) never saturates, and the accumulator's
# gain 4 / 2**2 = 1 keeps the direct mode's converter (dla_sim.conv_core.winograd_int8_gain).
INT8_PRA_TRUNC = 2


def _int8_mode(ctx: _Ctx, x: str, xc: CubeDesc, yc: CubeDesc, wq: np.ndarray | None, kernel, stride, dilation,
               groups: int) -> tuple[str, np.ndarray | None]:
    """(mode, weights as stored) of an INT8 convolution. Image input for the first layer; otherwise
    direct mode, as the NVDLA compiler chooses for INT8 (Winograd only for FP16/INT16: nvdla/sw
    ``engine-ast/EngineNodeFactory.cpp``, ``!isInt8``; TensorRT's DLA documentation says nothing of
    Winograd). ``cfg.conv.winograd_int8`` opts into the hardware's INT8 Winograd where [PG]'s
    conditions hold and the transformed weights fit int8: lossy (PRA truncation), for what-if timing."""
    if _image_input(ctx, x, xc, groups, dilation):
        return "image", wq
    if not (ctx.cfg.conv.winograd_int8 and _winograd_ok(ctx.cfg, xc, yc, kernel, stride, dilation, groups)):
        return "direct", wq
    if wq is None:  # timing only: the weights' fit is not known, the hardware conditions hold
        return "winograd", None
    try:
        return "winograd", conv_core.winograd_weights(wq, HwPrecision.INT8)
    except DlaLimitError:
        return "direct", wq


def _int8_conv(ctx: _Ctx, layer: Layer, x: str, xc: CubeDesc, yc: CubeDesc, ep, kernel, stride, pad, dilation,
               groups: int, residual: str | None) -> tuple[ConvOp, str, list[str], dict]:
    """The ConvOp of an INT8 convolution writing the accumulator into ``yc``, and what its
    on-the-fly SDP pass reads: (conv, accumulator name, operand names, residual SDP fields)."""
    mode, weights = _int8_mode(ctx, x, xc, yc, ep.kernel, kernel, stride, dilation, groups)
    wname = ctx.blob(f"{layer.name}.w", weights)
    acc = f"{layer.name}.acc"
    conv = ConvOp(name=layer.name, input=xc, output=yc, kernel=tuple(kernel), stride=tuple(stride),
                  pad=tuple(pad), dilation=tuple(dilation), groups=groups, mode=mode,
                  pra_trunc=INT8_PRA_TRUNC if mode == "winograd" else 0,
                  weight_precision=HwPrecision.INT8, inputs=(x, wname), outputs=(acc,))
    operands: list[str] = []
    if ep.has_bias:
        operands.append(ctx.blob(f"{layer.name}.b", ep.bias, "operand"))
    fields: dict = {}
    if residual is not None:
        fields.update(eltwise="add", eltwise_input=ctx.cube(residual), in_requant=ep.in_requant)
        operands.append(residual)
    return conv, acc, operands, fields


def _emit_conv_int8_nonlinear(ctx: _Ctx, layer: Layer, x: str, out: str, kcrs: np.ndarray, bias: np.ndarray | None,
                              kernel, stride, pad, dilation, groups: int, act: ActivationSpec,
                              residual: str | None) -> None:
    """INT8 convolution with a SiLU / hard-swish epilogue: the conv pass writes the pre-activation
    in int16, a LUT (SiLU) or clipped-ramp (hard-swish) pass makes the gate, an element-wise
    multiply requantizes gate x pre-activation to int8 (``int8.NonlinearEpilogue``)."""
    ne = int8.nonlinear_params(layer, kcrs, bias, act, residual is not None, ctx.with_weights)
    ep = ne.pre
    xc = ctx.cube(x)
    shape = ctx.net.tensors[out].shape
    pre, gate = f"{out}.pre", f"{out}.gate"
    yc = make_cube(f"{layer.name}.acc", shape, HwPrecision.INT8)  # the accumulator's geometry
    prec = ctx.out.cubes[pre] = make_cube(pre, shape, HwPrecision.INT16)
    gatec = ctx.out.cubes[gate] = make_cube(gate, shape, HwPrecision.INT16)
    conv, acc, operands, fields = _int8_conv(ctx, layer, x, xc, yc, ep, kernel, stride, pad, dilation, groups,
                                             residual)
    ops = [conv, SdpOp(name=f"{layer.name}.sdp", input=yc, output=prec, source="flying",
                       bias="per_channel" if ep.has_bias else "none", bias_shift=ep.bias_shift,
                       out_requant=ep.out_requant, inputs=(acc, *operands), outputs=(pre,), **fields)]
    if ne.kind is ActivationType.SILU:
        ops.append(SdpOp(name=f"{out}.sigmoid", input=prec, output=gatec, source="memory", activation="sigmoid",
                         lut_in_scale=ne.x_scale if ne.x_scale is not None else 1.0, inputs=(pre,),
                         outputs=(gate,)))
    else:
        shift = ctx.blob(f"{gate}.bias", np.array([ne.gate_bias], dtype=np.int16) if ctx.with_weights else None,
                         "operand")
        ops.append(SdpOp(name=f"{out}.hardsigmoid", input=prec, output=gatec, source="memory", bias="per_layer",
                         activation="clip", clip_max=float(ne.gate_clip), inputs=(pre, shift), outputs=(gate,)))
    oc = ctx.ir_out(out)
    ops.append(SdpOp(name=f"{out}.mul", input=gatec, output=oc, source="memory", eltwise="mul", eltwise_input=prec,
                     out_requant=ne.mul_requant, inputs=(gate, pre), outputs=(out,)))
    ctx.emit(layer, *ops)


lower_convolution = _conv_lowering(_emit_conv)
lower_fully_connected = _fc_lowering(_emit_conv)
lower_convolution_int8 = _conv_lowering(_emit_conv_int8)
lower_fully_connected_int8 = _fc_lowering(_emit_conv_int8)
