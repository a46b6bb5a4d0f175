"""Lowering of INT8 layers (convolution, depthwise convolution, fully connected, pooling) onto the
integer GPU kernels.

Inside a GPU segment an INT8 result stays an int8 device tensor (``q8`` slots: NHWC with channels
padded to 16, or rows padded to 16 for FC) together with its scale. The host convention (float32
``q * scale`` between layers, ``backends.reference.int8``) appears only where a float consumer or
the segment's caller needs the tensor: a dequantize kernel then writes the float32 value, the
exact bits the reference stores. An INT8 consumer whose input scale equals the producer's output
scale reads the int8 tensor directly (the reference recovers the same q from the float value);
any other input is quantized with the reference's float32 ``rint(x / s)``.

No CUDA here: like ``lower``, this runs and is tested on any machine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from backends.gpu.kernels import gen, gen_c16
from backends.gpu.kernels.conv import ConvGeometry
from backends.gpu.kernels.direct import PoolGeometry
from backends.gpu.kernels.int8 import (
    MAX_KTOT,
    cp16,
    epilogue_params,
    heuristic_tactic8,
    merge_groups8,
    merge_plan8,
    pack_weights8,
    parse_tactic8,
    quantized_kernel,
    runs_here8,
)
from backends.gpu.kernels.int8_dw import pack_dw_weights8
from backends.gpu.layout import round_up
from backends.gpu.space_to_depth import space_to_depth_conv, space_to_depth_kernel
from backends.table import Unsupported, check_complete, lookup
from engine.ir import int8_annotation as annotation
from engine.ir.dtypes import Precision
from engine.ir.errors import UnsupportedError
from engine.ir.int8_rules import nonlinear_epilogue
from engine.ir.layers import ElementWiseOp, LayerKind, PoolingType
from engine.ir.network import Layer, Network

if TYPE_CHECKING:
    from backends.gpu.lowering.slots import Slot


def dequant_c(q: str, scale: float) -> str:
    """C of the reference's dequantization of int8 ``q``: the float32 product with the scale."""
    return f"((float){q} * {float(scale)!r}f)"


def quant_c(v: str, scale: float) -> str:
    """C statements of the reference's quantization of float ``v`` into ``yr``: float32
    ``rint(v / scale)``, saturated to int8, NaN to 0."""
    return (f"float qv = rintf({v} / {float(np.float32(scale))!r}f); "
            "yr = qv != qv ? (signed char)0 : (signed char)fminf(fmaxf(qv, -128.f), 127.f);")


def is_int8(layer: Layer) -> bool:
    """An INT8 layer the INT8 lowering runs (others fall back, see ``supports_int8``)."""
    return layer.precision is Precision.INT8 and not isinstance(INT8_LOWERINGS[layer.kind], Unsupported)


