"""Generated map kernels with eight elements of the output's fastest dim a thread (``gen.map_kernel``
with ``vec`` > 1), and the rule for when an output allows it (``map_vector``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from backends.gpu.kernels.gen import CTYPE, Operand, _decompose, index_type, map_operands, offset, result_var, store

VEC_BYTES = 16  # one vector store


def map_vector(out_shape: Sequence[int], out: Operand, order: Sequence[int] | None = None,
               zero_dim: tuple[int, int] | None = None, ins: Sequence[Operand] | None = None,
               body: str = "") -> int:
    """Elements a thread of ``map_kernel`` takes: 8 when the fastest dim (padded) is a multiple of 8
    with unit stride in a float16 / float32 output whose base is 16-byte aligned and (when the
    inputs ``ins`` and the ``body`` are given) some input is read across that dim: with a stride
    other than 0 or 1, or at offsets the body computes (``LD{i}``); else 1.

    Why: one element a thread keeps one 2- or 4-byte load in flight per thread, and the generated
    copies reached about 40 % of the memory bandwidth on an H100; eight independent loads a
    thread and a 16-byte store keep eight times the bytes in flight, and an NHWC conversion reads
    coalesced (a warp's lanes are consecutive pixels of one channel). Where every input already
    runs along the fastest dim, one element a thread reads coalesced too, and the eight 2-byte
    loads a lane at 16-byte spacing cost more L1 traffic than they hide: DenseNet-121's batch
    norm + ReLU chains over NHWC concatenations took 3.26 ms vectorized against 2.96 ms (batch
    32, H200)."""
    rank = len(out_shape)
    if rank == 0 or out.dtype not in ("float16", "float32"):
        return 1
    fastest = (list(order) if order is not None else list(range(rank)))[-1]
    size = zero_dim[1] if zero_dim is not None and zero_dim[0] == fastest else out_shape[fastest]
    if size % 8 or out.strides[fastest] != 1 or out.base % 8:
        return 1
    if any(out.strides[d] % 8 for d in range(rank) if d != fastest and out_shape[d] > 1):
        return 1
    if ins is not None and not any(f"LD{i}(" in body or (len(op.strides) == rank and op.strides[fastest] not in (0, 1))
                                   for i, op in enumerate(ins)):
        return 1
    return 8


def map_kernel_vec(name: str, out_shape: Sequence[int], out: Operand, ins: Sequence[Operand], body: str,
                    order: Sequence[int] | None, zero_dim: tuple[int, int] | None, span: int, vec: int) -> str:
    """``map_kernel`` with ``vec`` elements of the fastest dim a thread (see ``map_vector``)."""
    rank = len(out_shape)
    order = list(order) if order is not None else list(range(rank))
    fastest = order[-1]
    sizes = [out_shape[d] for d in order]
    if zero_dim is not None:
        sizes[order.index(zero_dim[0])] = zero_dim[1]
    if map_vector(out_shape, out, order, zero_dim) % vec:
        raise ValueError(f"map kernel {name}: {vec} elements a thread do not fit its fastest dim")
    total = math.prod(sizes)
    sizes[-1] //= vec
    coords = [f"l{d}" for d in range(rank)]
    it_names = [coords[d] if d != fastest else "lv" for d in order]
    params, defs, undefs, float_mode = map_operands(out, ins, body, coords)
    decl, val = result_var(out.dtype, "RAW" in body, float_mode)
    ctype = CTYPE[out.dtype]
    zero = ""
    if zero_dim is not None:
        zero = f"if (l{zero_dim[0]} >= {out_shape[zero_dim[0]]}) {{ yv[j] = {store(out.dtype, '0.f')}; continue; }}"
    words = vec * np.dtype(out.dtype).itemsize // VEC_BYTES
    return "\n".join([
        *defs,
        f'extern "C" __global__ void __launch_bounds__(256) {name}({", ".join(params)}) {{',
        f"  typedef {index_type(total, span)} IT;",
        "  IT t = (IT)blockIdx.x * 256 + threadIdx.x;",
        f"  if (t >= (IT){total // vec}) return;",
        _decompose(sizes, it_names),
        f"  __align__(16) {ctype} yv[{vec}];",
        "#pragma unroll",
        f"  for (int j = 0; j < {vec}; ++j) {{",
        f"    const IT l{fastest} = lv * {vec} + j;",
        f"    {zero}",
        f"    {decl}",
        "    { " + body.replace("RAW", "").replace("FLT", "") + " }",
        f"    yv[j] = {val};",
        "  }",
        f"  const IT l{fastest} = lv * {vec};",
        f"  uint4* yw = reinterpret_cast<uint4*>(Y + {offset(out, coords)});",
        "  const uint4* vw = reinterpret_cast<const uint4*>(yv);",
        "#pragma unroll",
        f"  for (int w = 0; w < {words}; ++w) yw[w] = vw[w];",
        "}",
        *undefs,
        "",
    ])
