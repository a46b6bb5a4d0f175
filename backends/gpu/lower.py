"""Lowering: IR layers of one GPU segment → device tensors (slots) and a launch list (ops).

Pure Python and numpy: nothing here touches CUDA, so lowering (and the support decisions the
builder logs) runs and is tested on any machine. ``backends.gpu.backend`` turns the result into
an arena, compiled kernels and a CUDA graph.

Layouts. A slot is ``linear`` (row-major over the IR's logical shape) or ``nhwc`` (a rank-4 fp16
tensor stored N, H, W, Cp with C padded to a multiple of 8 and zero padding). The tensor-core
convolution, depthwise convolution and pooling kernels need ``nhwc``; every generated kernel
addresses tensors through logical coordinates times strides, so it reads either layout and
writes ``nhwc`` when its main input is ``nhwc`` (element-wise chains between convolutions stay in
that layout). Conversions therefore happen only where a layer that needs ``nhwc`` reads a
``linear`` tensor (a partition input, a reshape's output) and where a partition output leaves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backends.gpu import activations
from backends.gpu.kernels import gen
from backends.gpu.kernels.conv import ConvGeometry, ConvTactic, Tile, heuristic_tactic
from backends.gpu.kernels.direct import PoolGeometry
from backends.gpu.layout import round_up
from backends.gpu.lower_int8 import Int8Lowering, is_int8, supports_int8
from backends.gpu.space_to_depth import space_to_depth_conv, space_to_depth_kernel
from engine.ir.dtypes import Precision
from engine.ir.layers import ActivationSpec, ActivationType, ElementWiseOp, LayerKind, PaddingMode, PoolingType, UnaryOp
from engine.ir.memory import storage_dtypes
from engine.ir.network import Layer, Network

# ------------------------------------------------------------------------------------------ slots


@dataclass
class Slot:
    """A device tensor of a segment. ``const`` slots hold uploaded weights (outside the arena).

    Layouts: ``linear`` (row-major), ``nhwc`` (rank 4, C padded to 8), and for int8 tensors
    ``nhwc16`` (C padded to 16) and ``rows16`` (last dim padded to 16).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    layout: str = "linear"
    const: np.ndarray | None = None

    @property
    def phys_shape(self) -> tuple[int, ...]:
        if self.layout in ("nhwc", "nhwc16"):
            n, c, h, w = self.shape
            return (n, h, w, round_up(c, 8 if self.layout == "nhwc" else 16))
        if self.layout == "rows16":
            return (*self.shape[:-1], round_up(self.shape[-1], 16))
        return self.shape

    @property
    def strides(self) -> tuple[int, ...]:
        """Element strides per logical dim."""
        if self.layout in ("nhwc", "nhwc16"):
            n, c, h, w = self.shape
            cp = round_up(c, 8 if self.layout == "nhwc" else 16)
            return (h * w * cp, 1, w * cp, cp)
        if self.layout == "rows16":
            return gen.row_major(self.phys_shape)
        return gen.row_major(self.shape)

    @property
    def elements(self) -> int:
        return math.prod(self.phys_shape)

    @property
    def nbytes(self) -> int:
        return self.elements * np.dtype(self.dtype).itemsize

    def operand(self, out_shape: tuple[int, ...] | None = None, fp16_round: bool = False) -> gen.Operand:
        strides = self.strides if out_shape is None else gen.broadcast_strides(self.shape, self.strides, out_shape)
        dtype = "float32r" if fp16_round and self.dtype == "float32" else self.dtype
        return gen.Operand(dtype, strides)


# ------------------------------------------------------------------------------------------ ops


@dataclass
class Op:
    """One launch. ``kind``: 'gen' (a generated kernel), 'conv', 'depthwise', 'pool', 'gpool' (global
    average/max), 'conv8', 'pool8', 'quant8' (float32 NCHW -> int8 NHWC16), 's2d' (float32 NCHW -> the
    fp16 NHWC 2x2 space-to-depth a stem convolution reads).

    ``args`` names slots (or holds scalars) in the kernel's parameter order for 'gen'; the other
    kinds carry their geometry in ``info``.
    """

    label: str
    kind: str
    reads: list[str]
    writes: list[str]
    args: list[Any] = field(default_factory=list)
    grid: tuple[int, ...] = (1,)
    kernel: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    workspace: int = 0  # bytes of scratch (split-K partials), live during this op only


@dataclass
class Lowered:
    slots: dict[str, Slot]
    ops: list[Op]
    inputs: list[str]  # slots staged from outside (linear, their storage dtype)
    outputs: dict[str, str]  # tensor name -> linear slot holding it for the caller
    source: str  # CUDA source of every generated kernel of the segment
    conv_layers: dict[str, ConvGeometry]  # layer name -> geometry of its tensor-core conv


# ------------------------------------------------------------------------------------------ support


_FLOAT = ("float16", "float32")
_INT8_KINDS = (LayerKind.QUANTIZE, LayerKind.DEQUANTIZE)


def _prec(layer: Layer) -> Precision:
    return layer.precision or Precision.FP32


