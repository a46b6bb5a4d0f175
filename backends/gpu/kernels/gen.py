"""Generated CUDA kernels: one small kernel per layer, shapes and strides baked in as constants.

Every generated kernel addresses its tensors through *logical* coordinates (the IR's NCHW-style
indices) times per-tensor element strides, so the same generator reads and writes NHWC-padded
tensors, row-major tensors, broadcast operands (stride 0), transposed views and slices alike.
Baking the sizes lets NVRTC turn the index divisions into multiplies; all the kernels of one
GPU partition go into a single module, so a partition compiles once (and CuPy caches the cubin
on disk, so later processes skip NVRTC).

Kernel families (each function returns CUDA source for one ``extern "C"`` kernel):

* ``map_kernel``: one thread per output element; a C body computes ``y`` from loaded operands.
  Pointwise chains, activations, unary/binary ops, scale, PReLU, cast, layout conversions,
  shuffle/transpose, slice, split, pad, gather, concat (a select on the axis coordinate), resize.
* ``gen_group.group_kernel`` (its own module): reduce, softmax/log-softmax, normalization, and a
  reduction whose reader maps each row with its result.
* ``matmul_kernel``, ``direct_conv_kernel``, ``deconv_kernel``: straightforward fp32-accumulating
  kernels for shapes the tensor-core path does not take (batched matmul, grouped conv,
  transposed conv). Correct first; they are not the fast path for CNNs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from backends.gpu.kernels.common import COMMON_SRC

# C element type, load-to-float and store-from-float templates per numpy dtype.
CTYPE = {"float16": "h16", "float32": "float", "int8": "signed char", "uint8": "unsigned char",
         "int32": "int", "int64": "long long", "bool": "unsigned char", "float32r": "float"}
# "float32r": an fp32 tensor read by an FP16 layer, rounded to fp16 on load (the reference rounds
# every input of an FP16 layer to fp16 before computing).
_LOAD = {"float16": "h2f({})", "float32": "({})", "float32r": "h2f(f2h({}))"}
_STORE = {"float16": "f2h({})", "float32": "({})", "bool": "(unsigned char)(({}) != 0.f)"}

GEN_PRELUDE = COMMON_SRC + r"""
__device__ __forceinline__ float sgnf(float v) { return v != v ? v : (float)((v > 0.f) - (v < 0.f)); }
"""


@dataclass(frozen=True)
class Operand:
    """A tensor as a kernel sees it: dtype, base element offset and one stride per output dim."""

    dtype: str
    strides: tuple[int, ...]
    base: int = 0
    # a concatenation's input under its select: the output dims the select depends on, and where it
    # reads this input, (C expression of the coordinate, first, end); its offsets are valid only there
    selected_on: tuple[int, ...] = ()
    select_range: tuple[str, int, int] | None = None


def can_load_float(dtype: str) -> bool:
    return dtype in _LOAD


def load(dtype: str, expr: str) -> str:
    return _LOAD[dtype].format(expr)


def store(dtype: str, expr: str) -> str:
    return _STORE[dtype].format(expr)


def offset(op: Operand, coords: Sequence[str]) -> str:
    terms = [str(op.base)] if op.base else []
    terms += [f"(IT){c} * {s}" for c, s in zip(coords, op.strides) if s]
    return " + ".join(terms) or "0"


def broadcast_strides(shape: Sequence[int], strides: Sequence[int], out_shape: Sequence[int]) -> tuple[int, ...]:
    """Strides of a numpy-broadcast operand per output dim (0 where it broadcasts or is missing)."""
    lead = len(out_shape) - len(shape)
    out = [0] * len(out_shape)
    for i, (d, s) in enumerate(zip(shape, strides)):
        out[lead + i] = 0 if d == 1 else s
    return tuple(out)


def row_major(shape: Sequence[int]) -> tuple[int, ...]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def index_type(*sizes: int) -> str:
    """32-bit index arithmetic when every buffer and the grid fit, else 64-bit."""
    return "unsigned" if max(sizes, default=0) < 2**31 else "long long"


def _decompose(sizes: Sequence[int], names: Sequence[str], var: str = "t") -> str:
    """C statements splitting linear index ``var`` into coordinates (last name fastest)."""
    lines = []
    for i in range(len(sizes) - 1, -1, -1):
        if i == 0:
            lines.append(f"  const IT {names[i]} = {var};")
        else:
            lines.append(f"  const IT {names[i]} = {var} % {sizes[i]}; {var} /= {sizes[i]};")
    return "\n".join(lines)


def map_operands(out: Operand, ins: Sequence[Operand], body: str, coords: Sequence[str],
                 local: dict[int, str] | None = None) -> tuple[list[str], list[str], list[str], bool]:
    """A map kernel's parameters, its operand macros (X{i} at the default offset of ``coords``, or
    ``<array>[j]`` for those ``local`` names, loaded ahead into that array; LD{i}(o) at offset o)
    with their #undefs, and whether a RAW body copies through float.

    RAW bodies copy values: bit-exact when every float operand has the output's type, else through
    float (an fp16 tensor leaving as fp32 storage, say)."""
    params = [f"{CTYPE[out.dtype]}* __restrict__ Y"]
    params += [f"const {CTYPE[o.dtype]}* __restrict__ x{i}" for i, o in enumerate(ins)]
    raw = "RAW" in body
    float_mode = raw and can_load_float(out.dtype) and any(
        can_load_float(o.dtype) and o.dtype != out.dtype for o in ins)

    def rd(o: Operand, element: str) -> str:
        use_float = can_load_float(o.dtype) and (float_mode or not raw or "FLT" in body)
        return load(o.dtype, element) if use_float else element

    local = local or {}
    defs = [f"#define X{i} ({rd(o, f'{local[i]}[j]' if i in local else f'x{i}[{offset(o, coords)}]')})"
            for i, o in enumerate(ins)]
    defs += [f"#define LD{i}(o) ({rd(o, f'x{i}[o]')})" for i, o in enumerate(ins)]
    undefs = [f"#undef X{i}\n#undef LD{i}" for i in range(len(ins))]
    return params, defs, undefs, float_mode


def result_var(out_dtype: str, raw: bool, float_mode: bool) -> tuple[str, str]:
    """The declaration of a map body's result (``yr`` raw, in the output's type or through float;
    else the float ``y``) and the expression that stores it."""
    if raw and not float_mode:
        return f"{CTYPE[out_dtype]} yr;", "yr"
    if raw:
        return "float yr;", store(out_dtype, "yr")
    return "float y;", store(out_dtype, "y")


def map_kernel(name: str, out_shape: Sequence[int], out: Operand, ins: Sequence[Operand], body: str,
               order: Sequence[int] | None = None, zero_dim: tuple[int, int] | None = None,
               span: int = 0, vec: int = 1) -> str:
    """One thread per output element (iterated in ``order``, the output's physical dim order).

    ``body`` sets ``float y`` (or the raw value ``yr`` when it says ``RAW``; ``FLT`` makes its
    operand reads floats even then) from logical
    coordinates ``l0..l{r-1}`` and operand pointers ``x0..``; ``X(i)`` loads operand i as float at
    its default offset. ``zero_dim`` = (dim, padded size): that dim iterates to the padded size and
    writes zeros past the true size (NHWC channel padding). ``span`` bounds the index type.
    ``vec`` > 1 (``gen_vec.map_vector``): each thread computes ``vec`` consecutive elements of the fastest
    dim, body after body, and stores them as 16-byte words.
    """
    if vec > 1:
        from backends.gpu.kernels.gen_vec import map_kernel_vec

        return map_kernel_vec(name, out_shape, out, ins, body, order, zero_dim, span, vec)
    rank = len(out_shape)
    order = list(order) if order is not None else list(range(rank))
    sizes = [out_shape[d] for d in order]
    if zero_dim is not None:
        sizes[order.index(zero_dim[0])] = zero_dim[1]
    total = math.prod(sizes)
    coords = [f"l{d}" for d in range(rank)]
    it_names = [coords[d] for d in order]
    params, defs, undefs, float_mode = map_operands(out, ins, body, coords)
    raw = "RAW" in body
    yoff = offset(out, coords)
    zero = ""
    if zero_dim is not None:
        zval = "0" if not can_load_float(out.dtype) else store(out.dtype, "0.f")
        zero = f"  if (l{zero_dim[0]} >= {out_shape[zero_dim[0]]}) {{ Y[{yoff}] = {zval}; return; }}"
    decl, value = result_var(out.dtype, raw, float_mode)
    write = f"Y[{yoff}] = {value};"
    itype = index_type(total, span)
    return "\n".join([
        *defs,
        f'extern "C" __global__ void __launch_bounds__(256) {name}({", ".join(params)}) {{',
        f"  typedef {itype} IT;",
        "  IT t = (IT)blockIdx.x * 256 + threadIdx.x;",
        f"  if (t >= (IT){total}) return;",
        _decompose(sizes, it_names),
        zero,
        f"  {decl}",
        "  { " + body.replace("RAW", "").replace("FLT", "") + " }",
        f"  {write}",
        "}",
        *undefs,
        "",
    ])


def map_grid(out_shape: Sequence[int], zero_dim: tuple[int, int] | None = None, vec: int = 1) -> tuple[int]:
    total = math.prod(out_shape)
    if zero_dim is not None:
        total = total // max(out_shape[zero_dim[0]], 1) * zero_dim[1]
    return (max(1, -(-(total // vec) // 256)),)


# ------------------------------------------------------------------------------ matmul / conv


def matmul_kernel(name: str, batch: Sequence[int], m: int, n: int, k: int, a: Operand, b: Operand,
                  y: Operand, bias: Operand | None = None, act: tuple[int, float, float] = (0, 0.0, 0.0),
                  span: int = 0) -> tuple[str, int]:
    """y[..., i, j] = act(sum_k a[..., i, k] * b[..., k, j] + bias[j]); operand strides are given for
    the dims (*batch, i, j) with the reduction stride last: a (*batch, i, k->) etc.

    a.strides = (*batch strides, stride_i, stride_k); b.strides = (*batch, stride_k, stride_j);
    y.strides = (*batch, stride_i, stride_j). One thread per output element, fp32 accumulation.
    """
    rank = len(batch) + 2
    sizes = [*batch, m, n]
    coords = [f"l{d}" for d in range(rank)]
    total = math.prod(sizes)
    ab = Operand(a.dtype, (*a.strides[:-2], a.strides[-2], 0), a.base)
    bb = Operand(b.dtype, (*b.strides[:-2], 0, b.strides[-1]), b.base)
    bias_src = ""
    params = [f"const {CTYPE[a.dtype]}* __restrict__ A", f"const {CTYPE[b.dtype]}* __restrict__ B",
              f"{CTYPE[y.dtype]}* __restrict__ y"]
    if bias is not None:
        params.append(f"const {CTYPE[bias.dtype]}* __restrict__ bias")
        bias_src = f"acc += {load(bias.dtype, f'bias[l{rank - 1}]')};"
    src = "\n".join([
        f'extern "C" __global__ void __launch_bounds__(256) {name}({", ".join(params)}) {{',
        f"  typedef {index_type(total, span)} IT;",
        "  IT t = (IT)blockIdx.x * 256 + threadIdx.x;",
        f"  if (t >= (IT){total}) return;",
        _decompose(sizes, coords),
        f"  const {CTYPE[a.dtype]}* pa = A + {offset(ab, coords)};",
        f"  const {CTYPE[b.dtype]}* pb = B + {offset(bb, coords)};",
        "  float acc = 0.f;",
        f"  for (int kk = 0; kk < {k}; ++kk) acc += {load(a.dtype, f'pa[(IT)kk * {a.strides[-1]}]')} * "
        f"{load(b.dtype, f'pb[(IT)kk * {b.strides[-2]}]')};",
        f"  {bias_src}",
        f"  acc = act_fn(acc, {act[0]}, {act[1]!r}f, {act[2]!r}f);",
        f"  y[{offset(y, coords)}] = {store(y.dtype, 'acc')};",
        "}",
        "",
    ])
    return src, total


def direct_conv_kernel(name: str, n: int, c: int, h: int, w: int, k: int, p: int, q: int, r: int, s: int,
                       stride: tuple[int, int], pad: tuple[int, int], dil: tuple[int, int], groups: int,
                       x: Operand, wt: Operand, y: Operand, bias: bool, res: Operand | None,
                       act: tuple[int, float, float], transposed: bool = False, span: int = 0) -> tuple[str, int]:
    """Grouped (or transposed) 2-D convolution, one thread per output element, fp32 accumulation.

    Operand strides are per logical (N, C, H, W) dim; ``wt`` is the IR kernel as fp32, row-major:
    (K, C/g, R, S) for a convolution, (C, K/g, R, S) for a transposed one. Output (n, k, oh, ow).
    """
    coords = ["n", "ko", "oh", "ow"]
    total = n * k * p * q
    cg, kg = c // groups, k // groups
    xs = x.strides
    params = [f"const {CTYPE[x.dtype]}* __restrict__ x", "const float* __restrict__ wt",
              f"{CTYPE[y.dtype]}* __restrict__ y", "const float* __restrict__ bias"]
    xv = load(x.dtype, f"x[{x.base} + n * (IT){xs[0]} + cc * (IT){xs[1]} + (IT)ih * {xs[2]} + (IT)iw * {xs[3]}]")
    if res is not None:
        params.append(f"const {CTYPE[res.dtype]}* __restrict__ res")
    if not transposed:
        inner = f"""
  const IT g = ko / {kg};
  for (int ci = 0; ci < {cg}; ++ci) {{
    const IT cc = g * {cg} + ci;
    for (int rr = 0; rr < {r}; ++rr) {{
      const int ih = (int)oh * {stride[0]} - {pad[0]} + rr * {dil[0]};
      if (ih < 0 || ih >= {h}) continue;
      for (int ss = 0; ss < {s}; ++ss) {{
        const int iw = (int)ow * {stride[1]} - {pad[1]} + ss * {dil[1]};
        if (iw < 0 || iw >= {w}) continue;
        acc += {xv}
             * wt[((ko * {cg} + ci) * {r} + rr) * {s} + ss];
      }}
    }}
  }}"""
    else:
        inner = f"""
  const IT g = ko / {kg}, kk = ko % {kg};
  for (int ci = 0; ci < {cg}; ++ci) {{
    const IT cc = g * {cg} + ci;
    for (int rr = 0; rr < {r}; ++rr) {{
      const int th = (int)oh + {pad[0]} - rr * {dil[0]};
      if (th < 0 || th % {stride[0]}) continue;
      const int ih = th / {stride[0]};
      if (ih >= {h}) continue;
      for (int ss = 0; ss < {s}; ++ss) {{
        const int tw = (int)ow + {pad[1]} - ss * {dil[1]};
        if (tw < 0 || tw % {stride[1]}) continue;
        const int iw = tw / {stride[1]};
        if (iw >= {w}) continue;
        acc += {xv}
             * wt[((cc * {kg} + kk) * {r} + rr) * {s} + ss];
      }}
    }}
  }}"""
    res_src = f"acc += {load(res.dtype, f'res[{offset(res, coords)}]')};" if res is not None else ""
    src = "\n".join([
        f'extern "C" __global__ void __launch_bounds__(256) {name}({", ".join(params)}) {{',
        f"  typedef {index_type(total, span)} IT;",
        "  IT t = (IT)blockIdx.x * 256 + threadIdx.x;",
        f"  if (t >= (IT){total}) return;",
        _decompose([n, k, p, q], coords),
        "  float acc = 0.f;",
        inner,
        "  if (bias != nullptr) acc += bias[ko];" if bias else "",
        f"  {res_src}",
        f"  acc = act_fn(acc, {act[0]}, {act[1]!r}f, {act[2]!r}f);",
        f"  y[{offset(y, coords)}] = {store(y.dtype, 'acc')};",
        "}",
        "",
    ])
    return src, total
