"""GPU lowering of the element-wise family: activations, PReLU, unary and binary ops, scale,
fused pointwise chains, identity, cast and constants.

Each layer becomes one generated map kernel (``Lowerer.emit_map``) whose body is C built from the
tables below; an element-wise layer whose first input is NHWC writes NHWC, so chains between
convolutions stay in that layout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from backends.gpu import activations
from backends.gpu.kernels import gen
from backends.gpu.lowering.concat_reads import substitute
from backends.gpu.lowering.movement import concat_select, view_operand
from backends.gpu.lowering.slots import FLOAT, Dtypes, Slot, input_dtypes, prec
from engine.ir.dtypes import Precision
from engine.ir.layers import ActivationSpec, ActivationType, ElementWiseOp, LayerKind, UnaryOp
from engine.ir.network import Layer, Network

if TYPE_CHECKING:
    from backends.gpu.lowering.lowerer import Lowerer

_UNARY_C = {
    UnaryOp.ABS: "fabsf(v)", UnaryOp.NEG: "-v", UnaryOp.SQRT: "sqrtf(v)", UnaryOp.EXP: "expf(v)",
    UnaryOp.LOG: "logf(v)", UnaryOp.RECIPROCAL: "1.f / v", UnaryOp.FLOOR: "floorf(v)", UnaryOp.CEIL: "ceilf(v)",
    UnaryOp.ROUND: "rintf(v)", UnaryOp.SIGN: "sgnf(v)", UnaryOp.SIN: "sinf(v)", UnaryOp.COS: "cosf(v)",
    UnaryOp.TAN: "tanf(v)", UnaryOp.ASIN: "asinf(v)", UnaryOp.ACOS: "acosf(v)", UnaryOp.ATAN: "atanf(v)",
    UnaryOp.SINH: "sinhf(v)", UnaryOp.COSH: "coshf(v)", UnaryOp.ERF: "erff(v)",
}
_BINARY_C = {
    ElementWiseOp.SUM: "a + b", ElementWiseOp.SUB: "a - b", ElementWiseOp.PROD: "a * b", ElementWiseOp.DIV: "a / b",
    ElementWiseOp.MAX: "fmaxf(a, b)", ElementWiseOp.MIN: "fminf(a, b)", ElementWiseOp.POW: "powf(a, b)",
    ElementWiseOp.EQUAL: "(float)(a == b)", ElementWiseOp.GREATER: "(float)(a > b)",
    ElementWiseOp.LESS: "(float)(a < b)",
}
_INT_LIMITS = {"int8": (-128, 127), "uint8": (0, 255), "int32": (-2**31, 2**31 - 1), "int64": (-2**63, 2**63 - 1)}


def _act_c(spec: ActivationSpec, v: str = "v") -> str:
    code, a, b = activations.act_args(spec)
    return f"act_fn({v}, {code}, {a!r}f, {b!r}f)"


# ------------------------------------------------------------------------------------------ support checks


def check_unary(layer: Layer, network: Network, dtypes: Dtypes) -> str | None:
    ins = input_dtypes(layer, dtypes)
    if layer.params.op is UnaryOp.NOT:
        return None if ins == ["bool"] else "unary not needs bool"
    return None if all(d in FLOAT for d in ins) else f"unary {layer.params.op.value} on {ins[0]} has no GPU kernel"


def check_elementwise(layer: Layer, network: Network, dtypes: Dtypes) -> str | None:
    ins = input_dtypes(layer, dtypes)
    op = layer.params.op
    if op.is_logical:
        return None if all(d == "bool" for d in ins) else "logical op on non-bool"
    return None if all(d in FLOAT for d in ins) else f"elementwise {op.value} on {ins} tensors has no GPU kernel"


def check_cast(layer: Layer, network: Network, dtypes: Dtypes) -> str | None:
    src, out = dtypes[layer.inputs[0]], dtypes[layer.outputs[0]]
    return None if src in gen.CTYPE and out in gen.CTYPE else f"cast {src} -> {out} has no GPU kernel"


# ------------------------------------------------------------------------------------------ lowering


def _pointwise(lw: Lowerer, layer: Layer, operands: list[tuple[str, np.ndarray | None]], body: str) -> None:
    """operands: (tensor name or weight key, weight value or None) as X0, X1, ...; ``v`` flows."""
    out_t = layer.outputs[0]
    shape = lw.net.tensors[out_t].shape
    fp16 = prec(layer) is Precision.FP16
    out = lw.new_slot(out_t, lw.out_layout(layer))
    ins: list[tuple[str, gen.Operand]] = []
    selects: list[tuple[int, Layer]] = []  # operands that are a concatenation read in place
    for key, w in operands:
        if w is None and key in lw.concat_reads:
            selects.append((len(ins), lw.concat_reads[key]))
            ins.append(("", gen.Operand("float32", ())))  # replaced below
            continue
        if w is None:  # read the chain of movement's first slot: the copy in between may go
            ins.append(view_operand(lw, key, shape, fp16))
            continue
        s = lw.const(f"{layer.name}/{key}", w, fp16)
        ins.append((s.name, s.operand(shape, fp16)))
    for index, concat in selects:
        more, expr = concat_select(lw, concat, shape, fp16, index, len(ins))
        ins[index] = more[0]
        ins.extend(more[1:])
        body = substitute(body, index, expr)
    lw.emit_map(layer.name, out, ins, body)


def lower_activation(lw: Lowerer, layer: Layer) -> None:
    _pointwise(lw, layer, [(layer.inputs[0], None)], f"float v = X0; y = {_act_c(layer.params.activation)};")


def lower_parametric_relu(lw: Lowerer, layer: Layer) -> None:
    _pointwise(lw, layer, [(layer.inputs[0], None), ("slope", layer.weights["slope"])],
               "float v = X0; y = v >= 0.f ? v : v * X1;")


def lower_unary(lw: Lowerer, layer: Layer) -> None:
    op = layer.params.op
    if op is UnaryOp.NOT:
        _pointwise(lw, layer, [(layer.inputs[0], None)], "RAW yr = X0 ? 0 : 1;")
    else:
        _pointwise(lw, layer, [(layer.inputs[0], None)], f"float v = X0; y = {_UNARY_C[op]};")


def lower_elementwise(lw: Lowerer, layer: Layer) -> None:
    if layer.outputs[0] in lw.se_scales:
        return  # the consuming 1x1 convolution applies the scale (``_find_se_scales``)
    op = layer.params.op
    ops = [(layer.inputs[0], None), (layer.inputs[1], None)]
    if op.is_logical:
        c = {ElementWiseOp.AND: "&&", ElementWiseOp.OR: "||", ElementWiseOp.XOR: "!="}[op]
        _pointwise(lw, layer, ops, f"RAW yr = (X0 != 0) {c} (X1 != 0);")
    else:
        _pointwise(lw, layer, ops, f"float a = X0, b = X1; y = {_BINARY_C[op]};")


def lower_scale(lw: Lowerer, layer: Layer) -> None:
    p = layer.params
    x = lw.net.tensors[layer.inputs[0]]
    rank = len(x.shape)
    ops: list[tuple[str, np.ndarray | None]] = [(layer.inputs[0], None)]
    body = "float v = X0;"
    for name, stmt in (("scale", "v = v * X{i};"), ("shift", "v = v + X{i};"), ("power", "v = powf(v, X{i});")):
        w = layer.weights.get(name)
        if w is None:
            continue
        if p.mode.value == "uniform":
            w = w.reshape(())
        elif p.mode.value == "channel":
            shp = [1] * rank
            shp[p.channel_axis % rank] = w.shape[0]
            w = w.reshape(shp)
        ops.append((name, w))
        body += stmt.format(i=len(ops) - 1)
    _pointwise(lw, layer, ops, body + " y = v;")


def map_body(layer: Layer) -> tuple[list[tuple[str, np.ndarray | None]], str] | None:
    """The operands (tensor name or weight key, weight value or None: X0, X1, ...) and the float
    body (setting ``y``) of a float element-wise or pointwise layer's map kernel; None for the
    layers whose body is no float expression of its operands (logical ops)."""
    if layer.kind is LayerKind.POINTWISE:
        return pointwise_body(layer)
    if layer.kind is LayerKind.ELEMENTWISE and not layer.params.op.is_logical:
        return ([(layer.inputs[0], None), (layer.inputs[1], None)],
                f"float a = X0, b = X1; y = {_BINARY_C[layer.params.op]};")
    return None


def lower_pointwise(lw: Lowerer, layer: Layer) -> None:
    ops, body = pointwise_body(layer)
    _pointwise(lw, layer, ops, body)


def pointwise_body(layer: Layer) -> tuple[list[tuple[str, np.ndarray | None]], str]:
    ops: list[tuple[str, np.ndarray | None]] = [(layer.inputs[0], None)]
    body = "float v = X0;"
    for st in layer.params.steps:
        if st.kind == "activation":
            body += f" v = {_act_c(ActivationSpec(ActivationType(st.op), st.alpha, st.beta))};"
        elif st.kind == "unary":
            body += f" v = {_UNARY_C[UnaryOp(st.op)]};"
        else:
            if st.operand_input is not None:
                ops.append((layer.inputs[st.operand_input], None))
            else:
                ops.append((st.operand_weight, layer.weights[st.operand_weight]))
            i = len(ops) - 1
            a, b = (f"X{i}", "v") if st.reverse else ("v", f"X{i}")
            body += f" {{ float a = {a}, b = {b}; v = {_BINARY_C[ElementWiseOp(st.op)]}; }}"
    return ops, body + " y = v;"


def lower_identity(lw: Lowerer, layer: Layer) -> None:
    s = lw.slots[layer.inputs[0]]
    out = lw.new_slot(layer.outputs[0], s.layout if s.dtype == lw.dtypes[layer.outputs[0]] else "linear")
    raw = out.dtype == s.dtype
    lw.emit_map(layer.name, out, [(s.name, s.operand())], "RAW yr = X0;" if raw else "y = X0;")


def lower_cast(lw: Lowerer, layer: Layer) -> None:
    s = lw.slots[layer.inputs[0]]
    out = lw.new_slot(layer.outputs[0])
    src, dst = s.dtype, out.dtype
    if gen.can_load_float(src) and dst in _INT_LIMITS:
        lo, hi = _INT_LIMITS[dst]
        body = (f"FLT double v = (double)X0; RAW yr = v != v ? 0 : v >= {float(hi)!r} ? ({gen.CTYPE[dst]}){hi}LL : "
                f"v <= {float(lo)!r} ? ({gen.CTYPE[dst]})({lo}LL) : ({gen.CTYPE[dst]})trunc(v);")
    elif dst == "bool":
        body = "FLT RAW yr = (X0 != 0) ? 1 : 0;"
    elif gen.can_load_float(dst):
        body = "y = (float)X0;"
    else:
        body = f"RAW yr = ({gen.CTYPE[dst]})X0;"
    lw.emit_map(layer.name, out, [(s.name, s.operand())], body)


def lower_constant(lw: Lowerer, layer: Layer) -> None:
    v = np.ascontiguousarray(layer.weights["value"])
    want = lw.dtypes[layer.outputs[0]]
    s = Slot(layer.outputs[0], tuple(v.shape), want, "linear", v.astype(want))
    lw.slots[s.name] = s