def supports(layer: Layer, network: Network) -> tuple[bool, str]:
    """Whether the GPU backend runs ``layer``, with the reason when it does not."""
    k = layer.kind
    dtypes = storage_dtypes(network)
    ins = [dtypes[t].numpy.name for t in layer.inputs]
    if k in _INT8_KINDS:
        return False, "Q/DQ conversions have no GPU kernel"
    if k is LayerKind.PLUGIN:
        return False, "plugin layer: runs the plugin's own implementation (its GPU one when registered)"
    if _prec(layer) is Precision.INT8:
        return supports_int8(layer, network)
    shape0 = network.tensors[layer.inputs[0]].shape if layer.inputs else ()
    float_in = all(d in _FLOAT for d in ins)
    if k in (LayerKind.CONVOLUTION, LayerKind.DECONVOLUTION):
        if len(shape0) != 4:
            return False, f"{len(shape0) - 2}-D {k.value} has no GPU kernel (2-D only)"
        return (True, "") if float_in else (False, "non-float convolution input")
    if k is LayerKind.POOLING:
        p = layer.params
        if len(shape0) != 4:
            return False, "pooling other than 2-D has no GPU kernel"
        if p.type is PoolingType.LP:
            return False, "Lp pooling has no GPU kernel"
        if _prec(layer) is not Precision.FP16:
            return False, "FP32 pooling has no GPU kernel (the NHWC pooling kernel is fp16)"
        return True, ""
    if k in (LayerKind.ACTIVATION, LayerKind.PARAMETRIC_RELU, LayerKind.SCALE, LayerKind.LRN, LayerKind.SOFTMAX,
             LayerKind.NORMALIZATION, LayerKind.RESIZE, LayerKind.POINTWISE, LayerKind.FULLY_CONNECTED,
             LayerKind.MATRIX_MULTIPLY):
        return (True, "") if float_in else (False, f"{k.value} on {ins} tensors has no GPU kernel")
    if k is LayerKind.UNARY:
        if layer.params.op is UnaryOp.NOT:
            return (True, "") if ins == ["bool"] else (False, "unary not needs bool")
        return (True, "") if float_in else (False, f"unary {layer.params.op.value} on {ins[0]} has no GPU kernel")
    if k is LayerKind.ELEMENTWISE:
        op = layer.params.op
        if op.is_logical:
            return (True, "") if all(d == "bool" for d in ins) else (False, "logical op on non-bool")
        return (True, "") if float_in else (False, f"elementwise {op.value} on {ins} tensors has no GPU kernel")
    if k is LayerKind.REDUCE:
        from engine.ir.layers import ReduceOp

        if layer.params.op is ReduceOp.LOG_SUM_EXP:
            return False, "reduce log_sum_exp has no GPU kernel"
        return (True, "") if float_in else (False, f"reduce on {ins[0]} has no GPU kernel")
    if k in (LayerKind.CONCATENATION, LayerKind.SHUFFLE, LayerKind.SLICE, LayerKind.SPLIT, LayerKind.PADDING,
             LayerKind.CONSTANT, LayerKind.GATHER, LayerKind.IDENTITY):
        if any(d not in gen.CTYPE for d in ins):
            return False, f"{k.value} on {ins} has no GPU kernel"
        if k is LayerKind.CONSTANT and layer.weights["value"].dtype.name not in gen.CTYPE:
            return False, "constant of an unsupported dtype"
        return True, ""
    if k is LayerKind.CAST:
        out = dtypes[layer.outputs[0]].numpy.name
        ok = ins[0] in gen.CTYPE and out in gen.CTYPE
        return (True, "") if ok else (False, f"cast {ins[0]} -> {out} has no GPU kernel")
    return False, f"layer kind '{k.value}' has no GPU kernel"


# ------------------------------------------------------------------------------------------ lowering


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


def _fold_act(spec: ActivationSpec | None) -> tuple[int, float, float]:
    return activations.act_args(spec)


def parse_tactic(name: str) -> ConvTactic | None:
    """Inverse of ``ConvTactic.name`` ('igemm_64x128_w2x2_s4_k1'); None when it does not parse."""
    try:
        _, tile, warps, stages, splits = name.split("_")
        bm, bn = map(int, tile.split("x"))
        wm, wn = map(int, warps[1:].split("x"))
        return ConvTactic(Tile(bm, bn, wm, wn, int(stages[1:])), int(splits[1:]))
    except (ValueError, AttributeError):
        return None


