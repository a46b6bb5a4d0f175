"""Launchers for the memory-bound kernels in ``direct_src`` (depthwise, pooling, layout, add)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from backends.gpu.kernels.compile import get_function
from backends.gpu.kernels.conv import ConvGeometry
from backends.gpu.kernels.direct_src import DIRECT_SRC

_THREADS = 256
i32, f32 = np.int32, np.float32


# Output columns per thread of depthwise_conv_row by (window width, column stride), from timing each
# width at 1, 2 and 4 columns on MobileNetV2 / EfficientNet-B0 / ConvNeXt-T layer shapes at batch
# 256 and 32 on an H100 (bench/results/gpu_depthwise_h100.json). More columns save loads (a column
# serves up to S outputs) but cost registers and so occupancy: a 3-wide window gains at 2 columns on
# stride 1 and loses on stride 2 (5 columns for 2 outputs save little), a 5-wide one gains most at
# 4 on stride 1; a 7-wide window at 4 passes 128 registers and spills. Unmeasured pairs (a 7-wide
# window at stride 2, say) keep the generic kernel.
DW_ROW_COLUMNS = {(3, 1): 2, (5, 1): 4, (5, 2): 2, (7, 1): 2}
# The shared-memory tiled kernel (``depthwise_conv_tile<S, QV, ROWS>``): stride 1, dilation 1,
# square windows of these widths; a block computes ROWS output rows x 2 * QV columns of 32 channels.
DW_TILE_WINDOWS = (3, 5, 7)
# (QV, ROWS) instantiated. On an H100 (bench/results/gpu_depthwise_h100.json) 8 columns win on
# outputs wider than 8 and 4 on 7-wide ones (5x5 on 7x7 at batch 256: 0.075 against 0.103 ms);
# 4-row blocks, timed on the same shapes, were never faster than 8-row ones by more than 2 %.
DW_TILE_SHAPES = ((8, 8), (4, 8))
DW_TILE_STRIPS, DW_TILE_CHANNELS = 2, 32  # direct_src's DT_STRIPS, 2 * DT_PAIRS
_NAMES = ([f"depthwise_conv_row<{s}, {sw}, {qv}>" for (s, sw), qv in DW_ROW_COLUMNS.items()]
          + [f"depthwise_conv_tile<{s}, {qv}, {rows}>" for s in DW_TILE_WINDOWS for qv, rows in DW_TILE_SHAPES])
# Row tiling trades threads for reuse: it applies while the tiled grid still has this many threads
# (two blocks of 256 on each of an H100's 132 SMs); smaller layers keep a thread per output.
DW_ROW_MIN_THREADS = 2 * 256 * 132


def _fn(name: str) -> Any:
    return get_function(DIRECT_SRC, name, _NAMES)


def _grid(total: int) -> tuple[int]:
    return (-(-total // _THREADS),)


def _ptr(a: Any) -> Any:
    return a if a is not None else np.uint64(0)


def compile_all() -> None:
    _fn("pool2d")
    _fn("global_pool")


def depthwise_conv(x: Any, w: Any, bias: Any, y: Any, g: ConvGeometry,
                   act: tuple[int, float, float] = (0, 0.0, 0.0), residual: Any = None) -> None:
    """y = act(depthwise(x, w) + bias + residual); g.c == g.k (channel multiplier 1)."""
    if g.c != g.k:
        raise ValueError(f"depthwise needs C == K, got {g.c} and {g.k}")
    if depthwise_tiled(g):
        qv, rows = depthwise_tile_shape(g)
        tq, tp = -(-g.q // (DW_TILE_STRIPS * qv)), -(-g.p // rows)
        _fn(f"depthwise_conv_tile<{g.s}, {qv}, {rows}>")((g.n * tp * tq, -(-g.cp // DW_TILE_CHANNELS)),
                                                         (DW_TILE_CHANNELS // 2 * DW_TILE_STRIPS * rows,), (
            x, w, _ptr(bias), _ptr(residual), y, *map(i32, (g.h, g.w, g.c, g.p, g.q, *g.pad, tq, tp)),
            i32(act[0]), f32(act[1]), f32(act[2])))
        return
    qv = depthwise_columns(g)
    if qv > 1:
        total = g.n * g.p * -(-g.q // qv) * (g.cp // 8)
        _fn(f"depthwise_conv_row<{g.s}, {g.stride[1]}, {qv}>")(_grid(total), (_THREADS,), (
            x, w, _ptr(bias), _ptr(residual), y,
            *map(i32, (g.n, g.h, g.w, g.c, g.p, g.q, g.r, g.stride[0], *g.pad, g.dilation[0])),
            i32(act[0]), f32(act[1]), f32(act[2])))
        return
    total = g.m * (g.cp // 8)
    _fn("depthwise_conv")(_grid(total), (_THREADS,), (
        x, w, _ptr(bias), _ptr(residual), y,
        *map(i32, (g.n, g.h, g.w, g.c, g.p, g.q, g.r, g.s, *g.stride, *g.pad, *g.dilation)),
        i32(act[0]), f32(act[1]), f32(act[2])))


def depthwise_tiled(g: ConvGeometry) -> bool:
    """Whether ``depthwise_conv`` takes the shared-memory tiled kernel: stride 1, dilation 1 and a
    square window it is compiled for."""
    return g.stride == (1, 1) and g.dilation == (1, 1) and g.r == g.s and g.s in DW_TILE_WINDOWS


def depthwise_tile_shape(g: ConvGeometry) -> tuple[int, int]:
    """(QV, ROWS) of the tiled kernel for ``g``: 8 columns a thread on outputs wider than 8, else 4
    (``DW_TILE_SHAPES``)."""
    return (8 if g.q > 8 else 4), 8


def depthwise_columns(g: ConvGeometry) -> int:
    """Output columns per thread of ``depthwise_conv``: ``DW_ROW_COLUMNS``'s for the window and
    column stride (``depthwise_conv_row``) where the tiled grid keeps ``DW_ROW_MIN_THREADS``
    threads, else 1 (the generic kernel); column dilation takes the generic kernel."""
    qv = DW_ROW_COLUMNS.get((g.s, g.stride[1]), 1) if g.dilation[1] == 1 else 1
    if qv > 1 and g.n * g.p * -(-g.q // qv) * (g.cp // 8) < DW_ROW_MIN_THREADS:
        return 1
    return qv


@dataclass(frozen=True)
class PoolGeometry:
    """Pooling sizes; ``p``/``q`` come from the IR's shape inference (ceil mode included)."""

    n: int
    h: int
    w: int
    c: int
    p: int
    q: int
    window: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    pad_end: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)

    @staticmethod
    def global_pool(n: int, h: int, w: int, c: int) -> PoolGeometry:
        return PoolGeometry(n, h, w, c, 1, 1, (h, w))


