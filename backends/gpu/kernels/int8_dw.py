"""The INT8 depthwise convolution on the GPU (``int8_dw_src``): weight packing, arguments and launch.

One thread per 16 channels of an output pixel (``dwconv_s8``), or the shared-memory tiled kernel
(``dwconv_s8_tile``) for the square 3x3 / 5x5 / 7x7 windows at stride 1 or 2 that MobileNet- and
EfficientNet-class networks use. The epilogue is ``int8_epi_src``'s, as in the tensor-core kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from backends.gpu.kernels.compile import get_function
from backends.gpu.kernels.conv import ConvGeometry
from backends.gpu.kernels.int8 import MAX_KTOT, DeviceEpilogue, cp16, f32, i32, ptr
from backends.gpu.kernels.int8_dw_src import DW8_SRC


def pack_dw_weights8(wq: np.ndarray) -> np.ndarray:
    """int8 depthwise IR kernel (C, 1, R, S) -> (ceil(R*S / 4), Cp16, 4) int8: taps (index r * S + s)
    in quads, each channel's four as one word for ``__dp4a``; zero past the last tap and in channels
    C..Cp-1."""
    c, one, r, s = wq.shape
    if one != 1:
        raise ValueError(f"a depthwise kernel has one input channel per group, got shape {wq.shape}")
    quads = -(-(r * s) // 4)
    taps = np.zeros((quads * 4, cp16(c)), np.int8)
    taps[: r * s, :c] = wq[:, 0].reshape(c, r * s).T
    return np.ascontiguousarray(taps.reshape(quads, 4, cp16(c)).transpose(0, 2, 1))


def dw_args(x: Any, w: Any, y: Any, g: ConvGeometry, epi: DeviceEpilogue, residual: Any, ldy: int) -> tuple:
    """``dwconv_s8``'s arguments in order (int8_dw_src), pointers as given (None for a null one)."""
    if g.c != g.k or g.r * g.s > MAX_KTOT:
        raise ValueError(f"depthwise geometry C = {g.c}, K = {g.k}, {g.r}x{g.s}: needs C == K and an exact int32 sum")
    geo = (g.n, g.h, g.w, g.c, g.p, g.q, g.r, g.s, *g.stride, *g.pad, *g.dilation, ldy, epi.flags, epi.clipq,
           0 if epi.clipf is None else 1)
    return (x, w, epi.ep, residual, epi.sacc, y, *map(i32, geo), f32(0.0 if epi.clipf is None else epi.clipf),
            np.float64(epi.sout))


def dw_threads(g: ConvGeometry) -> int:
    """Threads of ``dwconv_s8``: one per 16 channels of an output pixel."""
    return g.n * g.p * g.q * (cp16(g.c) // 16)


DW8_TILE_WINDOWS = (3, 5, 7)  # square windows ``dwconv_s8_tile`` is compiled for
DW8_TILE_ROWS = 8
DW8_TILE_STRIPS = 2  # int8_dw_src: DT8_STRIPS
DW8_TILE_CHANNELS = 32  # int8_dw_src: 4 * DT8_QUADS
DW8_NAMES = [f"dwconv_s8_tile<{s}, {st}, {qv}, {DW8_TILE_ROWS}, {nl}>" for s in DW8_TILE_WINDOWS
             for st in (1, 2) for qv in (4, 8) for nl in ("false", "true")]


def dw_fn(name: str) -> Any:
    return get_function(DW8_SRC, name, name_expressions=DW8_NAMES)


def dw_tiled8(g: ConvGeometry) -> bool:
    """Whether ``dwconv2d_s8`` takes the shared-memory tiled kernel: stride 1 or 2 (the same both
    ways), dilation 1 and a square window it is compiled for."""
    return (g.stride in ((1, 1), (2, 2)) and g.dilation == (1, 1) and g.r == g.s
            and g.s in DW8_TILE_WINDOWS)


def dw_launch8(x: Any, w: Any, y: Any, g: ConvGeometry, epi: DeviceEpilogue, residual: Any,
               ldy: int) -> tuple[str, tuple[int, int], int, tuple]:
    """(kernel name, grid, threads a block, arguments) of the INT8 depthwise launch: the tiled
    kernel where ``dw_tiled8``, else ``dwconv_s8``; pointers as given (None for a null one)."""
    args = dw_args(x, w, y, g, epi, residual, ldy)
    if not dw_tiled8(g):
        return "dwconv_s8", (-(-dw_threads(g) // 256), 1), 256, args
    qv = 8 if g.q > 8 else 4
    tq, tp = -(-g.q // (DW8_TILE_STRIPS * qv)), -(-g.p // DW8_TILE_ROWS)
    ptrs, (n, h, wd, c, p, q, _r, _s, _sh, _sw, ph, pw, _dh, _dw, *tail) = args[:6], args[6:]
    tiled = (*ptrs, h, wd, c, p, q, ph, pw, i32(tq), i32(tp), *tail)
    grid = (int(n) * tp * tq, -(-cp16(g.c) // DW8_TILE_CHANNELS))
    threads = DW8_TILE_CHANNELS // 4 * DW8_TILE_STRIPS * DW8_TILE_ROWS
    return f"dwconv_s8_tile<{g.s}, {g.stride[0]}, {qv}, {DW8_TILE_ROWS}, {epi.nl_instance}>", grid, threads, tiled


def dwconv2d_s8(x: Any, w: Any, y: Any, g: ConvGeometry, epi: DeviceEpilogue, residual: Any = None,
                ldy: int | None = None) -> None:
    """Enqueue the INT8 depthwise convolution on the current stream.

    x: (N, H, W, Cp16) int8; w: ``pack_dw_weights8``'s (ceil(R*S / 4), Cp16, 4) int8;
    residual: (N, P, Q, Cp16) int8 or None;
    y: int8 (N, P, Q, Cp16), or float32 with channel stride ``ldy`` when ``epi`` has no output scale.
    """
    ldy = cp16(g.c) if ldy is None else ldy
    name, grid, threads, args = dw_launch8(x, w, y, g, epi, residual, ldy)
    dw_fn(name)(grid, (threads,), tuple(ptr(a) if i < 6 else a for i, a in enumerate(args)))