class Lowerer(Int8Lowering):
    """Lowers the layers of one segment, in order; ``lower`` returns the whole ``Lowered``."""

    def __init__(self, network: Network, layers: list[Layer], outputs: list[str],
                 tactics: dict[str, str] | None = None) -> None:
        self.net = network
        self.layers = layers
        self.want = outputs
        self.tactics = tactics or {}
        self.dtypes = {t: d.numpy.name for t, d in storage_dtypes(network).items()}
        self.slots: dict[str, Slot] = {}
        self.ops: list[Op] = []
        self.inputs: list[str] = []
        self.src: list[str] = []
        self.convs: dict[str, ConvGeometry] = {}
        self.se_scales: dict[str, tuple[str, str]] = {}
        self._n = 0
        self._init_int8()
        produced = {t for la in layers for t in la.outputs}
        for la in layers:
            for t in la.inputs:
                if t not in produced and t not in self.slots:
                    self.slots[t] = Slot(t, network.tensors[t].shape, self.dtypes[t])
                    self.inputs.append(t)

    # -------------------------------------------------------------- helpers

    def _name(self, base: str) -> str:
        self._n += 1
        clean = "".join(ch if ch.isalnum() else "_" for ch in base)[:40]
        return f"k{self._n}_{clean}"

    def _new(self, tensor: str, layout: str = "linear", dtype: str | None = None, name: str | None = None) -> Slot:
        s = Slot(name or tensor, self.net.tensors[tensor].shape, dtype or self.dtypes[tensor], layout)
        self.slots[s.name] = s
        return s

    def _gen(self, label: str, kname: str, source: str, reads: list[str], writes: list[str], grid: tuple[int, ...],
             args: list[Any]) -> None:
        self.src.append(source)
        self.ops.append(Op(label, "gen", reads, writes, args, grid, kname))

    def _map(self, label: str, out: Slot, ins: list[tuple[str, gen.Operand]], body: str,
             out_op: gen.Operand | None = None, iter_shape: tuple[int, ...] | None = None, span: int = 0) -> None:
        shape = iter_shape or out.shape
        order, zero = None, None
        if out.layout == "nhwc" and out_op is None:
            order, zero = [0, 2, 3, 1], (1, round_up(out.shape[1], 8))
        kname = self._name(label)
        yop = out_op or gen.Operand(out.dtype, out.strides)
        span = max([span, out.elements] + [self.slots[n].elements for n, _ in ins if n in self.slots])
        src = gen.map_kernel(kname, shape, yop, [o for _, o in ins], body, order, zero, span)
        self._gen(label, kname, src, [n for n, _ in ins], [out.name], gen.map_grid(shape, zero),
                  [out.name, *[n for n, _ in ins]])

    def nhwc(self, tensor: str) -> str:
        """A slot holding ``tensor`` as NHWC fp16 (a conversion kernel if it is not one already)."""
        s = self.slots[tensor]
        if s.layout == "nhwc" and s.dtype == "float16":
            return s.name
        conv_name = f"{tensor}@nhwc"
        if conv_name not in self.slots:
            out = self._new(tensor, "nhwc", "float16", conv_name)
            self._map(f"to_nhwc_{tensor}", out, [(s.name, s.operand())], "y = X0;")
        return conv_name

    def linear(self, tensor: str, dtype: str | None = None) -> str:
        """A row-major slot holding ``tensor`` (in ``dtype``, default its own)."""
        s = self.slots[tensor]
        dtype = dtype or s.dtype
        if s.layout == "linear" and s.dtype == dtype:
            return s.name
        name = f"{tensor}@linear_{dtype}"
        if name not in self.slots:
            out = self._new(tensor, "linear", dtype, name)
            raw = s.dtype == dtype or not gen.can_load_float(s.dtype) or not gen.can_load_float(dtype)
            self._map(f"to_linear_{tensor}", out, [(s.name, s.operand())], "RAW yr = X0;" if raw else "y = X0;")
        return name

    def const(self, key: str, value: np.ndarray, fp16_round: bool) -> Slot:
        """Upload a weight as fp32 (first rounded to fp16 for an FP16 layer, as the reference does)."""
        v = np.asarray(value)
        if v.dtype.kind == "f":
            v = v.astype(np.float16).astype(np.float32) if fp16_round else v.astype(np.float32)
        s = Slot(key, tuple(v.shape), v.dtype.name, "linear", np.ascontiguousarray(v))
        self.slots[key] = s
        return s

    def _out_layout(self, layer: Layer) -> str:
        """NHWC for a float rank-4 output of an element-wise layer whose first input is NHWC."""
        t = layer.outputs[0]
        x = self.slots.get(layer.inputs[0]) if layer.inputs else None
        shape = self.net.tensors[t].shape
        if (x is not None and x.layout == "nhwc" and len(shape) == 4 and self.dtypes[t] == "float16"
                and x.shape == shape):
            return "nhwc"
        return "linear"

    # -------------------------------------------------------------- driver

    def _find_se_scales(self) -> dict[str, tuple[str, str]]:
        """Squeeze-excitation multiplies folded into the next 1x1 convolution's input loads.

        ``y = x * s`` with s of shape (N, C, 1, 1), read only by an FP16 1x1 group-1 convolution
        of this segment as its data input: the convolution reads x and s instead (one pass over
        the largest tensor of the block saved). Returns {y: (x, s)}.
        """
        uses: dict[str, list[Layer]] = {}
        for la in self.net.layers:
            for t in dict.fromkeys(la.inputs):
                uses.setdefault(t, []).append(la)
        found: dict[str, tuple[str, str]] = {}
        for la in self.layers:
            if (la.kind is not LayerKind.ELEMENTWISE or la.params.op is not ElementWiseOp.PROD
                    or _prec(la) is not Precision.FP16 or is_int8(la)):
                continue
            y = la.outputs[0]
            readers = uses.get(y, [])
            if y in self.want or y in self.net.outputs or len(readers) != 1:
                continue
            conv = readers[0]
            cp = conv.params
            if (conv.kind is not LayerKind.CONVOLUTION or not any(conv is c for c in self.layers)
                    or _prec(conv) is not Precision.FP16 or conv.inputs[0] != y or y in conv.inputs[1:]
                    or cp.groups != 1 or tuple(cp.kernel) != (1, 1)):
                continue
            shapes = [self.net.tensors[t].shape for t in la.inputs]
            yshape = self.net.tensors[y].shape
            for xi in (0, 1):
                x, sv = la.inputs[xi], la.inputs[1 - xi]
                xs_, ss_ = shapes[xi], shapes[1 - xi]
                if (len(xs_) == 4 and xs_ == yshape and tuple(ss_) == (xs_[0], xs_[1], 1, 1) and x != sv
                        and self.dtypes.get(x) == "float16" and self.dtypes.get(sv) == "float16"):
                    found[y] = (x, sv)
                    break
        return found

    def lower(self) -> Lowered:
        self.se_scales = self._find_se_scales()
        for layer in self.layers:
            if is_int8(layer):
                self.lower_int8(layer)
                continue
            for t in layer.inputs:
                self.float_of(t)
            getattr(self, f"_l_{layer.kind.value}")(layer)
        outputs = {t: self.linear(self.float_of(t), self.dtypes[t]) for t in self.want}
        return Lowered(self.slots, self.ops, self.inputs, outputs, gen.GEN_PRELUDE + "\n".join(self.src), self.convs)

    # -------------------------------------------------------------- element-wise family

    def _pointwise(self, layer: Layer, operands: list[tuple[str, np.ndarray | None]], body: str) -> None:
        """operands: (tensor name or weight key, weight value or None) as X0, X1, ...; ``v`` flows."""
        out_t = layer.outputs[0]
        shape = self.net.tensors[out_t].shape
        fp16 = _prec(layer) is Precision.FP16
        out = self._new(out_t, self._out_layout(layer))
        ins = []
        for key, w in operands:
            s = self.slots[key] if w is None else self.const(f"{layer.name}/{key}", w, fp16)
            ins.append((s.name, s.operand(shape, fp16)))
        self._map(layer.name, out, ins, body)

    def _l_activation(self, layer: Layer) -> None:
        self._pointwise(layer, [(layer.inputs[0], None)], f"float v = X0; y = {_act_c(layer.params.activation)};")

    def _l_parametric_relu(self, layer: Layer) -> None:
        self._pointwise(layer, [(layer.inputs[0], None), ("slope", layer.weights["slope"])],
                        "float v = X0; y = v >= 0.f ? v : v * X1;")

    def _l_unary(self, layer: Layer) -> None:
        op = layer.params.op
        if op is UnaryOp.NOT:
            self._pointwise(layer, [(layer.inputs[0], None)], "RAW yr = X0 ? 0 : 1;")
        else:
            self._pointwise(layer, [(layer.inputs[0], None)], f"float v = X0; y = {_UNARY_C[op]};")

    def _l_elementwise(self, layer: Layer) -> None:
        if layer.outputs[0] in self.se_scales:
            return  # the consuming 1x1 convolution applies the scale (``_find_se_scales``)
        op = layer.params.op
        ops = [(layer.inputs[0], None), (layer.inputs[1], None)]
        if op.is_logical:
            c = {ElementWiseOp.AND: "&&", ElementWiseOp.OR: "||", ElementWiseOp.XOR: "!="}[op]
            self._pointwise(layer, ops, f"RAW yr = (X0 != 0) {c} (X1 != 0);")
        else:
            self._pointwise(layer, ops, f"float a = X0, b = X1; y = {_BINARY_C[op]};")

    def _l_scale(self, layer: Layer) -> None:
        p = layer.params
        x = self.net.tensors[layer.inputs[0]]
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
        self._pointwise(layer, ops, body + " y = v;")

    def _l_pointwise(self, layer: Layer) -> None:
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
        self._pointwise(layer, ops, body + " y = v;")

    def _l_identity(self, layer: Layer) -> None:
        s = self.slots[layer.inputs[0]]
        out = self._new(layer.outputs[0], s.layout if s.dtype == self.dtypes[layer.outputs[0]] else "linear")
        raw = out.dtype == s.dtype
        self._map(layer.name, out, [(s.name, s.operand())], "RAW yr = X0;" if raw else "y = X0;")

    def _l_cast(self, layer: Layer) -> None:
        s = self.slots[layer.inputs[0]]
        out = self._new(layer.outputs[0])
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
        self._map(layer.name, out, [(s.name, s.operand())], body)

    def _l_constant(self, layer: Layer) -> None:
        v = np.ascontiguousarray(layer.weights["value"])
        want = self.dtypes[layer.outputs[0]]
        s = Slot(layer.outputs[0], tuple(v.shape), want, "linear", v.astype(want))
        self.slots[s.name] = s

    # -------------------------------------------------------------- data movement

    def _l_shuffle(self, layer: Layer) -> None:
        p = layer.params
        s = self.slots[layer.inputs[0]]
        out = self._new(layer.outputs[0])
        xshape = s.shape
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
        off = " + ".join(f"(IT){c} * {st}" for c, st in zip(xc, s.strides)) or "0"
        lines.append(f"RAW yr = LD0({off});")
        self._map(layer.name, out, [(s.name, gen.Operand(s.dtype, (0,) * ro))], " ".join(lines))

    def _slice(self, label: str, s: Slot, out: Slot, start, step) -> None:
        strides = tuple(st * k for st, k in zip(s.strides, step))
        base = sum(a * st for a, st in zip(start, s.strides))
        neg = any(v < 0 for v in strides)
        self._map(label, out, [(s.name, gen.Operand(s.dtype, strides, base))], "RAW yr = X0;",
                  span=2**31 if neg else 0)

    def _l_slice(self, layer: Layer) -> None:
        p = layer.params
        s = self.slots[layer.inputs[0]]
        out = self._new(layer.outputs[0])
        if out.elements == 0:
            return
        self._slice(layer.name, s, out, p.start, p.step)

    def _l_split(self, layer: Layer) -> None:
        p = layer.params
        s = self.slots[layer.inputs[0]]
        ax = p.axis % len(s.shape)
        at = 0
        for t, size in zip(layer.outputs, p.sizes):
            out = self._new(t)
            start = [0] * len(s.shape)
            start[ax] = at
            at += size
            if out.elements:
                self._slice(f"{layer.name}_{t}", s, out, start, [1] * len(s.shape))

    def _l_concatenation(self, layer: Layer) -> None:
        p = layer.params
        ins = [self.slots[t] for t in layer.inputs]
        ax = p.axis % len(ins[0].shape)
        out = self._new(layer.outputs[0], "nhwc" if all(s.layout == "nhwc" for s in ins) and ax == 1 else "linear")
        body, at = [], 0
        for i, s in enumerate(ins):
            size = s.shape[ax]
            coords = [f"l{d}" if d != ax else f"(l{d} - {at})" for d in range(len(s.shape))]
            off = " + ".join(f"(IT){c} * {st}" for c, st in zip(coords, s.strides)) or "0"
            cond = f"if (l{ax} < {at + size}) " if i < len(ins) - 1 else ""
            body.append(f"{'else ' if i else ''}{cond}yr = LD{i}({off});")
            at += size
        self._map(layer.name, out, [(s.name, gen.Operand(s.dtype, (0,) * len(s.shape))) for s in ins],
                  "RAW " + " ".join(body))

    def _l_padding(self, layer: Layer) -> None:
        p = layer.params
        s = self.slots[layer.inputs[0]]
        out = self._new(layer.outputs[0])
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
        self._map(layer.name, out, [(s.name, gen.Operand(s.dtype, (0,) * len(s.shape)))], " ".join(lines),
                  span=2**31)

    def _l_gather(self, layer: Layer) -> None:
        s = self.slots[layer.inputs[0]]
        out = self._new(layer.outputs[0])
        ax = layer.params.axis % len(s.shape)
        idx = layer.weights["indices"].astype(np.int64)
        idx = np.where(idx < 0, idx + s.shape[ax], idx).astype(np.int32)
        ik = self.const(f"{layer.name}/indices", idx.reshape(-1) if idx.ndim else idx.reshape(1), False)
        nd = idx.ndim
        im = gen.row_major(idx.shape)
        flat = " + ".join(f"(IT)l{ax + j} * {m}" for j, m in enumerate(im)) or "0"
        xc = [f"(IT)l{d}" for d in range(ax)] + ["(IT)x1[" + flat + "]"]
        xc += [f"(IT)l{d - 1 + nd}" for d in range(ax + 1, len(s.shape))]
        off = " + ".join(f"{c} * {st}" for c, st in zip(xc, s.strides)) or "0"
        self._map(layer.name, out, [(s.name, gen.Operand(s.dtype, (0,) * len(out.shape))),
                                    (ik.name, gen.Operand("int32", (0,) * len(out.shape)))], f"RAW yr = LD0({off});")

    def _l_resize(self, layer: Layer) -> None:
        from fractions import Fraction

        from backends.reference.ops import resize as rref

        p = layer.params
        s = self.slots[layer.inputs[0]]
        out = self._new(layer.outputs[0])
        scales = rref._scales(p, s.shape)
        ins: list[tuple[str, gen.Operand]] = [(s.name, gen.Operand(s.dtype, (0,) * len(s.shape)))]
        base = []  # per dim: either ('id',) or ('near', table arg) or ('lin', lo, hi, frac args)
        for d, (o, n, sc) in enumerate(zip(p.output_shape, s.shape, scales)):
            if o == n and sc == 1:
                base.append(("id",))
                continue
            c = rref.source_coordinates(o, n, Fraction(sc), p.coordinate_transformation)
            if p.mode.value == "nearest":
                near = rref._nearest_index(c, p.nearest_mode, n).astype(np.int32)
                t = self.const(f"{layer.name}/near{d}", near, False)
                ins.append((t.name, gen.Operand("int32", ())))
                base.append(("near", len(ins) - 1))
            else:
                cf = np.clip(np.array([float(v) for v in c]), 0.0, n - 1.0)
                lo = np.floor(cf).astype(np.int64)
                hi = np.minimum(lo + 1, n - 1)
                fr = (cf - lo).astype(np.float32)
                for key, arr in (("lo", lo.astype(np.int32)), ("hi", hi.astype(np.int32)), ("fr", fr)):
                    t = self.const(f"{layer.name}/{key}{d}", arr, False)
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
        self._map(layer.name, out, ins, "y = " + " + ".join(terms) + ";")

    # -------------------------------------------------------------- reductions and normalizations

    def _group(self, layer: Layer, axes, kind: str, **kw) -> None:
        s = self.slots[layer.inputs[0]]
        out = self._new(layer.outputs[0])
        fp16 = _prec(layer) is Precision.FP16
        x = s.operand(None, fp16)
        rank = len(s.shape)
        red = sorted(a % rank for a in axes)
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
        args = [s.name, out.name]
        reads = [s.name]
        for key in kw.pop("weights", ()):
            w = layer.weights.get(key)
            if w is None:
                extra.append(None)
                args.append(s.name)  # an unused parameter slot
                continue
            c = self.const(f"{layer.name}/{key}", w, fp16)
            extra.append(gen.Operand("float32", gen.broadcast_strides(c.shape, c.strides, s.shape)))
            reads.append(c.name)
            args.append(c.name)
        kname = self._name(layer.name)
        src, n = gen.group_kernel(kname, s.shape, red, x, y, kind, extra, span=s.elements, **kw)
        self._gen(layer.name, kname, src, reads, [out.name], (max(1, -(-n // 256)),), args)

    def _gpool(self, label: str, xs: str, out: Slot, average: bool) -> None:
        """Global average/max over H*W of an NHWC fp16 tensor (a block-parallel reduction)."""
        n, c, h, w = self.slots[xs].shape
        ldy = out.strides[0] if out.layout == "nhwc" else c
        self.ops.append(Op(label, "gpool", [xs], [out.name],
                           info={"x": xs, "y": out.name, "n": n, "hw": h * w, "c": c, "ldy": ldy,
                                 "average": average}))

    def _l_reduce(self, layer: Layer) -> None:
        p = layer.params
        x = self.slots[layer.inputs[0]]
        axes = sorted(a % len(x.shape) for a in p.axes) if len(x.shape) == 4 else []
        if (axes == [2, 3] and x.layout == "nhwc" and x.dtype == "float16" and p.op.value in ("mean", "max")
                and self.dtypes[layer.outputs[0]] == "float16" and _prec(layer) is Precision.FP16):
            # (N, C, 1, 1) as NHWC, or (N, C) rows: both are y[n * ldy + c]
            out = self._new(layer.outputs[0], "nhwc" if p.keep_dims else "linear")
            self._gpool(layer.name, x.name, out, p.op.value == "mean")
            return
        self._group(layer, p.axes, "reduce", op=p.op.value, keep=p.keep_dims)

    def _l_softmax(self, layer: Layer) -> None:
        p = layer.params
        self._group(layer, (p.axis,), "logsoftmax" if p.log else "softmax")

    def _l_normalization(self, layer: Layer) -> None:
        p = layer.params
        self._group(layer, p.axes, "norm", eps=float(p.epsilon), weights=("scale", "bias"))

    def _l_lrn(self, layer: Layer) -> None:
        p = layer.params
        s = self.slots[layer.inputs[0]]
        out = self._new(layer.outputs[0], self._out_layout(layer))
        fp16 = _prec(layer) is Precision.FP16
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
        self._map(layer.name, out, [(s.name, s.operand(None, fp16))], body)

    # -------------------------------------------------------------- matmul and FC

    def _l_matrix_multiply(self, layer: Layer) -> None:
        p = layer.params
        a, b = (self.slots[t] for t in layer.inputs)
        out = self._new(layer.outputs[0])
        fp16 = _prec(layer) is Precision.FP16

        def mat(s: Slot, t: bool, is_a: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
            shape, st = list(s.shape), list(s.strides)
            if len(shape) == 1:
                shape, st = ([1, shape[0]], [0, st[0]]) if is_a else ([shape[0], 1], [st[0], 0])
            elif t:
                shape[-1], shape[-2] = shape[-2], shape[-1]
                st[-1], st[-2] = st[-2], st[-1]
            return tuple(shape), tuple(st)

        sa, ta = mat(a, p.transpose_a, True)
        sb, tb = mat(b, p.transpose_b, False)
        batch = tuple(np.broadcast_shapes(sa[:-2], sb[:-2]))
        m, k, n = sa[-2], sa[-1], sb[-1]
        ab = gen.broadcast_strides(sa[:-2], ta[:-2], batch) + ta[-2:]
        bb = gen.broadcast_strides(sb[:-2], tb[:-2], batch) + tb[-2:]
        full = (*batch, m, n)
        ys = list(gen.row_major(full))
        yop = gen.Operand(out.dtype, tuple(ys))
        kname = self._name(layer.name)
        src, total = gen.matmul_kernel(kname, batch, m, n, k, gen.Operand(a.operand(None, fp16).dtype, ab),
                                       gen.Operand(b.operand(None, fp16).dtype, bb), yop,
                                       span=max(a.elements, b.elements, out.elements))
        self._gen(layer.name, kname, src, [a.name, b.name], [out.name], (max(1, -(-total // 256)),),
                  [a.name, b.name, out.name])

    def _l_fully_connected(self, layer: Layer) -> None:
        p = layer.params
        x = self.slots[layer.inputs[0]]
        fp16 = _prec(layer) is Precision.FP16
        w = layer.weights["kernel"]
        kout, c = w.shape
        m = math.prod(x.shape[:-1])
        act = _fold_act(p.activation)
        if fp16 and c % 8 == 0 and kout % 8 == 0:
            xs = self.linear(layer.inputs[0], "float16")
            out = self._new(layer.outputs[0], "linear", "float16")
            g = ConvGeometry(m, 1, 1, c, kout, 1, 1)
            self._conv_op(layer, g, xs, out.name, w[:, :, None, None], layer.weights.get("bias"), act, None)
            return
        xs = self.slots[self.linear(layer.inputs[0])]
        out = self._new(layer.outputs[0])
        wk = self.const(f"{layer.name}/kernel", w, fp16)
        bias = layer.weights.get("bias")
        bk = self.const(f"{layer.name}/bias", bias, fp16) if bias is not None else None
        kname = self._name(layer.name)
        src, total = gen.matmul_kernel(kname, (), m, kout, c, gen.Operand(xs.operand(None, fp16).dtype, (c, 1)),
                                       gen.Operand("float32", (1, c)), gen.Operand(out.dtype, (kout, 1)),
                                       gen.Operand("float32", (1,)) if bk else None, act,
                                       span=max(xs.elements, out.elements, wk.elements))
        reads = [xs.name, wk.name] + ([bk.name] if bk else [])
        self._gen(layer.name, kname, src, reads, [out.name], (max(1, -(-total // 256)),),
                  [xs.name, wk.name, out.name] + ([bk.name] if bk else []))

    # -------------------------------------------------------------- convolution family

    def _conv_op(self, layer: Layer, g: ConvGeometry, xs: str, ys: str, kernel: np.ndarray, bias, act,
                 res: str | None, scale: str | None = None) -> None:
        from backends.gpu.layout import pack_conv_weights, pad_bias

        tactic = parse_tactic(self.tactics.get(layer.name, "")) or heuristic_tactic(g)
        wk = self.const(f"{layer.name}/kernel_krsc", pack_conv_weights(kernel.astype(np.float32)).astype(np.float16),
                        False)
        wk.const = wk.const.astype(np.float16)
        wk.dtype = "float16"
        bk = self.const(f"{layer.name}/bias_padded", pad_bias(None if bias is None else
                                                             bias.astype(np.float16).astype(np.float32), g.k), False)
        self.convs[layer.name] = g
        reads = [xs, wk.name, bk.name] + ([res] if res else []) + ([scale] if scale else [])
        self.ops.append(Op(layer.name, "conv", reads, [ys], info={"geom": g, "tactic": tactic, "act": act,
                                                                  "x": xs, "w": wk.name, "b": bk.name, "res": res,
                                                                  "y": ys, "scale": scale},
                           workspace=tactic.workspace_bytes(g)))

    def _s2d_input(self, tensor: str, g: ConvGeometry) -> tuple[str, ConvGeometry] | None:
        """An fp16 NHWC slot with the 2x2 space-to-depth of a float32 NCHW ``tensor`` and the stride-1
        geometry that reads it (``space_to_depth.space_to_depth_conv``), or None where that does not apply."""
        g2 = space_to_depth_conv(g)
        src = self.slots.get(tensor)
        if g2 is None or src is None or src.layout != "linear" or src.dtype != "float32" or len(src.shape) != 4:
            return None
        name = f"{tensor}@s2d"
        if name not in self.slots:
            out = Slot(name, (g2.n, g2.c, g2.h, g2.w), "float16", "nhwc")
            self.slots[name] = out
            self.ops.append(Op(f"to_s2d_{tensor}", "s2d", [src.name], [name],
                               info={"x": src.name, "y": name, "shape": src.shape}))
        return name, g2

    def _l_convolution(self, layer: Layer) -> None:
        p = layer.params
        n, c, h, w = self.net.tensors[layer.inputs[0]].shape  # an SE-scaled input has no slot
        kout = p.num_output_maps
        act = _fold_act(p.activation)
        fp16 = _prec(layer) is Precision.FP16
        res_t = layer.inputs[1] if p.residual else None
        kernel = layer.weights["kernel"]
        bias = layer.weights.get("bias")
        if fp16 and p.groups == 1:
            g = ConvGeometry(n, h, w, c, kout, *p.kernel, tuple(p.stride), tuple(p.pre_padding), tuple(p.dilation),
                             tuple(p.post_padding))
            se = self.se_scales.get(layer.inputs[0])
            s2d = None if se else self._s2d_input(layer.inputs[0], g)
            if s2d is not None:  # a stride-2 conv on <= 4 channels (a stem): stride 1 on 4C
                xs, g2 = s2d
                kernel = space_to_depth_kernel(np.asarray(kernel, np.float32), g)
                res = self.nhwc(res_t) if res_t else None
                out = self._new(layer.outputs[0], "nhwc")
                self._conv_op(layer, g2, xs, out.name, kernel, bias, act, res)
                return
            xs = self.nhwc(se[0] if se else layer.inputs[0])
            scale = self.nhwc(se[1]) if se else None
            res = self.nhwc(res_t) if res_t else None
            out = self._new(layer.outputs[0], "nhwc")
            self._conv_op(layer, g, xs, out.name, kernel, bias, act, res, scale)
            return
        if fp16 and p.groups == c == kout:
            from backends.gpu.layout import pack_depthwise_weights, pad_bias

            g = ConvGeometry(n, h, w, c, kout, *p.kernel, tuple(p.stride), tuple(p.pre_padding), tuple(p.dilation),
                             tuple(p.post_padding))
            xs = self.nhwc(layer.inputs[0])
            res = self.nhwc(res_t) if res_t else None
            out = self._new(layer.outputs[0], "nhwc")
            wk = self.const(f"{layer.name}/kernel_rsc", pack_depthwise_weights(kernel.astype(np.float32)), False)
            wk.const, wk.dtype = wk.const.astype(np.float16), "float16"
            bk = self.const(f"{layer.name}/bias_padded",
                            pad_bias(None if bias is None else bias.astype(np.float16).astype(np.float32), kout), False)
            self.ops.append(Op(layer.name, "depthwise", [xs, wk.name, bk.name] + ([res] if res else []), [out.name],
                               info={"geom": g, "act": act, "x": xs, "w": wk.name, "b": bk.name, "res": res,
                                     "y": out.name}))
            return
        self._direct(layer, transposed=False)

    def _l_deconvolution(self, layer: Layer) -> None:
        self._direct(layer, transposed=True)

    def _direct(self, layer: Layer, transposed: bool) -> None:
        p = layer.params
        x = self.slots[layer.inputs[0]]
        fp16 = _prec(layer) is Precision.FP16
        out = self._new(layer.outputs[0], "nhwc" if x.layout == "nhwc" and fp16 else "linear")
        n, c, h, w = x.shape
        _, kout, oh, ow = out.shape
        wk = self.const(f"{layer.name}/kernel", layer.weights["kernel"], fp16)
        bias = layer.weights.get("bias")
        bk = self.const(f"{layer.name}/bias", bias if bias is not None else np.zeros(kout, np.float32), fp16)
        res = self.slots[layer.inputs[1]] if getattr(p, "residual", False) else None
        kname = self._name(layer.name)
        src, total = gen.direct_conv_kernel(
            kname, n, c, h, w, kout, oh, ow, *p.kernel, tuple(p.stride), tuple(p.pre_padding), tuple(p.dilation),
            p.groups, x.operand(None, fp16), gen.Operand("float32", ()), gen.Operand(out.dtype, out.strides),
            True, res.operand(None, fp16) if res else None, _fold_act(p.activation), transposed,
            span=max(x.elements, out.elements))
        reads = [x.name, wk.name, bk.name] + ([res.name] if res else [])
        args = [x.name, wk.name, out.name, bk.name] + ([res.name] if res else [])
        self._gen(layer.name, kname, src, reads, [out.name], (max(1, -(-total // 256)),), args)
        if out.layout == "nhwc" and out.shape[1] % 8:
            self._zero_pad(out)

    def _zero_pad(self, out: Slot) -> None:
        """Padded channels of an NHWC tensor written by a kernel that iterates true channels only."""
        n, c, h, w = out.shape
        cp = round_up(c, 8)
        kname = self._name(f"zeropad_{out.name}")
        pad_op = gen.Operand(out.dtype, (h * w * cp, 1, w * cp, cp), c)
        src = gen.map_kernel(kname, (n, cp - c, h, w), pad_op, [], f"RAW yr = {gen.store(out.dtype, '0.f')};",
                             [0, 2, 3, 1], None, out.elements)
        self._gen(f"zeropad_{out.name}", kname, src, [], [out.name], gen.map_grid((n, cp - c, h, w)), [out.name])

    def _l_pooling(self, layer: Layer) -> None:
        p = layer.params
        x = self.slots[layer.inputs[0]]
        n, c, h, w = x.shape
        r = p.resolved((h, w))
        _, _, oh, ow = self.net.tensors[layer.outputs[0]].shape
        g = PoolGeometry(n, h, w, c, oh, ow, tuple(r.window), tuple(r.stride), tuple(r.pre_padding),
                         tuple(r.post_padding), tuple(r.dilation))
        xs = self.nhwc(layer.inputs[0])
        out = self._new(layer.outputs[0], "nhwc")
        if (oh, ow) == (1, 1) and g.window == (h, w) and not any(g.pad + g.pad_end) and g.dilation == (1, 1):
            self._gpool(layer.name, xs, out, r.type is PoolingType.AVERAGE)
            return
        self.ops.append(Op(layer.name, "pool", [xs], [out.name],
                           info={"geom": g, "average": r.type is PoolingType.AVERAGE,
                                 "count_pad": bool(r.count_include_pad), "x": xs, "y": out.name}))


def lower(network: Network, layers: list[Layer], outputs: list[str], tactics: dict[str, str] | None = None) -> Lowered:
    return Lowerer(network, layers, outputs, tactics).lower()