def pool2d(x: Any, y: Any, g: PoolGeometry, average: bool, count_pad: bool = False) -> None:
    """Max or average pooling, NHWC fp16."""
    total = g.n * g.p * g.q * (-(-g.c // 8))
    _fn("pool2d")(_grid(total), (_THREADS,), (
        x, y, *map(i32, (g.n, g.h, g.w, g.c, g.p, g.q, *g.window, *g.stride, *g.pad, *g.pad_end, *g.dilation)),
        i32(1 if average else 0), i32(1 if count_pad else 0)))


def global_pool_config(n: int, hw: int, c: int) -> tuple[int, int, int]:
    """(channel vectors per block CV, pixel slices PS (a power of two), channel groups per image).

    CV covers up to 32 vectors (256 channels) so a warp reads whole pixels; PS gives each thread
    at least 8 pixels, up to 1024 threads a block (a lone image at 112x112 still gets 1024
    threads; a large batch fills the GPU with N x groups blocks anyway).
    """
    cc = -(-c // 8)
    cv = min(cc, 32)
    ps = 1
    while ps * 2 * cv <= 1024 and ps * 2 * 8 <= hw:
        ps *= 2
    return cv, ps, -(-cc // cv)


def global_pool(x: Any, y: Any, n: int, hw: int, c: int, ldy: int, average: bool) -> None:
    """y[n, c] = mean (or max) over the H*W pixels of NHWC fp16 ``x``; y fp16 with row stride ``ldy``."""
    cv, ps, ccb = global_pool_config(n, hw, c)
    threads = cv * ps
    _fn("global_pool")((n * ccb,), (threads,), (x, y, i32(hw), i32(c), i32(cv), i32(ccb), i32(ldy),
                                                 i32(1 if average else 0)), shared_mem=threads * 8 * 4)


def nchw_to_nhwc(x: Any, y: Any, n: int, c: int, hw: int) -> None:
    """fp32 NCHW -> fp16 NHWC with channels padded to 8 (zeros)."""
    _fn("nchw_f32_to_nhwc_f16")(_grid(n * hw * (-(-c // 8))), (_THREADS,), (x, y, i32(n), i32(c), i32(hw)))


def nchw_to_s2d(x: Any, y: Any, shape: tuple[int, int, int, int]) -> None:
    """fp32 NCHW ``x`` of ``shape`` -> fp16 NHWC ``y`` holding its 2x2 space-to-depth (``y``'s pixel grid)."""
    n, c, h, w = shape
    oh, ow, cp = y.shape[1], y.shape[2], y.shape[3]
    per_pixel = c == 3 and w % 2 == 0  # the kernel's s2d_rgb_pairs: one thread per pixel
    _fn("nchw_f32_to_s2d_f16")(_grid(n * oh * ow * (1 if per_pixel else cp // 8)), (_THREADS,),
                                (x, y, *map(i32, (n, c, h, w, oh, ow))))


def nhwc_to_nchw(x: Any, y: Any, n: int, c: int, hw: int) -> None:
    """fp16 NHWC (channels padded) -> fp32 NCHW."""
    _fn("nhwc_f16_to_nchw_f32")(_grid(n * c * hw), (_THREADS,), (x, y, i32(n), i32(c), i32(hw)))


def add_act(a: Any, b: Any, y: Any, pixels: int, c: int, act: tuple[int, float, float] = (0, 0.0, 0.0)) -> None:
    """y = act(a + b) elementwise (b None: y = act(a)); NHWC with channel stride Cp."""
    _fn("add_act")(_grid(pixels * (-(-c // 8))), (_THREADS,), (
        a, _ptr(b), y, i32(pixels), i32(c), i32(act[0]), f32(act[1]), f32(act[2])))
