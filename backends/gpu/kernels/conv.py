"""Implicit-GEMM convolution: geometry, tactics (tile shapes x split-K) and the launcher.

The 1x1 convolution and the fully connected layer are the same kernel with R = S = 1 (an FC layer
is a 1x1 convolution on an N x 1 x 1 x C tensor). Layouts are documented in ``conv_src``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from backends.gpu.kernels.compile import get_function
from backends.gpu.kernels.conv_src import CONV_SRC
from backends.gpu.layout import round_up

BK = 32
ROW_BYTES = 64  # a k-tile row in shared memory (igemm_src): BK fp16 or 64 int8 channels


@dataclass(frozen=True)
class ConvGeometry:
    """A 2-D convolution's sizes; ``c`` and ``k`` are the true channel counts (not padded)."""

    n: int
    h: int
    w: int
    c: int
    k: int
    r: int
    s: int
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)  # top/left; the output size may also use ``pad_end``
    dilation: tuple[int, int] = (1, 1)
    pad_end: tuple[int, int] | None = None  # bottom/right, defaults to ``pad``

    @property
    def cp(self) -> int:
        return round_up(self.c, 8)

    @property
    def kp(self) -> int:
        return round_up(self.k, 8)

    @property
    def p(self) -> int:
        end = self.pad_end or self.pad
        return (self.h + self.pad[0] + end[0] - self.dilation[0] * (self.r - 1) - 1) // self.stride[0] + 1

    @property
    def q(self) -> int:
        end = self.pad_end or self.pad
        return (self.w + self.pad[1] + end[1] - self.dilation[1] * (self.s - 1) - 1) // self.stride[1] + 1

    @property
    def m(self) -> int:
        return self.n * self.p * self.q

    @property
    def ktot(self) -> int:
        return self.r * self.s * self.cp

    @property
    def flops(self) -> int:
        """Useful multiply-adds x 2 (true channel counts, no padding)."""
        return 2 * self.m * self.k * self.r * self.s * self.c


@dataclass(frozen=True)
class Tile:
    """A CTA tile: BM x BN outputs, WM x WN warps, a STAGES-deep cp.async pipeline (BK = 32).

    The INT8 kernel shares the mainloop, so ``int8.Tile8`` differs only in class attributes (the
    kernel and the epilogue's shared-memory tile), which stay out of the fields, eq, hash and repr.
    """

    bm: int
    bn: int
    wm: int
    wn: int
    stages: int

    KERNEL: ClassVar[str] = "conv_igemm"
    EPI_PAD: ClassVar[int] = 8  # epilogue smem tile: row padding (elements) and element size (fp16)
    EPI_BYTES: ClassVar[int] = 2

    @property
    def threads(self) -> int:
        return self.wm * self.wn * 32

    @property
    def smem_bytes(self) -> int:
        pipeline = self.stages * (self.bm + self.bn) * ROW_BYTES
        epilogue = self.bm * (self.bn + self.EPI_PAD) * self.EPI_BYTES
        return max(pipeline, epilogue)

    @property
    def template(self) -> str:
        return f"{self.KERNEL}<{self.bm},{self.bn},{self.wm},{self.wn},{self.stages}>"


# The tile shapes compiled into the module; every tactic picks one of them.
TILES: tuple[Tile, ...] = (
    Tile(128, 256, 2, 4, 3),
    Tile(128, 128, 2, 2, 3),
    Tile(128, 128, 2, 4, 3),
    Tile(128, 64, 2, 2, 4),
    Tile(64, 128, 2, 2, 4),
    Tile(64, 64, 2, 2, 4),
    Tile(64, 32, 2, 1, 4),
    Tile(32, 64, 1, 2, 4),
    Tile(32, 32, 2, 1, 4),
    Tile(16, 64, 1, 2, 4),
)


