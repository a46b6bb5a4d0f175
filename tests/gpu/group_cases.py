"""Cases for the generated group kernels (reduce, softmax, log-softmax, normalization) and their
float64 numpy references, shared by the GPU tests and the CPU emulator tests.

A case builds the kernel exactly as ``backends.gpu.lowering.reduce.group`` does (operand strides of
a ``linear`` or ``nhwc`` slot, output strides of a kept or dropped reduced dim), stores the input
physically (an NHWC slot with NaN in its padded channels, which the kernel must never read) and
poisons the output with NaN, so unwritten elements fail the check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from gpu_reference import assert_close

from backends.gpu.kernels import gen, gen_group
from backends.gpu.layout import round_up

ROW_SIZES = (7, 31, 32, 33, 96, 197, 768, 1000, 5000)
REDUCE_OPS = ("sum", "mean", "max", "min", "prod", "l1", "l2", "sum_square", "log_sum")


@dataclass(frozen=True)
class Case:
    """kind: 'reduce' (op, keep), 'softmax', 'logsoftmax' or 'norm' (affine: '' none, 'last' scale
    and bias over the reduced trailing dims, 'scale' the scale alone, 'channel' per dim 1 as
    (C, 1, 1), 'group' per (G, C/G, 1, 1)). layout 'nhwc': x is a rank-4 NHWC slot."""

    kind: str
    shape: tuple[int, ...]
    axes: tuple[int, ...]
    op: str = ""
    keep: bool = True
    layout: str = "linear"
    dtype: str = "float16"
    affine: str = ""
    lanes: int | None = None
    out_nhwc: bool = False  # softmax / norm over C written as an NHWC slot (zeros in its padding)
    vec: bool | None = None  # rows loaded in 16-byte vectors (None: the generator's choice)

    @property
    def id(self) -> str:
        what = self.op if self.kind == "reduce" else self.kind
        extra = ("k" if self.keep else "d") if self.kind == "reduce" else self.affine
        lanes = "" if self.lanes is None else f"-L{self.lanes}"
        out = ("-to_nhwc" if self.out_nhwc else "") + ("" if self.vec is None else f"-vec{int(self.vec)}")
        return (f"{what}-{'x'.join(map(str, self.shape))}-ax{''.join(map(str, self.axes))}-{extra}-"
                f"{self.layout}-{self.dtype[5:]}{lanes}{out}")


@dataclass
class Prepared:
    case: Case
    name: str
    source: str
    threads: int
    arrays: list[np.ndarray]  # kernel arguments in order: x, y, extras
    ref: np.ndarray  # float64, the output's logical shape
    out_shape: tuple[int, ...]


def _input(case: Case, rng: np.random.Generator) -> np.ndarray:
    rtot = math.prod(case.shape[a] for a in case.axes)
    if case.op == "prod":  # products of 5000 values stay in range: |x| = exp(N(0, 1/sqrt(rtot)))
        mag = np.exp(rng.normal(0, 1 / math.sqrt(rtot), case.shape))
        return mag * rng.choice([-1.0, 1.0], case.shape)
    if case.op == "log_sum":
        return rng.uniform(0.5, 2.0, case.shape)
    if case.kind in ("softmax", "logsoftmax"):
        return rng.normal(0, 3, case.shape)
    return rng.uniform(-2, 2, case.shape) + (0.5 if case.kind == "norm" else 0.0)


def _store_x(case: Case, x: np.ndarray) -> tuple[np.ndarray, gen.Operand]:
    if case.layout == "linear":
        return np.ascontiguousarray(x), gen.Operand(case.dtype, gen.row_major(case.shape))
    n, c, h, w = case.shape
    cp = round_up(c, 8)
    buf = np.full((n, h, w, cp), np.nan, case.dtype)
    buf[..., :c] = x.transpose(0, 2, 3, 1)
    return buf, gen.Operand(case.dtype, (h * w * cp, 1, w * cp, cp))


def _affine(case: Case, rng: np.random.Generator) -> list[np.ndarray | None]:
    shape, red = case.shape, sorted(a % len(case.shape) for a in case.axes)
    if not case.affine:
        return []
    if case.affine in ("last", "scale"):
        wshape = tuple(shape[d] for d in red)
    elif case.affine == "channel":
        wshape = (shape[1],) + (1,) * (len(shape) - 2)
    else:  # group: (G, C/G, 1, 1) of (N, G, C/G, H, W)
        wshape = (shape[1], shape[2]) + (1,) * (len(shape) - 3)
    scale = rng.uniform(0.5, 1.5, wshape).astype(np.float32)
    bias = rng.standard_normal(wshape).astype(np.float32)
    return [scale, None] if case.affine == "scale" else [scale, bias]


def reference(case: Case, x: np.ndarray, weights: list[np.ndarray | None]) -> np.ndarray:
    """float64 reference of ``case`` on ``x`` (float64 values of the kernel's input)."""
    axes = tuple(sorted(a % x.ndim for a in case.axes))
    if case.kind == "reduce":
        f = {"sum": lambda v: v.sum(axes, keepdims=True), "mean": lambda v: v.mean(axes, keepdims=True),
             "max": lambda v: v.max(axes, keepdims=True), "min": lambda v: v.min(axes, keepdims=True),
             "prod": lambda v: v.prod(axes, keepdims=True), "l1": lambda v: np.abs(v).sum(axes, keepdims=True),
             "l2": lambda v: np.sqrt((v * v).sum(axes, keepdims=True)),
             "sum_square": lambda v: (v * v).sum(axes, keepdims=True),
             "log_sum": lambda v: np.log(v.sum(axes, keepdims=True))}[case.op]
        out = f(x)
        return out if case.keep else out.squeeze(axes)
    if case.kind in ("softmax", "logsoftmax"):
        z = x - x.max(axes, keepdims=True)
        lse = np.log(np.exp(z).sum(axes, keepdims=True))
        return z - lse if case.kind == "logsoftmax" else np.exp(z - lse)
    mean = x.mean(axes, keepdims=True)
    out = (x - mean) / np.sqrt(((x - mean) ** 2).mean(axes, keepdims=True) + EPS)
    if weights:
        out = out * weights[0].astype(np.float64)
        if weights[1] is not None:
            out = out + weights[1].astype(np.float64)
    return out


EPS = 1e-5


def prepare(case: Case, rng: np.random.Generator, name: str) -> Prepared:
    """The kernel source, its argument arrays and the reference output of ``case``."""
    shape, rank = case.shape, len(case.shape)
    red = sorted(a % rank for a in case.axes)
    x = _input(case, rng).astype(case.dtype)
    xs, xop = _store_x(case, x)
    if case.kind == "reduce":
        oshape = tuple(1 if d in red else s for d, s in enumerate(shape))
        if case.keep:
            ys = tuple(0 if d in red else st for d, st in enumerate(gen.row_major(oshape)))
        else:
            oshape = tuple(s for d, s in enumerate(shape) if d not in red)
            it = iter(gen.row_major(oshape))
            ys = tuple(0 if d in red else next(it) for d in range(rank))
    else:
        oshape, ys = shape, gen.row_major(shape)
    y = np.full(oshape, np.nan, case.dtype)
    pad_to = 0
    if case.out_nhwc:
        n, c, h, w = shape
        pad_to = round_up(c, 8)
        y = np.full((n, h, w, pad_to), np.nan, case.dtype)
        ys = (h * w * pad_to, 1, w * pad_to, pad_to)
    weights = _affine(case, rng)
    extra = [None if w is None else gen.Operand("float32", gen.broadcast_strides(w.shape, gen.row_major(w.shape),
                                                                                 shape))
             for w in weights]
    src, threads = gen_group.group_kernel(name, shape, case.axes, xop, gen.Operand(case.dtype, ys), case.kind, extra,
                                    op=case.op, eps=EPS, span=xs.size, lanes=case.lanes, pad_to=pad_to,
                                    vec=case.vec)
    arrays = [xs, y] + [xs if w is None else np.ascontiguousarray(w) for w in weights]
    ref = reference(case, x.astype(np.float64), weights)
    return Prepared(case, name, src, threads, arrays, ref, oshape)


def check(p: Prepared, out: np.ndarray) -> None:
    """fp16: gpu_reference.assert_close; fp32: 1e-5 relative (and of the largest output)."""
    if p.case.out_nhwc:
        c = p.out_shape[1]
        assert (out[..., c:] == 0).all(), "padded channels must be written as zeros"
        out = out[..., :c].transpose(0, 3, 1, 2)
    out = out.reshape(p.out_shape).astype(np.float64)
    ref = p.ref.reshape(p.out_shape)
    if p.case.dtype == "float16":
        assert_close(out, ref)
        return
    assert np.isfinite(out).all(), "output has NaN/Inf (unwritten or overflowed elements)"
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))


