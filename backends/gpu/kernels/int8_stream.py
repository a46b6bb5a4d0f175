"""The streaming INT8 1x1 kernel (``int8_stream_src.conv1x1_stream_s8``) as a tactic of the INT8 convolution.

Timed beside the tiles and the pointwise kernel (``tactics.time_conv8``) on the layers it fits, so
a layer takes it only where the build measured it faster; its integers are the tiles', so the
choice never changes an output bit. The grid fills the GPU once: as many CTAs as are resident on
every SM at a time (from the compiled kernel's registers and the launch's shared memory), at most
one per output tile.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from backends.gpu.kernels.compile import decided_once, get_function
from backends.gpu.kernels.conv import ConvGeometry, KernelLaunch
from backends.gpu.kernels.int8_stream_src import STREAM8_SRC
from backends.gpu.layout import round_up

STREAM8_MAX_CP = 512  # input channels a CTA keeps with its weights (8 k-tiles of 64 bytes)
SMEM_PER_SM = 228 * 1024  # Hopper and Ampere (sm_80/sm_90): shared memory of one SM, bytes
SMEM_PER_CTA = 227 * 1024  # the most one CTA may take
SMEM_RESERVED = 1024  # the runtime's share of each CTA's shared memory (sm_80+)
REGS_PER_SM, THREADS_PER_SM, CTAS_PER_SM = 65536, 2048, 32


@dataclass(frozen=True)
class StreamTile8:
    """A CTA of the streaming kernel: BM x BN output tiles, WM x WN warps, a ring of STAGES A tiles."""

    bm: int
    bn: int
    wm: int
    wn: int
    stages: int

    @property
    def threads(self) -> int:
        return self.wm * self.wn * 32

    @property
    def template(self) -> str:
        return f"conv1x1_stream_s8<{self.bm}, {self.bn}, {self.wm}, {self.wn}, {self.stages}>"

    def smem_bytes(self, k_tiles: int) -> int:
        """The resident weights, the A ring and each warp's int32 scratch (its tile, rows padded by 4)."""
        scratch = self.bm * (self.bn + 4 * self.wn) * 4
        return (self.bn + self.stages * self.bm) * k_tiles * 64 + scratch


# Two stages where one A tile is large (many input channels): the ring then only costs CTAs per SM.
STREAM8_TILES: tuple[StreamTile8, ...] = (
    StreamTile8(128, 64, 2, 2, 2),
    StreamTile8(128, 64, 2, 2, 3),
    StreamTile8(128, 64, 2, 2, 4),
    StreamTile8(64, 128, 2, 2, 2),
    StreamTile8(64, 128, 2, 2, 3),
    StreamTile8(128, 128, 2, 4, 2),
    StreamTile8(128, 128, 2, 4, 3),
    StreamTile8(64, 256, 2, 4, 3),
)
STREAM8_NAMES = [t.template for t in STREAM8_TILES]
NARROWEST_BN = min(t.bn for t in STREAM8_TILES)


@dataclass(frozen=True)
class StreamTactic8:
    """``conv1x1_stream_s8`` with one tile as an INT8 tactic (no split-K, no workspace)."""

    tile: StreamTile8
    splits: int = 1

    @property
    def name(self) -> str:
        t = self.tile
        return f"s8stream_{t.bm}x{t.bn}_w{t.wm}x{t.wn}_s{t.stages}"

    def workspace_bytes(self, g: ConvGeometry) -> int:
        return 0


def parse_stream8(name: str) -> StreamTactic8 | None:
    """Inverse of ``StreamTactic8.name``; None for any other name (a tile not compiled included)."""
    return next((StreamTactic8(t) for t in STREAM8_TILES if StreamTactic8(t).name == name), None)


