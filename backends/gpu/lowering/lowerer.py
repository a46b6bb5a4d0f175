"""The GPU lowering driver: one segment's layers, in order, through the GPU layer table.

``Lowerer`` holds the segment's slots and launches and the helpers every layer family uses
(new slots, generated kernels, layout conversions, uploaded weights); each layer kind's lowering
lives in its family module and is found through ``backends.gpu.lowering.table.GPU_LOWERINGS``.
Pure Python and numpy: nothing here touches CUDA, so lowering runs and is tested on any machine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from backends.gpu.kernels import gen
from backends.gpu.kernels.conv import ConvGeometry
from backends.gpu.kernels.gen_vec import map_vector
from backends.gpu.layout import round_up
from backends.gpu.lower_int8 import Int8Lowering, is_int8
from backends.gpu.lowering.attention import find_attention, lower_attention
from backends.gpu.lowering.concat_reads import find_concat_reads
from backends.gpu.lowering.fc_residual import find_fc_residuals
from backends.gpu.lowering.mlp import find_mlps, lower_mlp
from backends.gpu.lowering.movement import concat_layout, view_operand
from backends.gpu.lowering.norm_residual import find_norm_residuals
from backends.gpu.lowering.row_maps import find_row_maps
from backends.gpu.lowering.slots import Lowered, Op, Slot, prec
from backends.gpu.lowering.table import GPU_LOWERINGS
from backends.gpu.lowering.views import View, drop_dead_ops
from backends.table import lookup
from engine.ir.dtypes import Precision
from engine.ir.layers import ElementWiseOp, LayerKind
from engine.ir.memory import storage_dtypes
from engine.ir.network import Layer, Network
from engine.ir.partition_io import partition_io


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
        self.inputs: list[str] = list(partition_io(network, layers).inputs)  # staged from outside
        self.src: list[str] = []
        self.convs: dict[str, ConvGeometry] = {}
        self.se_scales: dict[str, tuple[str, str]] = {}
        self.views: dict[str, View] = {}  # movement outputs as strided views of their chain's first slot
        self.fc_residuals: dict[str, tuple[Layer, str, Layer | None]] = {}  # FC -> (add, residual, permute)
        self.concat_reads: dict[str, Layer] = {}  # concatenations their element-wise reader reads in place
        self.norm_residuals: dict[str, tuple[Layer, str]] = {}  # norm -> (the add it stores, the residual)
        self.row_maps: dict[str, Layer] = {}  # reduction -> the reader that maps its rows in its kernel
        self._n = 0
        self._init_int8()
        for t in self.inputs:
            self.slots[t] = Slot(t, network.tensors[t].shape, self.dtypes[t])

    def kernel_name(self, base: str) -> str:
        self._n += 1
        clean = "".join(ch if ch.isalnum() else "_" for ch in base)[:40]
        return f"k{self._n}_{clean}"

    def new_slot(self, tensor: str, layout: str = "linear", dtype: str | None = None, name: str | None = None) -> Slot:
        s = Slot(name or tensor, self.net.tensors[tensor].shape, dtype or self.dtypes[tensor], layout)
        self.slots[s.name] = s
        return s

    def alias_slot(self, tensor: str, layout: str, of: Slot) -> Slot:
        """A slot for ``tensor`` that is ``of``'s bytes read in ``layout`` (the caller checked that
        every element sits where ``layout`` puts it): no launch."""
        s = Slot(tensor, self.net.tensors[tensor].shape, of.dtype, layout, alias=of.alias or of.name)
        if s.nbytes != of.nbytes:
            raise ValueError(f"alias {tensor} ({s.nbytes} bytes) of {of.name} ({of.nbytes} bytes)")
        self.slots[s.name] = s
        return s

    def emit(self, label: str, kname: str, source: str, reads: list[str], writes: list[str], grid: tuple[int, ...],
             args: list[Any]) -> None:
        self.src.append(source)
        self.ops.append(Op(label, "gen", reads, writes, args, grid, kname))

    def emit_map(self, label: str, out: Slot, ins: list[tuple[str, gen.Operand]], body: str,
                 out_op: gen.Operand | None = None, iter_shape: tuple[int, ...] | None = None, span: int = 0) -> None:
        shape = iter_shape or out.shape
        order, zero = None, None
        if out.layout == "nhwc" and out_op is None:
            order, zero = [0, 2, 3, 1], (1, round_up(out.shape[1], 8))
        kname = self.kernel_name(label)
        yop = out_op or gen.Operand(out.dtype, out.strides)
        span = max([span, out.elements] + [self.slots[n].elements for n, _ in ins if n in self.slots])
        vec = map_vector(shape, yop, order, zero, [o for _, o in ins], body) if out_op is None else 1
        src = gen.map_kernel(kname, shape, yop, [o for _, o in ins], body, order, zero, span, vec)
        self.emit(label, kname, src, [n for n, _ in ins], [out.name], gen.map_grid(shape, zero, vec),
                  [out.name, *[n for n, _ in ins]])

    def nhwc(self, tensor: str) -> str:
        """A slot holding ``tensor`` as NHWC fp16 (a conversion kernel if it is not one already)."""
        s = self.slots[tensor]
        if s.layout == "nhwc" and s.dtype == "float16":
            return s.name
        conv_name = f"{tensor}@nhwc"
        if conv_name not in self.slots:
            out = self.new_slot(tensor, "nhwc", "float16", conv_name)
            # a slice's or a transpose's copy: read its root instead
            self.emit_map(f"to_nhwc_{tensor}", out, [view_operand(self, tensor, s.shape)], "y = X0;")
        return conv_name

    def linear(self, tensor: str, dtype: str | None = None) -> str:
        """A row-major slot holding ``tensor`` (in ``dtype``, default its own)."""
        s = self.slots[tensor]
        dtype = dtype or s.dtype
        if s.layout == "linear" and s.dtype == dtype:
            return s.name
        name = f"{tensor}@linear_{dtype}"
        if name not in self.slots:
            out = self.new_slot(tensor, "linear", dtype, name)
            raw = s.dtype == dtype or not gen.can_load_float(s.dtype) or not gen.can_load_float(dtype)
            self.emit_map(f"to_linear_{tensor}", out, [(s.name, s.operand())], "RAW yr = X0;" if raw else "y = X0;")
        return name

    def const(self, key: str, value: np.ndarray, fp16_round: bool) -> Slot:
        """Upload a weight as fp32 (first rounded to fp16 for an FP16 layer, as the reference does)."""
        v = np.asarray(value)
        if v.dtype.kind == "f":
            v = v.astype(np.float16).astype(np.float32) if fp16_round else v.astype(np.float32)
        s = Slot(key, tuple(v.shape), v.dtype.name, "linear", np.ascontiguousarray(v))
        self.slots[key] = s
        return s

    def const_fp16(self, key: str, value: np.ndarray) -> Slot:
        """Upload a weight stored as fp16 (what the tensor-core kernels and cuBLASLt read), its
        values rounded to fp16 as the reference rounds an FP16 layer's."""
        s = self.const(key, value, True)
        s.const, s.dtype = s.const.astype(np.float16), "float16"
        return s

    def const_bias(self, key: str, bias: np.ndarray | None, k: int) -> Slot:
        """An FP16 layer's bias for the tile, depthwise and direct grouped kernels: fp32, its values
        rounded to fp16 (as the reference rounds them), zero-padded to Kp (``layout.pad_bias``)."""
        from backends.gpu.layout import pad_bias

        return self.const(key, pad_bias(None if bias is None else bias.astype(np.float16).astype(np.float32), k),
                          False)

    def fc_output(self, fc: Layer) -> tuple[str | None, Slot]:
        """(the residual an FC's epilogue adds or None, the slot the FC writes): with an absorbed add
        (``fc_residuals``) the add's output, as NHWC where a permute sits between them (the same
        bytes), else the FC's own output; linear fp16 otherwise."""
        add = self.fc_residuals.get(fc.name)
        if add is None:
            return None, self.new_slot(fc.outputs[0], "linear", "float16")
        through_permute = add[2] is not None
        res = self.nhwc(add[1]) if through_permute else self.linear(add[1], "float16")
        return res, self.new_slot(add[0].outputs[0], "nhwc" if through_permute else "linear", "float16")

    def out_layout(self, layer: Layer) -> str:
        """NHWC for a float rank-4 output of an element-wise layer whose first input is NHWC."""
        t = layer.outputs[0]
        x = self.slots.get(layer.inputs[0]) if layer.inputs else None
        shape = self.net.tensors[t].shape
        concat = self.concat_reads.get(layer.inputs[0]) if layer.inputs else None
        x_nhwc = x.layout == "nhwc" if x is not None else concat is not None and concat_layout(self, concat) == "nhwc"
        if (x_nhwc and len(shape) == 4 and self.dtypes[t] == "float16"
                and self.net.tensors[layer.inputs[0]].shape == shape):
            return "nhwc"
        return "linear"

    def sole_reader(self, tensor: str) -> Layer | None:
        """The one layer reading ``tensor`` when nothing else needs it (it is no output of the
        segment or the network): a fusion may then keep the tensor out of memory."""
        readers = self._consumers.get(tensor, [])
        if len(readers) != 1 or tensor in self.want or tensor in self.net.outputs:
            return None
        return readers[0]

    def _find_se_scales(self) -> dict[str, tuple[str, str]]:
        """Squeeze-excitation multiplies folded into the next 1x1 convolution's input loads.

        ``y = x * s`` with s of shape (N, C, 1, 1), read only by an FP16 1x1 group-1 convolution
        of this segment as its data input: the convolution reads x and s instead (one pass over
        the largest tensor of the block saved). Returns {y: (x, s)}.
        """
        found: dict[str, tuple[str, str]] = {}
        for la in self.layers:
            if (la.kind is not LayerKind.ELEMENTWISE or la.params.op is not ElementWiseOp.PROD
                    or prec(la) is not Precision.FP16 or is_int8(la)):
                continue
            y = la.outputs[0]
            conv = self.sole_reader(y)
            if conv is None:
                continue
            cp = conv.params
            if (conv.kind is not LayerKind.CONVOLUTION or not any(conv is c for c in self.layers)
                    or prec(conv) is not Precision.FP16 or conv.inputs[0] != y or y in conv.inputs[1:]
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
        fused = find_attention(self)
        absorbed = {name for m in fused.values() for name in m.absorbed}
        # an add that attention absorbs (an FC computing the scores' bias) stays the attention's
        self.fc_residuals = {fc: v for fc, v in find_fc_residuals(self).items()
                             if fc not in absorbed and v[0].name not in absorbed}
        absorbed |= {la.name for add, _, shuffle in self.fc_residuals.values() for la in (add, shuffle) if la}
        mlps = {fc2: m for fc2, m in find_mlps(self).items() if not {fc2, m.fc1.name} & absorbed}
        absorbed |= {m.fc1.name for m in mlps.values()}
        self.norm_residuals = find_norm_residuals(self, absorbed)
        absorbed |= {add.name for add, _ in self.norm_residuals.values()}
        self.row_maps = find_row_maps(self, absorbed)
        absorbed |= {reader.name for reader in self.row_maps.values()}
        self.concat_reads = find_concat_reads(self, absorbed)
        for layer in self.layers:
            if layer.name in absorbed:
                continue
            if layer.name in fused:
                lower_attention(self, fused[layer.name])
                continue
            if layer.name in mlps:
                lower_mlp(self, mlps[layer.name])
                continue
            if is_int8(layer):
                self.lower_int8(layer)
                continue
            if self.lower_int8_bridge(layer):
                continue
            self.lower_int8_move(layer)
            for t in layer.inputs:
                self.float_of(t)
                for u in self.concat_reads[t].inputs if t in self.concat_reads else ():
                    self.float_of(u)
            lookup(GPU_LOWERINGS, layer, "GPU").lower(self, layer)
        outputs = {t: self.linear(self.float_of(t), self.dtypes[t]) for t in self.want}
        return drop_dead_ops(Lowered(self.slots, self.ops, self.inputs, outputs,
                                     gen.GEN_PRELUDE + "\n".join(self.src), self.convs))


def lower(network: Network, layers: list[Layer], outputs: list[str], tactics: dict[str, str] | None = None) -> Lowered:
    return Lowerer(network, layers, outputs, tactics).lower()