def _reduce_cases() -> list[Case]:
    out = []
    for i, op in enumerate(REDUCE_OPS):
        for j, r in enumerate(ROW_SIZES):
            out.append(Case("reduce", (6, r), (-1,), op, keep=(i + j) % 2 == 0,
                            dtype="float32" if j % 3 == 2 else "float16"))
        out.append(Case("reduce", (3, 197, 5), (1,), op, keep=i % 2 == 1))  # middle axis, strided
        out.append(Case("reduce", (2, 3, 33, 4), (1, 2), op, keep=i % 2 == 0))  # several axes
        out.append(Case("reduce", (2, 5, 8, 12), (0, 2, 3), op, keep=True, dtype="float32"))
    return out


def _softmax_cases() -> list[Case]:
    out = []
    for kind in ("softmax", "logsoftmax"):
        for j, r in enumerate(ROW_SIZES):
            out.append(Case(kind, (5, r), (-1,), dtype="float32" if j % 4 == 3 else "float16"))
        out.append(Case(kind, (2, 197, 12), (1,)))  # reduced dim strided (attention over keys, head last)
        out.append(Case(kind, (2, 1000), (1,), dtype="float32"))
        out.append(Case(kind, (2, 96, 7, 9), (1,), layout="nhwc"))  # over C of an NHWC slot: contiguous
    return out


