"""Generated map kernels with eight elements of the output's fastest dim a thread (``gen.map_kernel``
with ``vec`` > 1), and the rule for when an output allows it (``map_vector``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from backends.gpu.kernels.gen import CTYPE, Operand, _decompose, index_type, map_operands, offset, result_var, store

VEC_BYTES = 16  # one vector store
CTYPE_NUMPY = {"float32r": "float32"}  # numpy dtype of a kernel element type that is no numpy name
VECTOR_LOADS = True  # 16-byte loads of the inputs that run along the fastest dim (off: element loads, for A/B)
# the same for a concatenation's inputs under their select, when a thread's eight elements come from
# one input: the inputs of one concatenation then share one array and one 16-byte load, from the input
# the select picks (``_load_picked``), so the body's select compares equal values and folds away.
# Off: such inputs are read element by element (bench/gpu_lowering_ab.py's variants, for A/B).
SELECT_LOADS = True


def _fastest(out_shape: Sequence[int], order: Sequence[int] | None) -> int:
    return (list(order) if order is not None else list(range(len(out_shape))))[-1]


def _whole_rows(shape: Sequence[int], op: Operand, fastest: int) -> bool:
    """Whether eight consecutive elements along ``fastest`` from any multiple of 8 are one aligned
    16-byte-multiple run of ``op``: unit stride there, base and every other stride multiples of 8."""
    return (op.strides[fastest] == 1 and op.base % 8 == 0
            and all(op.strides[d] % 8 == 0 for d in range(len(shape)) if d != fastest and shape[d] > 1))


def vector_loads(out_shape: Sequence[int], order: Sequence[int] | None, zero_dim: tuple[int, int] | None,
                 ins: Sequence[Operand], body: str) -> list[int]:
    """The inputs a vector map kernel loads ahead as 16-byte words, eight elements at once: float
    inputs the body reads at their default offset only (``X{i}``, not ``LD{i}``), along the fastest
    dim in whole aligned runs (``_whole_rows``), on every output element or, for a concatenation's
    input, on all eight of a thread's or none (``_one_pick``: loaded under its select); none when
    that dim is padded past its true size (the run could pass the input's end)."""
    if not VECTOR_LOADS:
        return []
    rank, fastest = len(out_shape), _fastest(out_shape, order)
    if zero_dim is not None and zero_dim[0] == fastest and zero_dim[1] != out_shape[fastest]:
        return []
    return [i for i, op in enumerate(ins)
            if op.dtype in ("float16", "float32", "float32r") and len(op.strides) == rank
            and (not op.selected_on or (SELECT_LOADS and _one_pick(op, fastest)))
            and f"X{i}" in body and f"LD{i}(" not in body and _whole_rows(out_shape, op, fastest)]


def _one_pick(op: Operand, fastest: int) -> bool:
    """Whether a selected input is read on all eight elements of a thread or on none: its select
    depends on other dims only, or on the fastest dim itself (coordinate ``l{fastest}``) with both
    ends of its range multiples of 8."""
    if op.select_range is None:
        return False
    coordinate, first, end = op.select_range
    if fastest not in op.selected_on:
        return True
    return op.selected_on == (fastest,) and coordinate == f"(IT)l{fastest}" and first % 8 == 0 and end % 8 == 0


def map_vector(out_shape: Sequence[int], out: Operand, order: Sequence[int] | None = None,
               zero_dim: tuple[int, int] | None = None, ins: Sequence[Operand] | None = None,
               body: str = "") -> int:
    """Elements a thread of ``map_kernel`` takes: 8 when the fastest dim (padded) is a multiple of 8
    with unit stride in a float16 / float32 output whose base is 16-byte aligned and (when the
    inputs ``ins`` and the ``body`` are given) every input either is read across that dim (a
    stride other than 0 or 1, or offsets the body computes: ``LD{i}``), broadcasts over it
    (stride 0), takes 16-byte loads (``vector_loads``), or is a concatenation's input selected on
    other dims than the fastest; else 1.

    Why: one element a thread keeps one 2- or 4-byte load in flight per thread, and the generated
    copies reached about 40 % of the memory bandwidth on an H100; eight elements a thread, their
    inputs loaded as 16-byte words and their outputs stored as such, keep eight times the bytes in
    flight, and an NHWC conversion reads coalesced (a warp's lanes are consecutive pixels of one
    channel). What stays one element a thread is an input along the fastest dim read element by
    element within the thread's eight: a concatenation along that dim whose boundaries fall
    inside a thread's eight (the select picks per element) or a misaligned slice. Eight 2-byte
    loads a lane at 16-byte spacing cost more L1 traffic than they hide there: DenseNet-121
    (batch norm + ReLU over its channel concatenations) took 3.14 ms vectorized so against 2.99 ms
    with one element a thread, and 2.25 ms once its concatenation's inputs (boundaries at 64 +
    32k) shared one 16-byte load a thread (``_load_picked``); Swin-T 2.41 ms with its 16-byte
    loads against 2.53 without them (batch 32, H100)."""
    rank = len(out_shape)
    if rank == 0 or out.dtype not in ("float16", "float32"):
        return 1
    fastest = _fastest(out_shape, order)
    size = zero_dim[1] if zero_dim is not None and zero_dim[0] == fastest else out_shape[fastest]
    if size % 8 or not _whole_rows(out_shape, out, fastest):
        return 1
    if ins is None:
        return 8
    loaded = vector_loads(out_shape, order, zero_dim, ins, body)
    for i, op in enumerate(ins):
        along = len(op.strides) == rank and op.strides[fastest] == 1 and f"LD{i}(" not in body
        per_thread = bool(op.selected_on) and fastest not in op.selected_on  # one pick for all eight
        if along and i not in loaded and not per_thread:
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
    ahead = vector_loads(out_shape, order, zero_dim, ins, body)
    groups = pick_groups(ins, ahead)
    arrays = {i: f"xv{i}" for i in ahead} | {i: f"xs{g}" for g, group in enumerate(groups) for i in group}
    params, defs, undefs, float_mode = map_operands(out, ins, body, coords, arrays)
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
        f"  const IT l{fastest} = lv * {vec};",
        *[_load_ahead(i, ins[i], coords, vec) for i in ahead if ins[i].select_range is None],
        *[_load_picked(g, group, ins, coords, vec) for g, group in enumerate(groups)],
        f"  __align__(16) {ctype} yv[{vec}];",
        "#pragma unroll",
        f"  for (int j = 0; j < {vec}; ++j) {{",
        f"    const IT l{fastest} = lv * {vec} + j;",
        f"    {zero}",
        f"    {decl}",
        "    { " + body.replace("RAW", "").replace("FLT", "") + " }",
        f"    yv[j] = {val};",
        "  }",
        f"  uint4* yw = reinterpret_cast<uint4*>(Y + {offset(out, coords)});",
        "  const uint4* vw = reinterpret_cast<const uint4*>(yv);",
        "#pragma unroll",
        f"  for (int w = 0; w < {words}; ++w) yw[w] = vw[w];",
        "}",
        *undefs,
        "",
    ])