def k_tiles(g: ConvGeometry) -> int:
    """64-byte k-tiles of one pixel's channels (Cp = C rounded up to 16)."""
    return -(-round_up(g.c, 16) // 64)


def stream8_fits(g: ConvGeometry, tile: StreamTile8, ldy: int | None = None) -> bool:
    """Whether the kernel runs the layer with ``tile``: 1x1, no padding, one group, no dilation, at
    most STREAM8_MAX_CP input channels, shared memory within one CTA's, no output row wider than Kp,
    and an output tile that is not mostly past K (the narrowest tile takes any K)."""
    kp = round_up(g.k, 16)
    return ((g.r, g.s) == (1, 1) and g.pad == (0, 0) and g.pad_end in (None, (0, 0)) and g.groups == 1
            and g.dilation == (1, 1) and round_up(g.c, 16) <= STREAM8_MAX_CP
            and tile.smem_bytes(k_tiles(g)) <= SMEM_PER_CTA and (ldy is None or ldy <= kp)
            and (tile.bn == NARROWEST_BN or tile.bn < 2 * kp))


def stream8_candidates(g: ConvGeometry, ldy: int | None = None) -> list[StreamTactic8]:
    """Every compiled tile that fits the layer."""
    return [StreamTactic8(t) for t in STREAM8_TILES if stream8_fits(g, t, ldy)]


def resident_ctas(tile: StreamTile8, k_tiles_: int, regs: int) -> int:
    """CTAs of ``tile`` one SM holds at a time: the least of the thread, register (allocated per
    warp in units of 256), shared-memory and CTA limits of sm_80 / sm_90, at least 1."""
    warp_regs = round_up(max(regs, 1) * 32, 256)
    by_regs = REGS_PER_SM // (warp_regs * (tile.threads // 32))
    by_smem = SMEM_PER_SM // (tile.smem_bytes(k_tiles_) + SMEM_RESERVED)
    return max(1, min(THREADS_PER_SM // tile.threads, by_regs, by_smem, CTAS_PER_SM))


def stream8_grid(g: ConvGeometry, tile: StreamTile8, ctas: int) -> tuple[int, int]:
    """(CTAs along the pixels, column blocks): ``ctas`` resident CTAs shared by the column blocks,
    at most one CTA per output tile along the pixels."""
    cols = -(-round_up(g.k, 16) // tile.bn)
    tiles = -(-g.m // tile.bm)
    return (max(1, min(tiles, ctas // cols)), cols)


def stream8_launch(x: Any, w: Any, y: Any, g: ConvGeometry, tactic: StreamTactic8, epi: Any, residual: Any,
                   ldy: int, ctas: int) -> KernelLaunch:
    """The launch of ``conv1x1_stream_s8`` over ``ctas`` resident CTAs (``epi``: an
    ``int8.DeviceEpilogue``); raises ValueError where the tile does not fit the layer."""
    tile = tactic.tile
    if not stream8_fits(g, tile, ldy):
        raise ValueError(f"the streaming INT8 kernel does not take {g} with {tactic.name}")
    kt = k_tiles(g)
    i32 = np.int32
    args = (x, w, i32(g.n), i32(g.h), i32(g.w), i32(round_up(g.c, 16)), i32(g.k), i32(g.p), i32(g.q),
            i32(g.stride[0]), i32(g.stride[1]), i32(kt), *epi.args(residual, round_up(g.k, 16), y, ldy))
    return KernelLaunch(tile.template, stream8_grid(g, tile, ctas), tile.threads, args, tile.smem_bytes(kt))


def _function(tile: StreamTile8, smem: int) -> Any:
    return get_function(STREAM8_SRC, tile.template, name_expressions=STREAM8_NAMES, dynamic_smem=smem)


@functools.cache
def _multiprocessors(device: int) -> int:
    import cupy

    return int(cupy.cuda.Device(device).attributes["MultiProcessorCount"])


def stream8(x: Any, w: Any, y: Any, g: ConvGeometry, tactic: StreamTactic8, epi: Any, residual: Any, ldy: int) -> None:
    """Enqueue the streaming kernel on the current stream, its grid filling this GPU once."""
    import cupy

    tile, kt = tactic.tile, k_tiles(g)
    fn = _function(tile, tile.smem_bytes(kt))
    sms = _multiprocessors(cupy.cuda.Device().id)
    launch = stream8_launch(x, w, y, g, tactic, epi, residual, ldy, sms * resident_ctas(tile, kt, fn.num_regs))
    fn(launch.grid, (launch.block,), launch.args, shared_mem=launch.shared_mem)


@decided_once
def stream8_usable() -> bool:
    """Whether the module compiles here (once; a compiler that rejects it leaves the tiles)."""
    try:
        for t in STREAM8_TILES:
            _function(t, 0)
        return True
    except Exception:  # no GPU, no CuPy, an NVRTC that rejects the text
        return False


def stream8_runs(g: ConvGeometry, tactic: StreamTactic8, ldy: int | None = None) -> bool:
    """Whether a layer may take ``tactic`` here: the tile fits it and the module compiles."""
    return stream8_fits(g, tactic.tile, ldy) and stream8_usable()
