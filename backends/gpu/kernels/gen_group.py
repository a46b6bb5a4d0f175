"""Generated group kernels: a reduction per kept coordinate (reduce, softmax/log-softmax,
normalization, and a reduction whose reader maps each row with its result).

Rows of >= 32 reduced elements get a warp per kept coordinate (a block on long rows with few of
them; part of a warp on rows of at most ``SHORT_ROW`` values), lanes striding over the reduced
index and combining with shuffles; short rows, and rows whose kept dim is the fastest in memory
when there are many, keep one thread looping serially. Sizes and strides are baked in, as in the
map kernels (``gen``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from backends.gpu.kernels.gen import CTYPE, Operand, _decompose, index_type, load, offset, store

# ------------------------------------------------------------------------------ group reductions


# Row-parallel thresholds. A warp per kept coordinate needs >= 32 reduced elements so that every
# lane has work and the 5-step shuffle tree is paid back by a serial loop 32x shorter. A block
# (8 warps) per coordinate pays for its shared-memory step only on long rows (>= 4096 elements)
# when the warps alone would leave most of a 132-SM H100 idle (< 2048 rows = 256 blocks).
# Thread-per-coordinate stays where it reads coalesced (a kept dim is the fastest in memory) and
# there are rows enough (>= 16384 = 64 blocks of 256) to fill the GPU with it.
WARP_MIN_REDUCED = 32
BLOCK_MIN_REDUCED = 4096
BLOCK_MAX_ROWS = 2048
THREAD_MIN_ROWS = 16384


def _fastest_dim(shape: Sequence[int], strides: Sequence[int]) -> int | None:
    """The dim with the smallest non-zero stride among dims of size > 1 (None if none)."""
    dims = [d for d in range(len(shape)) if shape[d] > 1 and strides[d]]
    return min(dims, key=lambda d: abs(strides[d])) if dims else None


def group_lanes(shape: Sequence[int], axes: Sequence[int], x: Operand) -> int:
    """Threads per kept coordinate for ``group_kernel``: 1, 32 (a warp) or 256 (a block)."""
    rank = len(shape)
    red = {a % rank for a in axes}
    rows = math.prod(shape[d] for d in range(rank) if d not in red)
    rtot = math.prod(shape[d] for d in red)
    if rtot < WARP_MIN_REDUCED:
        return 1
    fastest = _fastest_dim(shape, x.strides)
    if fastest is not None and fastest not in red and rows >= THREAD_MIN_ROWS:
        return 1
    return 256 if rtot >= BLOCK_MIN_REDUCED and rows < BLOCK_MAX_ROWS else 32


# how partial results of one reduction combine: statements over ``var`` and the partner's ``b``
_COMBINE = {"sum": "{v} += b;", "max": "{v} = fmaxf({v}, b);", "min": "{v} = fminf({v}, b);", "prod": "{v} *= b;"}


def _combine(lanes: int, var: str, how: str) -> str:
    """C statements leaving in every thread of a row the combination of ``var`` over the row's lanes.

    A warp combines with an xor butterfly: both partners of a step compute the same commutative
    operation on the same two values, so every lane ends with bit-identical results. A block then
    combines its 8 warp results through shared memory, every thread in the same order.
    """
    if lanes == 1:
        return ""
    stmt = _COMBINE[how].format(v=var)
    src = (f"  #pragma unroll\n  for (int sh = {min(lanes, 32) // 2}; sh > 0; sh >>= 1) {{\n"
           f"    const float b = __shfl_xor_sync(0xffffffffu, {var}, sh); {stmt}\n  }}")
    if lanes == 256:
        src += ("\n  __syncthreads();  // earlier readers of part[] are done\n"
                f"  if ((lane & 31u) == 0u) part[lane >> 5] = {var};\n  __syncthreads();\n"
                f"  {var} = part[0];\n  for (int w = 1; w < 8; ++w) {{ const float b = part[w]; {stmt} }}")
    return src


def _group_head(lanes: int, rows: int) -> list[str]:
    """Which kept coordinate (``t``) and lane a thread handles; whole warps/blocks leave together."""
    if lanes == 1:
        return ["  IT t = (IT)blockIdx.x * 256 + threadIdx.x;", f"  if (t >= (IT){rows}) return;"]
    if lanes < 32:  # rows share a warp; a group past the end redoes the last row (same values) so
        # that every lane of the warp takes part in the shuffles
        return [f"  const unsigned lane = threadIdx.x & {lanes - 1}u;",
                f"  IT t = (IT)blockIdx.x * {256 // lanes} + (threadIdx.x / {lanes}u);",
                f"  if (t >= (IT){rows}) t = (IT){rows - 1};" if rows else "  return;  // no rows"]
    if lanes == 32:
        return ["  const unsigned lane = threadIdx.x & 31u;",
                "  IT t = (IT)blockIdx.x * 8 + (threadIdx.x >> 5);",
                f"  if (t >= (IT){rows}) return;  // t is uniform over a warp: the warp leaves whole"]
    return ["  const unsigned lane = threadIdx.x;", "  __shared__ float part[8];", "  IT t = (IT)blockIdx.x;",
            f"  if (t >= (IT){rows}) return;  // t is uniform over the block"]


def group_kernel(name: str, shape: Sequence[int], axes: Sequence[int], x: Operand, y: Operand,
                 kind: str, extra: Sequence[Operand | None] = (), op: str = "", eps: float = 0.0,
                 out_kept: bool = False, span: int = 0, lanes: int | None = None,
                 pad_to: int = 0, vec: bool | None = None, round_to: str = "", row_body: str = "") -> tuple[str, int]:
    """Reduce ``shape`` over ``axes`` per kept coordinate. Returns (source, threads to launch).

    Launch ceil(threads / 256) blocks of 256. ``lanes`` threads share a kept coordinate (default
    ``group_lanes``, and ``short_row_lanes`` for rows of at most ``SHORT_ROW`` values that a part
    of a warp holds in registers): 1 loops serially over the reduced coordinates; 2 to 32 (a warp or
    part of one) or 256 (a block) stride over them (r = lane, lane + lanes, ..., coalesced when the
    reduced dims are the fastest in memory) and combine fp32 partials with shuffles (and shared
    memory). Passes as the serial version: softmax max / sum of exp / write, norm sum / squared deviations / write.
    kind 'reduce' (op = ReduceOp value; ``y`` addressed by kept coords when ``out_kept``, its
    strides given for the full rank with 0 on reduced dims), 'softmax', 'logsoftmax', 'norm'
    (extra = optional scale, bias operands addressed per full coordinate, then optionally a residual
    added to the normalized value once rounded to ``round_to``, the norm's own output type),
    'rowmap' (reduce the row by ``op``, round the result to ``round_to``, then write every element
    of the row as ``row_body``: C statements setting float ``y`` from ``RV``, the rounded reduced
    value, ``XE``, the element, and ``EW<k>``, operand k of ``extra`` at the element). ``pad_to`` (softmax and
    norm over dim 1 alone, into an NHWC ``y``): also write zeros to channels shape[1]..pad_to-1.
    ``vec`` (default: a softmax / norm whose fp16 row is <= 2048 contiguous, 16-byte aligned halves,
    a multiple of 8): a warp loads the row once in uint4 vectors into registers, the later passes
    read registers, and an fp16 ``y`` laid out alike is stored in uint4 vectors.
    """
    rank = len(shape)
    red = sorted(a % rank for a in axes)
    kept = [d for d in range(rank) if d not in red]
    ksizes = [shape[d] for d in kept] or [1]
    rows = math.prod(ksizes)
    rtot = math.prod(shape[d] for d in red)
    if lanes is None:
        lanes = group_lanes(shape, red, x)
        if (lanes == 32 and rtot <= SHORT_ROW and vec is not False
                and (_vec_ok(x, shape, red) or (kind != "reduce" and rtot <= CACHE_MAX_REDUCED))):
            lanes = short_row_lanes(rtot, _vec_ok(x, shape, red))
    if lanes not in (1, 2, 4, 8, 16, 32, 256):
        raise ValueError(f"lanes must be 1, 2, 4, 8, 16, 32 or 256, got {lanes}")
    if pad_to and (red != [1] or kind == "reduce"):
        raise ValueError("pad_to needs a softmax, norm or row map over dim 1 alone")
    warp = 1 < lanes <= 32
    vec = (warp and (kind != "reduce" or lanes < 32) and _vec_ok(x, shape, red)
           and shape[red[0]] <= VEC_MAX_REDUCED if vec is None else vec)
    if vec and (not warp or (kind == "reduce" and lanes == 32) or not _vec_ok(x, shape, red)):
        raise ValueError("vector rows need a warp (or part of one) per row and 8k contiguous aligned fp16 values; "
                         "a reduction takes them only on rows that share a warp")
    cache = warp and not vec and kind != "reduce" and rtot <= CACHE_MAX_REDUCED
    if 1 < lanes < 32 and not (vec or cache):
        raise ValueError(f"{lanes} lanes a row need the row in registers (a vector row, or a softmax / norm row)")
    g = _Group(shape, red, x, y, lanes, vec, cache)
    if kind == "reduce":
        body = g.reduce_body(op)
    elif kind in ("softmax", "logsoftmax"):
        body = g.softmax_body(kind == "logsoftmax")
    elif kind == "norm":
        body = g.norm_body(extra, eps, round_to)
    elif kind == "rowmap":
        body = g.rowmap_body(op, row_body, extra, round_to)
    else:
        raise ValueError(kind)
    if pad_to:
        body.append(g.zero_channels(pad_to))
    params = [f"const {CTYPE[x.dtype]}* __restrict__ x", f"{CTYPE[y.dtype]}* __restrict__ y"]
    params += [f"const {CTYPE[e.dtype] if e is not None else 'float'}* __restrict__ e{i}" for i, e in enumerate(extra)]
    src = "\n".join([
        f'extern "C" __global__ void __launch_bounds__(256) {name}({", ".join(params)}) {{',
        f"  typedef {index_type(rows * g.rtot, rows * lanes, span)} IT;",
        *_group_head(lanes, rows),
        _decompose(ksizes, [g.coords[d] for d in kept] or ["kdummy"]),
        *[b for b in body if b],
        "}",
        "",
    ])
    return src, rows * lanes


# A warp whose row is <= 2048 contiguous, 16-byte aligned halves loads it once with 16-byte vector
# loads into registers (8 uint4 = 64 floats a lane at most); every later pass reads the registers.
# Other softmax / norm rows of <= 1024 values a warp loads once element-wise (<= 32 floats a lane).
VEC_MAX_REDUCED = 2048
CACHE_MAX_REDUCED = 1024
# Rows this short share a warp: a warp per row of 64 halves kept 24 of its 32 lanes idle (one uint4
# a lane holds 8 halves), and Swin V2's window softmax (rows of 64) ran at a fifth of the memory
# bandwidth on an H100. Such a row gets the fewest lanes (a power of two) that hold it in one uint4
# (vector rows) or four floats (other rows) a lane, and the warp takes 32 / lanes rows.
SHORT_ROW = 128


def short_row_lanes(rtot: int, vec: bool) -> int:
    """Lanes a row of ``rtot`` <= ``SHORT_ROW`` values takes when rows share a warp (2 to 32)."""
    per_lane = 8 if vec else 4
    return min(32, max(2, 1 << max(0, math.ceil(rtot / per_lane) - 1).bit_length()))


def _vec_ok(op: Operand, shape: Sequence[int], red: list[int]) -> bool:
    """fp16, one reduced dim of unit stride holding a multiple of 8, every row start 16-byte aligned."""
    return (op.dtype == "float16" and len(red) == 1 and op.strides[red[0]] == 1 and shape[red[0]] % 8 == 0
            and op.base % 8 == 0 and all(st % 8 == 0 for d, st in enumerate(op.strides) if d != red[0]))


@dataclass
class _Group:
    """The C pieces of one group kernel: loops over the reduced coordinates, lane combines, bodies.

    ``vec``: the row lives in registers (``f``, loaded by ``prologue``); ``loop`` then walks the
    registers and ``write`` stores 16-byte vectors when ``y`` allows. ``cache``: the same with a
    scalar load per element, f[i] holding element lane + 32 i.
    """

    shape: Sequence[int]
    red: list[int]
    x: Operand
    y: Operand
    lanes: int
    vec: bool = False
    cache: bool = False

    def __post_init__(self) -> None:
        self.coords = [f"l{d}" for d in range(len(self.shape))]
        self.rsizes = [self.shape[d] for d in self.red] or [1]
        self.rtot = math.prod(self.rsizes)
        self.xload = load(self.x.dtype, f"x[{offset(self.x, self.coords)}]")
        self.xl = "f[8 * i + j]" if self.vec else "f[i]" if self.cache else self.xload
        self.yoff = offset(self.y, self.coords)
        self.width = min(self.lanes, 32)  # lanes that stride over one row (vector and cached rows)
        self.nv = -(-self.rtot // (8 * self.width))  # uint4 a lane

    def _row(self, op: Operand) -> str:
        """Offset of a row's first element (reduced coordinates 0)."""
        return offset(Operand(op.dtype, tuple(0 if d in self.red else st for d, st in enumerate(op.strides)),
                              op.base), self.coords)

    def _vec_loop(self, inner: str) -> str:
        return (f"  #pragma unroll\n  for (int i = 0; i < {self.nv}; ++i) {{\n"
                f"    const int c = ((int)lane + {self.width} * i) * 8;\n"
                f"    if (c < {self.rtot}) {{\n{inner}\n    }}\n  }}")

    def _cache_loop(self, stmt: str) -> str:
        names = [self.coords[d] for d in self.red] or ["rdummy"]
        split = _decompose(self.rsizes, names, "t2").replace("  const", "      const")
        split += "\n      " + " ".join(f"(void){n};" for n in names)  # passes over f[i] use no coordinate
        return (f"  #pragma unroll\n  for (int i = 0; i < {-(-self.rtot // self.width)}; ++i) {{\n"
                f"    const IT r = (IT)lane + {self.width} * i;\n    if (r < (IT){self.rtot}) {{\n      IT t2 = r;\n"
                f"{split}\n      {stmt}\n    }}\n  }}")

    def prologue(self) -> str:
        if self.cache:
            return f"  float f[{-(-self.rtot // self.width)}] = {{}};\n" + self._cache_loop(f"f[i] = {self.xload};")
        if not self.vec:
            return ""
        unpack = " ".join(f"f[8 * i + {2 * k}] = lo2f(u.{w}); f[8 * i + {2 * k + 1}] = hi2f(u.{w});"
                          for k, w in enumerate("xyzw"))
        return (f"  const h16* xr = x + {self._row(self.x)};\n  float f[{8 * self.nv}];\n"
                f"  #pragma unroll\n  for (int i = 0; i < {self.nv}; ++i) {{\n"
                f"    const int c = ((int)lane + {self.width} * i) * 8;\n    uint4 u = make_uint4(0u, 0u, 0u, 0u);\n"
                f"    if (c < {self.rtot}) u = *reinterpret_cast<const uint4*>(xr + c);\n    {unpack}\n  }}")

    def loop(self, stmt: str) -> str:
        if self.cache:
            return self._cache_loop(stmt)
        if self.vec:
            ld = self.coords[self.red[0]]
            return self._vec_loop(f"      #pragma unroll\n      for (int j = 0; j < 8; ++j) {{ "
                                  f"const IT {ld} = (IT)(c + j); (void){ld}; {stmt} }}")
        first, step = ("0", "++r") if self.lanes == 1 else ("(IT)lane", f"r += {self.lanes}")
        names = [self.coords[d] for d in self.red] or ["rdummy"]
        return (f"  for (IT r = {first}; r < (IT){self.rtot}; {step}) {{\n    IT t2 = r;\n"
                + _decompose(self.rsizes, names, "t2").replace("  const", "    const") + "\n    " + stmt + "\n  }")

    def write(self, val: str) -> str:
        """Store ``val`` (a float expression of the element's coordinates) over the row."""
        if not (self.vec and _vec_ok(self.y, self.shape, self.red)):
            return self.loop(f"y[{self.yoff}] = {store(self.y.dtype, val)};")
        ld = self.coords[self.red[0]]
        pack = ", ".join(f"pack2(o[{2 * k}], o[{2 * k + 1}])" for k in range(4))
        return self._vec_loop(
            f"      float o[8];\n      #pragma unroll\n      for (int j = 0; j < 8; ++j) {{ "
            f"const IT {ld} = (IT)(c + j); (void){ld}; o[j] = {val}; }}\n"
            f"      *reinterpret_cast<uint4*>(y + {self._row(self.y)} + c) = make_uint4({pack});")

    def comb(self, var: str, how: str) -> str:
        return _combine(self.lanes, var, how)

    def _reduce_row(self, op: str) -> tuple[list[str], str]:
        """The statements leaving the row's reduction by ``op`` in ``a`` in every lane of the row, and
        the expression of its final value."""
        init, acc, fin, how = _REDUCE[op]
        stmts = [self.prologue(), f"  float a = {init};", self.loop(f"float v = {self.xl}; {acc}"),
                 self.comb("a", how)]
        return stmts, fin.replace("N", str(self.rtot))

    def reduce_body(self, op: str) -> list[str]:
        stmts, fin = self._reduce_row(op)
        guard = "if (lane == 0u) " if self.lanes > 1 else ""
        store_y = f"  {guard}y[{self.yoff}] = {store(self.y.dtype, fin)};"
        return stmts + ["  " + _zero_red(self.red, self.coords) + store_y]

    def softmax_body(self, log: bool) -> list[str]:
        xl = self.xl
        return [self.prologue(), "  float m = __int_as_float(0xff800000);", self.loop(f"m = fmaxf(m, {xl});"),
                self.comb("m", "max"), "  float s = 0.f;", self.loop(f"s += expf({xl} - m);"), self.comb("s", "sum"),
                self.write(f"{xl} - m - logf(s)" if log else f"expf({xl} - m) / s")]

    def norm_body(self, extra: Sequence[Operand | None], eps: float, round_to: str = "") -> list[str]:
        e0 = extra[0] if len(extra) > 0 else None
        e1 = extra[1] if len(extra) > 1 else None
        sc = load(e0.dtype, f"e0[{offset(e0, self.coords)}]") if e0 is not None else "1.f"
        bi = load(e1.dtype, f"e1[{offset(e1, self.coords)}]") if e1 is not None else "0.f"
        xl, n = self.xl, self.rtot
        val = f"({xl} - mean) * inv * {sc} + {bi}"
        if len(extra) > 2 and extra[2] is not None:  # + residual, on the value the norm would have stored
            e2 = extra[2]
            val = f"{load(round_to, store(round_to, f'({val})'))} + {load(e2.dtype, f'e2[{offset(e2, self.coords)}]')}"
        return [self.prologue(), "  float s = 0.f;", self.loop(f"s += {xl};"), self.comb("s", "sum"),
                f"  const float mean = s / {n}.f;",
                "  float q = 0.f;", self.loop(f"float d = {xl} - mean; q += d * d;"), self.comb("q", "sum"),
                f"  const float inv = 1.f / sqrtf(q / {n}.f + {eps!r}f);",
                self.write(val)]

    def rowmap_body(self, op: str, row_body: str, extra: Sequence[Operand | None], round_to: str) -> list[str]:
        stmts, fin = self._reduce_row(op)
        rv = load(round_to, store(round_to, f"({fin})")) if round_to else fin
        body = re.sub(r"\bXE\b", f"({self.xl})", re.sub(r"\bRV\b", "rv", row_body))
        for k, e in enumerate(extra):
            if e is not None:
                body = re.sub(rf"\bEW{k}\b", load(e.dtype, f"e{k}[{offset(e, self.coords)}]"), body)
        return stmts + [f"  const float rv = {rv};", self.write(f"[&]() {{ float y; {body} return y; }}()")]

    def zero_channels(self, pad_to: int) -> str:
        """Zeros into the padded channels of an NHWC output (the row is dim 1, the channels)."""
        first, step = ("0", "++r") if self.lanes == 1 else ("(IT)lane", f"r += {self.lanes}")
        return (f"  for (IT r = (IT){self.shape[1]} + {first}; r < (IT){pad_to}; {step}) {{ const IT l1 = r; "
                f"y[{self.yoff}] = {store(self.y.dtype, '0.f')}; }}")


def _zero_red(red: Sequence[int], coords: Sequence[str]) -> str:
    # the output offset of a reduction uses reduced coordinates with stride 0, so bind them to 0
    return " ".join(f"const IT {coords[d]} = 0; (void){coords[d]};" for d in red) + "\n"


# (init, accumulate statement over v, finalize expression over a (N = element count), how lanes'
# partial results combine)
_REDUCE = {
    "sum": ("0.f", "a += v;", "a", "sum"),
    "mean": ("0.f", "a += v;", "a / N.f", "sum"),
    "max": ("__int_as_float(0xff800000)", "a = fmaxf(a, v);", "a", "max"),
    "min": ("__int_as_float(0x7f800000)", "a = fminf(a, v);", "a", "min"),
    "prod": ("1.f", "a *= v;", "a", "prod"),
    "l1": ("0.f", "a += fabsf(v);", "a", "sum"),
    "l2": ("0.f", "a += v * v;", "sqrtf(a)", "sum"),
    "sum_square": ("0.f", "a += v * v;", "a", "sum"),
    "log_sum": ("0.f", "a += v;", "logf(a)", "sum"),
}
REDUCE_OPS = tuple(_REDUCE)  # the reductions a group kernel computes (ReduceOp values)


def reduce_parts(op: str) -> tuple[str, str, str, str]:
    """(init, accumulate statement over ``v``, final expression over ``a`` with ``N`` the element
    count, the statement combining a partner's partial result ``b`` into ``a``) of reduction ``op``."""
    init, acc, fin, how = _REDUCE[op]
    return init, acc, fin, _COMBINE[how].format(v="a")
