"""The direct (CUDA-core) FP16 grouped convolution for small groups (``grouped_src``): weight
packing, eligibility, its tactics and the launcher.

The tensor-core kernel runs a grouped convolution as one implicit GEMM per group, merged to 8
channels and at least 32 columns wide, so ResNeXt's 4- and 8-channel groups use an eighth or a
quarter of its MMAs. ``grouped_conv_tile`` computes each group's outputs alone with fp32 FMAs. It
is a tactic ('gdirect_q2', 'gdirect_q4': 2 or 4 output columns a thread) that the builder times
beside the tiles (``tactics.time_conv_gdirect``), so each layer takes whichever is faster.

Here ``g`` is a ``ConvGeometry`` with the layer's sizes (its ``groups`` field may be the
tensor-core path's merged count; ``ConvGeometry`` only admits 8-channel groups) and ``groups`` the
layer's true group count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from backends.gpu.kernels.conv import ConvGeometry, KernelLaunch, enqueue
from backends.gpu.kernels.grouped_src import GROUPED_SRC
from backends.gpu.layout import round_up

GD_ROWS, GD_STRIPS = 8, 4  # grouped_src's GD_ROWS, GD_STRIPS: a warp is 8 rows x 4 strips of outputs
GD_COLUMNS = (2, 4)  # output columns a thread (QV): 'gdirect_q2', 'gdirect_q4'
GD_WINDOWS = (1, 3)  # square windows compiled (S)
GD_STRIDES = (1, 2)
GD_MAX_GROUP = 32  # largest Cg and Kg
GD_MAX_WARPS = 8  # the kernel's __launch_bounds__(256)
GD_SLAB = 32  # input channels a block aims to cover (its groups' Cg together)
GD_MAX_SMEM = 96 * 1024  # shared memory a block may take (within every sm_80+ GPU's opt-in limit)
GDIRECT_HEAD = "gdirect"
_NAMES = [f"grouped_conv_tile<{cv}, {kt}, {s}, {st}, {qv}>" for cv in (4, 8) for kt in (4, 8)
          for s in GD_WINDOWS for st in GD_STRIDES for qv in GD_COLUMNS]
i32, f32 = np.int32, np.float32


@dataclass(frozen=True)
class GroupedDirectTactic:
    """A whole-layer tactic of a grouped convolution: ``grouped_conv_tile`` with ``columns``
    output columns a thread."""

    columns: int

    @property
    def name(self) -> str:
        return f"{GDIRECT_HEAD}_q{self.columns}"

    def workspace_bytes(self, g: ConvGeometry) -> int:
        return 0


def parse_gdirect(name: Any) -> GroupedDirectTactic | None:
    """Inverse of ``GroupedDirectTactic.name`` for the compiled column counts, else None."""
    if not isinstance(name, str) or not name.startswith(f"{GDIRECT_HEAD}_q"):
        return None
    digits = name[len(GDIRECT_HEAD) + 2:]
    if not digits.isdigit() or int(digits) not in GD_COLUMNS:
        return None
    t = GroupedDirectTactic(int(digits))
    return t if t.name == name else None


@dataclass(frozen=True)
class BlockShape:
    """How ``grouped_conv_tile`` covers one layer: groups a block (GB), channel vectors (CV) and
    output channels a warp (KT), grid, threads and dynamic shared memory."""

    gb: int
    cv: int
    kt: int
    grid: tuple[int, int]
    threads: int
    smem: int


def block_shape(g: ConvGeometry, groups: int, columns: int) -> BlockShape:
    """The launch shape for ``columns`` output columns a thread. A block takes about ``GD_SLAB``
    input channels of whole groups (a multiple of 8, so its slab is whole 16-byte vectors), at most
    ``GD_MAX_WARPS`` warps, and no more group slots than the padded output has."""
    cg, kg = g.c // groups, g.k // groups
    cv, kt = (8 if cg % 8 == 0 else 4), (8 if kg % 8 == 0 else 4)
    ks, step = kg // kt, (1 if cg % 8 == 0 else 2)
    slots = -(-g.kp // kg)  # real groups, then the slots of the padded channels K..Kp-1
    gb = min(max(GD_SLAB // cg, 1), max(GD_MAX_WARPS // ks, 1), round_up(slots, step))
    gb = max(step, gb - gb % step)
    st = g.stride[0]
    tw = GD_STRIPS * columns
    iw = (tw - 1) * st + g.s
    ih = (GD_ROWS - 1) * st + g.r
    plane = (st * -(-ih // st) * (iw | 1)) | 1
    smem = gb * g.r * g.s * cg * kg * 4 + gb * cg // 8 * plane * 16
    tiles = g.n * -(-g.p // GD_ROWS) * -(-g.q // tw)
    return BlockShape(gb, cv, kt, (tiles, -(-slots // gb)), gb * ks * 32, smem)


def grouped_direct_tactics(g: ConvGeometry, groups: int) -> list[GroupedDirectTactic]:
    """The tactics ``grouped_conv_tile`` offers for the layer (none where it does not apply): an FP16
    grouped (not depthwise) convolution with Cg and Kg multiples of 4 up to ``GD_MAX_GROUP``, a
    square 1x1 or 3x3 window, stride 1 or 2 both ways, dilation 1, and a block within
    ``GD_MAX_WARPS`` warps and ``GD_MAX_SMEM`` bytes."""
    if groups <= 1 or g.c % groups or g.k % groups:
        return []
    cg, kg = g.c // groups, g.k // groups
    if (cg % 4 or kg % 4 or cg > GD_MAX_GROUP or kg > GD_MAX_GROUP or g.r != g.s or g.s not in GD_WINDOWS
            or g.stride[0] != g.stride[1] or g.stride[0] not in GD_STRIDES or g.dilation != (1, 1)):
        return []
    out = []
    for qv in GD_COLUMNS:
        shape = block_shape(g, groups, qv)
        if shape.threads <= GD_MAX_WARPS * 32 and shape.smem <= GD_MAX_SMEM and shape.grid[1] <= 65535:
            out.append(GroupedDirectTactic(qv))
    return out


def heuristic_gdirect(g: ConvGeometry, groups: int) -> GroupedDirectTactic | None:
    """The untimed choice: 4 columns a thread on outputs at least 16 wide (a 16-column block tile),
    else 2 (an 8-column one; a 7-wide output would leave most of a 16-wide tile empty)."""
    cands = grouped_direct_tactics(g, groups)
    if not cands:
        return None
    want = 4 if g.q >= 16 else 2
    return next((t for t in cands if t.columns == want), cands[0])


def pack_grouped_weights(kernel: np.ndarray, groups: int) -> np.ndarray:
    """IR grouped kernel (K, Cg, R, S) -> (G, R, S, Cg, Kg) fp16: each group's taps, then its input
    channels, then its output channels (a warp reads KT consecutive output channels of one tap)."""
    k, cg, r, s = kernel.shape
    if k % groups:
        raise ValueError(f"{groups} groups do not divide K = {k}")
    kg = k // groups
    return np.ascontiguousarray(kernel.reshape(groups, kg, cg, r, s).transpose(0, 3, 4, 2, 1)).astype(np.float16)


def grouped_conv_launch(x: Any, w: Any, bias: Any, y: Any, g: ConvGeometry, groups: int,
                        tactic: GroupedDirectTactic, act: tuple[int, float, float] = (0, 0.0, 0.0),
                        residual: Any = None) -> KernelLaunch:
    """The launch of ``grouped_conv`` (checked against the eligibility rule)."""
    if tactic not in grouped_direct_tactics(g, groups):
        raise ValueError(f"{tactic.name} does not apply to {g} with {groups} groups")
    sh = block_shape(g, groups, tactic.columns)
    tq, tp = -(-g.q // (GD_STRIPS * tactic.columns)), -(-g.p // GD_ROWS)
    kernel = f"grouped_conv_tile<{sh.cv}, {sh.kt}, {g.s}, {g.stride[0]}, {tactic.columns}>"
    ptr = [a if a is not None else np.uint64(0) for a in (bias, residual)]
    sizes = (g.h, g.w, g.c, g.k, groups, g.c // groups, g.k // groups, g.p, g.q, g.r, *g.pad, tq, tp, sh.gb)
    return KernelLaunch(kernel, sh.grid, sh.threads,
                        (x, w, ptr[0], ptr[1], y, *map(i32, sizes), i32(act[0]), f32(act[1]), f32(act[2])), sh.smem)


def grouped_conv(x: Any, w: Any, bias: Any, y: Any, g: ConvGeometry, groups: int, tactic: GroupedDirectTactic,
                 act: tuple[int, float, float] = (0, 0.0, 0.0), residual: Any = None) -> None:
    """Enqueue y = act(grouped conv(x, w) + bias + residual) on the current stream. x: (N, H, W, Cp)
    fp16; w: ``pack_grouped_weights``; bias: (Kp,) fp32 or None; y, residual: (N, P, Q, Kp) fp16."""
    enqueue([grouped_conv_launch(x, w, bias, y, g, groups, tactic, act, residual)], GROUPED_SRC, _NAMES)


def compile_all() -> None:
    """Compile the module now (NVRTC), not at the first launch."""
    from backends.gpu.kernels.compile import get_module

    get_module(GROUPED_SRC, _NAMES)