@dataclass(frozen=True)
class ConvTactic:
    tile: Tile
    splits: int = 1

    @property
    def name(self) -> str:
        t = self.tile
        return f"igemm_{t.bm}x{t.bn}_w{t.wm}x{t.wn}_s{t.stages}_k{self.splits}"

    def grid(self, g: ConvGeometry) -> tuple[int, int, int]:
        kt = -(-g.ktot // BK)
        kps = -(-kt // self.splits)
        return (-(-g.m // self.tile.bm), -(-g.k // self.tile.bn), -(-kt // kps))

    def k_tiles_per_split(self, g: ConvGeometry) -> int:
        kt = -(-g.ktot // BK)
        return -(-kt // self.splits)

    def workspace_bytes(self, g: ConvGeometry) -> int:
        z = self.grid(g)[2]
        return 0 if z == 1 else z * g.m * g.kp * 4


def candidate_tactics(g: ConvGeometry, sms: int = 132) -> list[ConvTactic]:
    """Tactics worth timing for ``g``: every tile, plus split-K where the grid underfills the GPU."""
    out: list[ConvTactic] = []
    kt = -(-g.ktot // BK)
    for t in TILES:
        ctas = -(-g.m // t.bm) * -(-g.k // t.bn)
        if t.bm >= 2 * max(g.m, 16) or t.bn >= 2 * max(g.kp, 16):
            continue  # mostly empty tile
        out.append(ConvTactic(t, 1))
        if ctas < sms:
            for s in (2, 3, 4, 6, 8, 12, 16):
                if ctas * s <= 2 * sms and kt // s >= 2:
                    out.append(ConvTactic(t, s))
    return out


_NAMES = [t.template for t in TILES]


def _kernel(tile: Tile) -> Any:
    return get_function(CONV_SRC, tile.template, name_expressions=_NAMES, dynamic_smem=tile.smem_bytes)


def compile_all() -> None:
    """Compile the convolution module now (NVRTC takes seconds), not at the first launch."""
    for t in TILES:
        _kernel(t)


def _ptr(a: Any) -> Any:
    return a if a is not None else np.uint64(0)


def conv2d(x: Any, w: Any, bias: Any, y: Any, g: ConvGeometry, tactic: ConvTactic,
           act: tuple[int, float, float] = (0, 0.0, 0.0), residual: Any = None, workspace: Any = None,
           scale: Any = None) -> None:
    """Enqueue y = act(conv(x * scale, w) + bias + residual) on the current stream.

    x: (N, H, W, Cp) fp16; w: (K, R, S, Cp) fp16; bias: (K,) fp32 or None; y, residual:
    (N, P, Q, Kp) fp16. ``workspace`` (fp32, >= tactic.workspace_bytes) is needed for split-K.
    ``scale``: (N, Cp) fp16 per-image channel scale (a squeeze-excitation), 1x1 convolutions only.
    """
    if scale is not None and (g.r, g.s) != (1, 1):
        raise ValueError("an input scale needs a 1x1 convolution")
    grid = tactic.grid(g)
    split = grid[2] > 1
    if split and (workspace is None or workspace.nbytes < tactic.workspace_bytes(g)):
        raise ValueError(f"{tactic.name} needs a {tactic.workspace_bytes(g)}-byte workspace")
    i32, f32 = np.int32, np.float32
    code, alpha, beta = act
    geo = (g.n, g.h, g.w, g.cp, g.k, g.p, g.q, g.r, g.s, *g.stride, *g.pad, *g.dilation)
    fn = _kernel(tactic.tile)
    fn(grid, (tactic.tile.threads,),
       (x, w, _ptr(bias), _ptr(None if split else residual), y, _ptr(workspace if split else None), _ptr(scale),
        *map(i32, geo), i32(code), f32(alpha), f32(beta), i32(tactic.k_tiles_per_split(g))),
       shared_mem=tactic.tile.smem_bytes)
    if split:
        ep = get_function(CONV_SRC, "splitk_epilogue", name_expressions=_NAMES)
        total = g.m * (g.kp // 8)
        ep((-(-total // 256),), (256,),
           (workspace, i32(grid[2]), _ptr(bias), _ptr(residual), y, i32(g.m), i32(g.k),
            i32(code), f32(alpha), f32(beta)))


def heuristic_tactic(g: ConvGeometry, sms: int = 132) -> ConvTactic:
    """A reasonable tactic without timing: big tiles when they fill the GPU, else small tiles + split-K."""
    def ctas(t: Tile) -> int:
        return -(-g.m // t.bm) * -(-g.k // t.bn)

    for t in (Tile(128, 128, 2, 4, 3), Tile(128, 64, 2, 2, 4), Tile(64, 64, 2, 2, 4)):
        if ctas(t) >= sms:
            return ConvTactic(t)
    t = Tile(16, 64, 1, 2, 4) if g.m <= 16 else Tile(32, 64, 1, 2, 4)
    kt = -(-g.ktot // BK)
    splits = max(1, min(16, sms // max(ctas(t), 1), kt // 4))
    return ConvTactic(t, splits)