def _norm_cases() -> list[Case]:
    out = []
    for j, r in enumerate(ROW_SIZES):
        out.append(Case("norm", (4, r), (-1,), affine=("last", "", "scale")[j % 3],
                        dtype="float32" if j % 4 == 1 else "float16"))
    out += [
        Case("norm", (2, 197, 768), (2,), affine="last"),  # ViT LayerNorm
        Case("norm", (2, 197, 768), (2,)),
        Case("norm", (2, 7, 9, 96), (3,), affine="last"),  # ConvNeXt LayerNorm on a permuted tensor
        Case("norm", (2, 96, 7, 9), (1,), affine="channel", layout="nhwc"),  # LayerNorm over C of NHWC
        Case("norm", (2, 96, 7, 9), (1,), affine="channel"),  # the same, linear NCHW: C strided
        Case("norm", (2, 33, 6, 5), (1,), affine="channel", layout="nhwc"),  # C padded to 40
        Case("norm", (2, 96, 7, 9), (1,), affine="channel", layout="nhwc", out_nhwc=True),
        Case("norm", (2, 33, 6, 5), (1,), affine="channel", layout="nhwc", out_nhwc=True),
        Case("norm", (2, 7, 6, 5), (1,), affine="channel", layout="nhwc", out_nhwc=True),  # thread per pixel
        Case("softmax", (2, 45, 6, 5), (1,), layout="nhwc", out_nhwc=True),
        Case("logsoftmax", (2, 45, 6, 5), (1,), layout="nhwc", out_nhwc=True, lanes=256),
        Case("norm", (2, 16, 14, 14), (2, 3), affine="channel"),  # InstanceNorm
        Case("norm", (2, 16, 14, 14), (2, 3), affine="channel", layout="nhwc"),
        Case("norm", (2, 7, 9, 11), (2, 3), layout="nhwc"),  # InstanceNorm, C = 7 padded to 8
        Case("norm", (2, 4, 8, 7, 7), (2, 3, 4), affine="group"),  # GroupNorm(4 groups of 8 channels)
        Case("norm", (2, 8, 4, 5, 5), (2, 3, 4), affine="group", dtype="float32"),
        Case("norm", (2, 3, 80, 80), (2, 3), affine="channel"),  # 6400 per row, few rows: a block per row
        Case("norm", (4, 768), (-1,), affine="last", vec=False),  # the scalar warp path on a vector row
        Case("softmax", (4, 1000), (-1,), vec=False),
        Case("softmax", (3, 2048), (-1,)),  # the longest row held in registers (8 uint4 a lane)
        Case("norm", (3, 2056), (-1,), affine="last"),  # one vector longer: the scalar warp path
        Case("softmax", (3, 1500), (-1,)),  # not a multiple of 8, over 1024: re-read each pass
        Case("logsoftmax", (2, 1100, 3), (1,), dtype="float32"),
        Case("norm", (3, 1025), (-1,), affine="scale"),
        Case("norm", (3, 1024, 2), (1,)),  # the longest row cached element-wise (strided)
        Case("logsoftmax", (3, 5, 8), (-1,), dtype="float16", lanes=32),  # 8 halves: one lane loads all
        Case("norm", (2, 5, 64), (-1,), affine="last", lanes=32, vec=True),
    ]
    return out