def supports_int8(layer: Layer, network: Network) -> tuple[bool, str]:
    """Whether an INT8 layer has a GPU kernel; the reason otherwise (where the reference would
    raise, the layer falls back so that the reference reports it)."""
    k = layer.kind
    entry = INT8_LOWERINGS[k]
    if isinstance(entry, Unsupported):
        return False, entry.reason
    try:
        spec = annotation.read(layer)
    except UnsupportedError as e:
        return False, str(e)
    shape0 = network.tensors[layer.inputs[0]].shape
    if k is LayerKind.POOLING:
        if len(shape0) != 4:
            return False, "INT8 pooling other than 2-D has no GPU kernel"
        p = layer.params.resolved(shape0[2:])
        if p.type not in (PoolingType.MAX, PoolingType.AVERAGE):
            return False, f"INT8 {p.type.value} pooling has no GPU kernel"
        if any(d != 1 for d in p.dilation) or p.ceil_mode:
            return False, "INT8 pooling with dilation or ceil_mode has no GPU kernel"
        if spec.output_scale is not None and np.float32(spec.output_scale) != np.float32(spec.input_scales[0]):
            return False, "INT8 pooling needs equal input and output scales"
        if p.type is PoolingType.AVERAGE and any(p.pre_padding + p.post_padding) and not p.count_include_pad:
            return False, "INT8 average pooling divides by the full window; padding excluded from the count"
        return True, ""
    p = layer.params
    if k is LayerKind.CONVOLUTION:
        if len(shape0) != 4 or len(p.kernel) != 2:
            return False, "INT8 convolution other than 2-D has no GPU kernel"
        depthwise = p.groups != 1 and is_depthwise8(layer, network)
        merge = 1
        if p.groups != 1 and not depthwise:
            cg, kg = shape0[1] // p.groups, p.num_output_maps // p.groups
            plan = merge_plan8(p.groups, cg, kg)
            if plan is None:
                return False, (f"grouped INT8 convolution (not depthwise, groups == C == K) with "
                               f"{cg} input and {kg} output channels per group has no GPU kernel: no merge of "
                               f"at most 8 groups makes both multiples of 16")
            merge, total = plan
            if total != p.groups and (spec.output_scale is None or nonlinear_epilogue(p.activation) is not None):
                # the phantom channels would read float / non-linear constants past the layer's K
                return False, (f"grouped INT8 convolution with {p.groups} groups of {cg} -> {kg} channels: "
                               f"its uneven merge has a GPU kernel for an int8 output with a linear activation "
                               f"only")
        # a depthwise sum has R*S terms per channel; the reduction bound is the same per term
        ktot = p.kernel[0] * p.kernel[1] * (1 if depthwise else cp16(shape0[1]) if p.groups == 1
                                            else merge * shape0[1] // p.groups)
    else:
        ktot = cp16(shape0[-1])
    if ktot > MAX_KTOT:
        return False, f"INT8 reduction of {ktot} exceeds the exact int32 accumulator bound {MAX_KTOT}"
    try:
        epilogue_params(layer, p.activation, spec.input_scales[1] if getattr(p, "residual", False) else None,
                        quantized_kernel(layer))
    except UnsupportedError as e:
        return False, str(e)
    return True, ""


def is_depthwise8(layer: Layer, network: Network) -> bool:
    """A depthwise convolution the INT8 depthwise kernel runs: groups == C == K (multiplier 1)."""
    p = layer.params
    c = network.tensors[layer.inputs[0]].shape[1]
    return p.groups > 1 and p.groups == c == p.num_output_maps


def _placement(s: Slot) -> list[tuple[int, int]]:
    """(size, element stride) of each dim of ``s`` larger than 1: two slots with the same list and
    byte count, one a reshape of the other, put every element at the same byte."""
    return [(d, st) for d, st in zip(s.shape, s.strides, strict=True) if d != 1]


class Int8Lowering:
    """Mixed into ``lower.Lowerer``: the INT8 layers and their int8 <-> float conversions."""

    # provided by Lowerer
    net: Network
    layers: list[Layer]
    want: list[str]
    slots: dict[str, Slot]
    ops: list
    dtypes: dict[str, str]

    def _init_int8(self) -> None:
        self.q8: dict[str, tuple[str, np.float32]] = {}  # tensor -> (its int8 slot, scale)
        self._q8_cache: dict[tuple[str, float, str], str] = {}
        self._consumers = self.net.consumers()
        self._segment = {la.name for la in self.layers}

    # -------------------------------------------------------------- conversions

    def _q8_slot(self, name: str, shape: tuple[int, ...], layout: str) -> Slot:
        from backends.gpu.lowering.slots import Slot

        s = Slot(name, tuple(shape), "int8", layout)
        self.slots[name] = s
        return s

    def float_of(self, tensor: str) -> str:
        """Make sure ``tensor`` has its float slot (dequantizing an int8 result if needed): linear in
        the tensor's storage dtype (float32 for INT8 results), or NHWC fp16 when only FP16
        convolutions read it (they would convert the float32 slot to that: one kernel instead of two,
        the same fp16 rounding of the float32 product)."""
        if tensor in self.slots or tensor not in self.q8:
            return tensor
        qname, scale = self.q8[tensor]
        q = self.slots[qname]
        if q.layout == "nhwc16" and self._read_as_nhwc_only(tensor):
            out = self.new_slot(tensor, "nhwc", "float16")
        else:
            out = self.new_slot(tensor)
        self.emit_map(f"dequant_{tensor}", out, [(q.name, q.operand())], f"y = {dequant_c('X0', scale)};")
        return tensor

    def _read_as_nhwc_only(self, tensor: str) -> bool:
        """Whether every reader of ``tensor`` is an FP16 2-D convolution of this segment (each takes
        its inputs as NHWC fp16, ``Lowerer.nhwc``) and it is not an output."""
        from backends.gpu.lowering.slots import prec

        users = self._consumers.get(tensor, [])
        return (bool(users) and tensor not in self.want and tensor not in self.net.outputs
                and len(self.net.tensors[tensor].shape) == 4
                and all(u.kind is LayerKind.CONVOLUTION and u.name in self._segment and not is_int8(u)
                        and prec(u) is Precision.FP16 and tensor not in u.inputs[2:] for u in users))

    def q8_input(self, tensor: str, scale: float, layout: str) -> str:
        """An int8 slot of ``tensor`` quantized with ``scale`` in ``layout`` ('nhwc16' or 'rows16')."""
        s32 = np.float32(scale)
        own = self.q8.get(tensor)
        if own is not None and own[1] == s32 and self.slots[own[0]].layout == layout:
            return own[0]
        key = (tensor, float(s32), layout)
        if key in self._q8_cache:
            return self._q8_cache[key]
        if layout == "nhwc16":  # int8 sources through layers that only move channels: one int8 launch
            from backends.gpu.lowering.int8_gather import int8_gather

            gathered = int8_gather(self, tensor, s32)
            if gathered is not None:
                self._q8_cache[key] = gathered
                return gathered
        src = self.slots[self.float_of(tensor)]
        name = f"{tensor}@q8_{len(self._q8_cache)}"
        out = self._q8_slot(name, src.shape, layout)
        if layout == "nhwc16" and self._plain_nchw(src):
            self._quant8_op(tensor, src, out, s32, s2d=False)
            self._q8_cache[key] = name
            return name
        rank = len(src.shape)
        if layout == "nhwc16":
            order, zero = [0, 2, 3, 1], (1, cp16(src.shape[1]))
        else:
            order, zero = list(range(rank)), (rank - 1, cp16(src.shape[-1]))
        kname = self.kernel_name(f"quant_{tensor}")
        body = f"FLT RAW {quant_c('X0', s32)}"
        src_code = gen.map_kernel(kname, src.shape, gen.Operand("int8", out.strides), [src.operand()], body, order,
                                  zero, max(out.elements, src.elements))
        self.emit(f"quant_{tensor}", kname, src_code, [src.name], [out.name], gen.map_grid(src.shape, zero),
                  [out.name, src.name])
        self._q8_cache[key] = name
        return name

    def lower_int8_bridge(self, layer: Layer) -> bool:
        """An FP16 element-wise product, sum, difference or quotient between INT8 layers (an INT8
        squeeze-excitation's ``x * gate`` feeding the project convolution) as one int8 -> int8 kernel.

        Unfused it is three passes over the block's activation: dequantize the int8 input to a float32
        NCHW tensor, the element-wise layer in fp16, quantize for the consumer (about 7x the bytes of
        one int8 pass). The fused kernel takes the same float steps in the same order (dequantize in
        float32, round the operand to fp16 as the FP16 layer reads it, the operation in float32,
        round to the output's storage type, divide by the consumer's scale, round, saturate), so
        its int8 result is the three kernels' bit for bit. Applies when exactly one input is an int8
        result here, the output is read only by one INT8 convolution or pooling of this segment (as
        its data input) and is not a wanted output; returns False to leave the layer as it is.
        """
        from backends.gpu.lowering.pointwise import _BINARY_C
        from backends.gpu.lowering.slots import prec

        p = layer.params
        if (layer.kind is not LayerKind.ELEMENTWISE or prec(layer) is not Precision.FP16
                or p.op not in (ElementWiseOp.PROD, ElementWiseOp.SUM, ElementWiseOp.SUB, ElementWiseOp.DIV)):
            return False
        t = layer.outputs[0]
        shape = self.net.tensors[t].shape
        users = self._consumers.get(t, [])
        if (t in self.want or t in self.net.outputs or len(shape) != 4 or len(users) != 1 or not is_int8(users[0])
                or users[0].name not in self._segment or users[0].kind not in (LayerKind.CONVOLUTION,
                                                                                LayerKind.POOLING)
                or users[0].inputs[0] != t or t in users[0].inputs[1:]
                or self.dtypes.get(t) not in ("float16", "float32")):
            return False
        q_in = [i for i, x in enumerate(layer.inputs) if x in self.q8 and x not in self.slots]
        if len(q_in) != 1 or layer.inputs[0] == layer.inputs[1]:
            return False
        qi = q_in[0]
        qname, sa = self.q8[layer.inputs[qi]]
        q = self.slots[qname]
        if q.layout != "nhwc16" or q.shape != shape:
            return False
        other = self.slots[self.float_of(layer.inputs[1 - qi])]
        so = np.float32(annotation.read(users[0]).input_scales[0])
        out = self._q8_slot(f"{t}@q8", shape, "nhwc16")
        ins = [None, None]
        ins[qi] = (q.name, q.operand(shape))
        ins[1 - qi] = (other.name, other.operand(shape, True))
        xq, xf = f"X{qi}", f"X{1 - qi}"
        dq = f"h2f(f2h({dequant_c(xq, sa)}))"
        a, b = (dq, xf) if qi == 0 else (xf, dq)
        stored = "h2f(f2h(y))" if self.dtypes[t] == "float16" else "y"
        body = f"FLT RAW float a = {a}, b = {b}; float y = {_BINARY_C[p.op]}; y = {stored}; {quant_c('y', so)}"
        kname = self.kernel_name(f"{layer.name}_int8")
        cp = cp16(shape[1])
        yop, span = gen.Operand("int8", out.strides), max(out.elements, q.elements, other.elements)
        if gen_c16.is_c16_vector(yop, cp):  # 16 channels a thread, the int8 tensors as 16-byte vectors
            src = gen_c16.map_kernel_c16(kname, shape, cp, yop, [o for _, o in ins], body, span)
            grid = gen_c16.map_grid_c16(shape, cp)
        else:
            src = gen.map_kernel(kname, shape, yop, [o for _, o in ins], body, [0, 2, 3, 1], (1, cp), span)
            grid = gen.map_grid(shape, (1, cp))
        self.emit(f"{layer.name}_int8", kname, src, [n for n, _ in ins], [out.name], grid,
                  [out.name, *[n for n, _ in ins]])
        self.q8[t] = (out.name, so)
        return True

    def lower_int8_move(self, layer: Layer) -> None:
        """A reshape of an int8 result whose bytes already are its output in an int8 layout (a global
        pooling's (N, C, 1, 1) flattened to (N, C) for the classifier): the output's int8 slot
        aliases the input's, so an INT8 reader at the same scale takes it without the dequantize ->
        reshape -> quantize round trip. The layer is still lowered in float for any float reader;
        launches nothing reads are dropped (``views.drop_dead_ops``)."""
        from backends.gpu.lowering.movement import _identity
        from backends.gpu.lowering.slots import Slot

        if layer.kind is not LayerKind.SHUFFLE or len(layer.inputs) != 1:
            return
        x, t = layer.inputs[0], layer.outputs[0]
        if x not in self.q8 or t in self.q8 or not (_identity(layer.params.first_perm)
                                                    and _identity(layer.params.second_perm)):
            return
        qname, scale = self.q8[x]
        src = self.slots[qname]
        shape = self.net.tensors[t].shape
        for layout in ("nhwc16", "rows16") if len(shape) == 4 else ("rows16",):
            out = Slot(f"{t}@q8", tuple(shape), "int8", layout, alias=src.alias or src.name)
            if out.nbytes == src.nbytes and _placement(out) == _placement(src):
                self.slots[out.name] = out
                self.q8[t] = (out.name, scale)
                return

    @staticmethod
    def _plain_nchw(src: Slot) -> bool:
        return src.layout == "linear" and src.dtype == "float32" and len(src.shape) == 4

    def _quant8_op(self, tensor: str, src: Slot, out: Slot, scale: np.float32, s2d: bool) -> None:
        """float32 NCHW -> int8 NHWC16 in one vectorized kernel (``int8.quantize_nchw``)."""
        from backends.gpu.lowering.slots import Op

        self.ops.append(Op(f"quant_{tensor}" + ("_s2d" if s2d else ""), "quant8", [src.name], [out.name],
                           info={"x": src.name, "y": out.name, "shape": src.shape, "scale": float(scale),
                                 "s2d": s2d}))

    def q8_s2d_input(self, tensor: str, scale: float, g2: ConvGeometry) -> str | None:
        """The 2x2 space-to-depth int8 input of ``g2`` (``space_to_depth.space_to_depth_conv``) quantized from
        the float NCHW ``tensor``; None when ``tensor`` is not a plain float NCHW tensor here, or
        already is an int8 tensor of this scale (then the direct convolution reads it as it is)."""
        s32 = np.float32(scale)
        own = self.q8.get(tensor)
        if own is not None and own[1] == s32:
            return None
        key = (tensor, float(s32), "s2d")
        if key in self._q8_cache:
            return self._q8_cache[key]
        src = self.slots[self.float_of(tensor)]
        if not self._plain_nchw(src):
            return None
        name = f"{tensor}@q8s2d_{len(self._q8_cache)}"
        out = self._q8_slot(name, (g2.n, g2.c, g2.h, g2.w), "nhwc16")
        self._quant8_op(tensor, src, out, s32, s2d=True)
        self._q8_cache[key] = name
        return name

    # -------------------------------------------------------------- layers

    def _gemm8(self, layer: Layer, g: ConvGeometry, xs: str, out_shape: tuple[int, ...], q_layout: str,
               kernel: np.ndarray, res: str | None, residual_scale: float | None) -> None:
        from backends.gpu.lowering.slots import Op

        epi = epilogue_params(layer, layer.params.activation, residual_scale, kernel)
        out, ldy = self._out8(layer, g.k, out_shape, q_layout, epi.quantized)
        wk = self.const(f"{layer.name}/kernel_krsc_s8", pack_weights8(kernel), False)
        tactic = parse_tactic8(self.tactics.get(layer.name, "")) or heuristic_tactic8(g)
        if not runs_here8(tactic, g, ldy):  # a Hopper plan on another GPU, a forged or stale entry
            tactic = heuristic_tactic8(g)  # the tiles run every layer
        reads = [xs, wk.name] + ([res] if res else [])
        self.ops.append(Op(layer.name, "conv8", reads, [out.name],
                           info={"geom": g, "tactic": tactic, "epi": epi, "x": xs, "w": wk.name, "res": res,
                                 "y": out.name, "ldy": ldy},
                           workspace=tactic.workspace_bytes(g)))

    def _out8(self, layer: Layer, k: int, out_shape: tuple[int, ...], q_layout: str, quantized: bool
              ) -> tuple[Slot, int]:
        """The output slot of an INT8 conv/FC and its channel stride: int8 with the layer's output
        scale, else float32 (a layer without an output scale)."""
        t = layer.outputs[0]
        if quantized:
            out = self._q8_slot(f"{t}@q8", out_shape, q_layout)
            self.q8[t] = (out.name, np.float32(annotation.read(layer).output_scale))
            return out, cp16(k)
        if q_layout == "nhwc16":
            return self.new_slot(t, "nhwc"), round_up(k, 8)  # float32 NHWC, channel stride round_up(K, 8)
        return self.new_slot(t), k  # float32 rows of K

    def _dw8(self, layer: Layer, g: ConvGeometry, kernel: np.ndarray) -> None:
        """An INT8 depthwise convolution: ``int8_dw.dwconv2d_s8`` (one thread per 16 channels of a pixel)."""
        from backends.gpu.lowering.slots import Op

        p = layer.params
        spec = annotation.read(layer)
        xs = self.q8_input(layer.inputs[0], spec.input_scales[0], "nhwc16")
        res, rs = None, None
        if p.residual:
            rs = spec.input_scales[1]
            res = self.q8_input(layer.inputs[1], rs, "nhwc16")
        epi = epilogue_params(layer, p.activation, rs, kernel)
        out, ldy = self._out8(layer, g.k, self.net.tensors[layer.outputs[0]].shape, "nhwc16", epi.quantized)
        wk = self.const(f"{layer.name}/kernel_rsc_s8", pack_dw_weights8(kernel), False)
        self.ops.append(Op(layer.name, "dwconv8", [xs, wk.name] + ([res] if res else []), [out.name],
                           info={"geom": g, "epi": epi, "x": xs, "w": wk.name, "res": res, "y": out.name,
                                 "ldy": ldy}))

    def _l_int8_convolution(self, layer: Layer) -> None:
        p = layer.params
        spec = annotation.read(layer)
        n, c, h, w = self.net.tensors[layer.inputs[0]].shape
        g = ConvGeometry(n, h, w, c, p.num_output_maps, *p.kernel, tuple(p.stride), tuple(p.pre_padding),
                         tuple(p.dilation), tuple(p.post_padding))
        kernel = quantized_kernel(layer)
        if p.groups != 1 and is_depthwise8(layer, self.net):
            self._dw8(layer, g, kernel)
            return
        xs = None
        if p.groups != 1:  # grouped: one implicit GEMM per group, adjacent groups merged to 16 channels
            merged = merge_groups8(kernel, g, p.groups)
            assert merged is not None, "supports_int8 admits only mergeable groups"
            kernel, g = merged
        elif (g2 := space_to_depth_conv(g)) is not None:
            xs = self.q8_s2d_input(layer.inputs[0], spec.input_scales[0], g2)
            if xs is not None:  # a stride-2 conv on <= 4 channels (a stem): stride 1 on 4C, same sums
                g, kernel = g2, space_to_depth_kernel(kernel, g)
        if xs is None:
            xs = self.q8_input(layer.inputs[0], spec.input_scales[0], "nhwc16")
        res, rs = None, None
        if p.residual:
            rs = spec.input_scales[1]
            res = self.q8_input(layer.inputs[1], rs, "nhwc16")
        self._gemm8(layer, g, xs, self.net.tensors[layer.outputs[0]].shape, "nhwc16", kernel, res, rs)

    def _l_int8_fully_connected(self, layer: Layer) -> None:
        spec = annotation.read(layer)
        shape = self.net.tensors[layer.inputs[0]].shape
        wq = quantized_kernel(layer)
        kout, c = wq.shape
        g = ConvGeometry(math.prod(shape[:-1]), 1, 1, c, kout, 1, 1)
        xs = self.q8_input(layer.inputs[0], spec.input_scales[0], "rows16")
        self._gemm8(layer, g, xs, self.net.tensors[layer.outputs[0]].shape, "rows16", wq[:, :, None, None],
                    None, None)

    def _l_int8_pooling(self, layer: Layer) -> None:
        from backends.gpu.lowering.slots import Op

        spec = annotation.read(layer)
        n, c, h, w = self.net.tensors[layer.inputs[0]].shape
        r = layer.params.resolved((h, w))
        _, _, oh, ow = self.net.tensors[layer.outputs[0]].shape
        g = PoolGeometry(n, h, w, c, oh, ow, tuple(r.window), tuple(r.stride), tuple(r.pre_padding),
                         tuple(r.post_padding), tuple(r.dilation))
        xs = self.q8_input(layer.inputs[0], spec.input_scales[0], "nhwc16")
        t = layer.outputs[0]
        out = self._q8_slot(f"{t}@q8", self.net.tensors[t].shape, "nhwc16")
        self.q8[t] = (out.name, np.float32(spec.input_scales[0]))
        self.ops.append(Op(layer.name, "pool8", [xs], [out.name],
                           info={"geom": g, "average": r.type is PoolingType.AVERAGE, "x": xs, "y": out.name}))

    def lower_int8(self, layer: Layer) -> None:
        lookup(INT8_LOWERINGS, layer, "GPU INT8")(self, layer)


# The GPU backend's INT8 layer table (``backends.table``).
INT8_LOWERINGS: dict[LayerKind, Callable[[Int8Lowering, Layer], None] | Unsupported] = {
    k: Unsupported(f"INT8 {k.value} has no GPU kernel (INT8 runs convolution, fully connected and pooling)")
    for k in LayerKind}
INT8_LOWERINGS.update({LayerKind.CONVOLUTION: Int8Lowering._l_int8_convolution,
                       LayerKind.FULLY_CONNECTED: Int8Lowering._l_int8_fully_connected,
                       LayerKind.POOLING: Int8Lowering._l_int8_pooling})
check_complete(INT8_LOWERINGS, "GPU INT8")
