"""An INT8 layer's input gathered from int8 results through layers that only move channels.

A channel shuffle, split, slice or concatenation between INT8 layers (ShuffleNet's blocks: split,
branch, concatenate, shuffle, split again) is lowered in float: each int8 source is dequantized, the
float tensor moved, then quantized for the reader, three or four launches over the tensor.
``channel_maps.channel_sources`` proves where each channel of the reader's input comes from; one
kernel then reads the int8 sources directly, one table entry a channel, and takes the float path's
steps on the way (dequantize, each float tensor's storage rounding, IEEE division by the reader's
scale, rounding, saturation), so its bytes are the quantize's. The float layers stay lowered for
float readers; their launches go when nothing reads them (``views.drop_dead_ops``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from backends.gpu.kernels import gen
from backends.gpu.kernels.int8 import cp16
from backends.gpu.lowering.channel_maps import channel_sources

if TYPE_CHECKING:
    from backends.gpu.lower import Lowerer

MAX_SOURCES = 32  # int8 tensors one gather reads (a ShuffleNet stage reaches back a block per level)


def int8_gather(lw: Lowerer, tensor: str, scale: np.float32) -> str | None:
    """The int8 NHWC16 slot of ``tensor`` quantized with ``scale``, gathered in one launch from int8
    results of the segment; None where some channel is computed on the way or a float type on the
    way is neither float32 nor float16 (the caller then quantizes the float tensor)."""
    from backends.gpu.lower_int8 import dequant_c, quant_c

    shape = lw.net.tensors[tensor].shape
    if len(shape) != 4:
        return None

    def is_source(t: str) -> bool:
        return t in lw.q8 and lw.slots[lw.q8[t][0]].layout == "nhwc16"

    sources = channel_sources(lw.net, tensor, is_source, lambda t: lw.dtypes.get(t, "?"), lw._segment)
    if sources is None or any(d not in ("float32", "float16") for s in sources for d in s.dtypes):
        return None
    leaves: dict[tuple[str, bool], int] = {}  # (source, rounded to fp16 on the way) -> operand index
    table = []
    for s in sources:
        key = (s.tensor, "float16" in s.dtypes)
        table.append(leaves.setdefault(key, len(leaves)) << 16 | s.channel)
    if len(leaves) > MAX_SOURCES:
        return None
    kname = lw.kernel_name(f"gather8_{tensor}")
    operands, cases = [], []
    for (src, fp16), i in leaves.items():
        qname, s_src = lw.q8[src]
        q = lw.slots[qname]
        operands.append((q.name, gen.Operand("int8", q.strides)))
        st = q.strides
        v = dequant_c(f"LD{i}(l0 * {st[0]} + (e & 0xffff) * {st[1]} + l2 * {st[2]} + l3 * {st[3]})", s_src)
        cases.append(f"case {i}: v = {f'h2f(f2h({v}))' if fp16 else v}; break;")
    out = lw._q8_slot(f"{tensor}@q8g_{len(lw._q8_cache)}", shape, "nhwc16")
    body = (f"FLT RAW const int e = TBL_{kname}[l1]; float v = 0.f; switch (e >> 16) {{ {' '.join(cases)} }} "
            f"{quant_c('v', scale)}")
    zero = (1, cp16(shape[1]))
    span = max([out.elements] + [lw.slots[n].elements for n, _ in operands])
    src = gen.map_kernel(kname, shape, gen.Operand("int8", out.strides), [o for _, o in operands], body,
                         [0, 2, 3, 1], zero, span)
    src = f"static __device__ const int TBL_{kname}[{len(table)}] = {{{', '.join(map(str, table))}}};\n" + src
    names = [n for n, _ in operands]
    lw.emit(f"gather8_{tensor}", kname, src, names, [out.name], gen.map_grid(shape, zero), [out.name, *names])
    return out.name