def _words(op: Operand, vec: int) -> int:
    return vec * np.dtype(CTYPE_NUMPY.get(op.dtype, op.dtype)).itemsize // VEC_BYTES


def _load_ahead(i: int, op: Operand, coords: Sequence[str], vec: int) -> str:
    """Input ``i``'s ``vec`` elements from the thread's first as 16-byte words into ``xv{i}``."""
    return "\n".join([
        f"  __align__(16) {CTYPE[op.dtype]} xv{i}[{vec}];",
        f"  {{ const uint4* s = reinterpret_cast<const uint4*>(x{i} + ({offset(op, coords)}));",
        f"    uint4* d = reinterpret_cast<uint4*>(xv{i});",
        "#pragma unroll",
        f"    for (int w = 0; w < {_words(op, vec)}; ++w) d[w] = s[w]; }}",
    ])


def pick_groups(ins: Sequence[Operand], ahead: Sequence[int]) -> list[list[int]]:
    """The loaded-ahead inputs of each concatenation (one select coordinate, one dtype): a thread's
    elements all come from one of them (``_one_pick``), so they share one array."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i in ahead:
        if ins[i].select_range is not None:
            groups.setdefault((ins[i].select_range[0], ins[i].dtype), []).append(i)
    return list(groups.values())


def _load_picked(g: int, group: Sequence[int], ins: Sequence[Operand], coords: Sequence[str], vec: int) -> str:
    """The ``vec`` elements of whichever input of ``group`` the select picks for the thread, into
    ``xs{g}``: the pointer is chosen once, and only the picked input's offset is formed (elsewhere
    it may be outside that input). None picked (an input read element by element): no load."""
    first = ins[group[0]]
    picks = []
    for i in group:
        coordinate, lo, end = ins[i].select_range
        cond = f"{coordinate} < {end}{f' && {coordinate} >= {lo}' if lo else ''}"
        picks.append(f"if ({cond}) p = x{i} + ({offset(ins[i], coords)});")
    return "\n".join([
        f"  __align__(16) {CTYPE[first.dtype]} xs{g}[{vec}];",
        f"  {{ const {CTYPE[first.dtype]}* p = nullptr;",
        "    " + "\n    else ".join(picks),
        "    if (p != nullptr) { const uint4* s = reinterpret_cast<const uint4*>(p);",
        f"      uint4* d = reinterpret_cast<uint4*>(xs{g});",
        "#pragma unroll",
        f"      for (int w = 0; w < {_words(first, vec)}; ++w) d[w] = s[w]; }} }}",
    ])