def _lane_cases() -> list[Case]:
    """Every row mapping forced on the same shapes, whatever the heuristic picks."""
    out = []
    for lanes in (1, 32, 256):
        for r in (7, 33, 300):
            out.append(Case("reduce", (3, r), (-1,), "sum", lanes=lanes))
            out.append(Case("reduce", (3, r, 2), (1,), "max", keep=False, dtype="float32", lanes=lanes))
            out.append(Case("softmax", (3, r), (-1,), lanes=lanes))
            out.append(Case("norm", (3, r), (-1,), affine="last", dtype="float32", lanes=lanes))
        out.append(Case("norm", (2, 40, 3, 5), (1,), affine="channel", layout="nhwc", lanes=lanes))
    # rows that share a warp: vector rows (a multiple of 8 halves; reductions too) and cached rows
    for lanes in (2, 4, 8, 16):
        out.append(Case("reduce", (7, 32), (-1,), "l2", lanes=lanes, vec=True))
        out.append(Case("softmax", (5, 64), (-1,), lanes=lanes))
        out.append(Case("norm", (3, 96), (-1,), affine="last", lanes=lanes))
        out.append(Case("softmax", (6, 49), (-1,), lanes=lanes))
        out.append(Case("norm", (5, 33), (-1,), affine="last", dtype="float32", lanes=lanes))
    out.append(Case("softmax", (9, 3, 64), (-1,)))  # the default picks 8 lanes a row, 4 rows a warp
    out.append(Case("reduce", (11, 32), (-1,), "l2"))  # 4 lanes a row, 8 rows a warp
    out.append(Case("norm", (2, 96, 3, 5), (1,), affine="channel", layout="nhwc", out_nhwc=True))  # 16 lanes
    return out


CASES = _reduce_cases() + _softmax_cases() + _norm_cases() + _lane_cases()
# Shapes only the GPU runs (too slow for the CPU emulator): ConvNeXt-sized NHWC and NCHW rows.
GPU_CASES = [
    Case("norm", (1, 96, 56, 56), (1,), affine="channel", layout="nhwc"),  # ConvNeXt stage 1, batch 1
    Case("norm", (8, 96, 56, 56), (1,), affine="channel", layout="nhwc"),
    Case("norm", (8, 96, 56, 56), (1,), affine="channel", layout="nhwc", out_nhwc=True),
    Case("norm", (8, 96, 56, 56), (1,), affine="channel"),  # 25088 rows, W fastest: thread per row
    Case("norm", (8, 56, 56, 96), (3,), affine="last"),
    Case("norm", (32, 197, 768), (2,), affine="last"),
    Case("softmax", (32, 12, 197, 197), (3,)),
    Case("softmax", (1, 64, 128, 160), (1,)),  # 20480 rows, W fastest: thread per row
    Case("norm", (1, 32, 96, 96), (2, 3), affine="channel", layout="nhwc"),  # InstanceNorm, long rows
    Case("reduce", (2, 1 << 20), (1,), "sum"),  # one long row: a block per row
    Case("reduce", (4, 64, 56, 56), (1, 2, 3), "mean", dtype="float32"),
]
