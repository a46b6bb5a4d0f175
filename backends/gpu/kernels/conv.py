"""Implicit-GEMM convolution: geometry, tactics (tile shapes x split-K) and the launcher.

The 1x1 convolution and the fully connected layer are the same kernel with R = S = 1 (an FC layer
is a 1x1 convolution on an N x 1 x 1 x C tensor). A grouped convolution is G implicit GEMMs in one
launch (grid y holds G x the column tiles of one group); its per-group channel counts must be
multiples of 8. Layouts are documented in ``conv_src``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from backends.gpu.kernels.compile import compile_concurrently, decided_once, get_function
from backends.gpu.kernels.conv_src import CONV_SRC
from backends.gpu.kernels.wgmma_src import WGMMA_F16_OP, WGMMA_SRC
from backends.gpu.layout import round_up

BK = 32  # fp16 channels per k-tile of the default (64-byte row) tiles
MAX_GRID_Y = 65535  # CUDA's bound on gridDim.y (column tiles x groups)


@dataclass(frozen=True)
class ConvGeometry:
    """A 2-D convolution's sizes; ``c`` and ``k`` are the true channel counts (not padded), of all
    groups together. With ``groups`` > 1 (the tensor-core kernel's grouped path) each group's
    channels ``cg`` and ``kg`` must be multiples of 8, so nothing is padded."""

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
    groups: int = 1

    def __post_init__(self) -> None:
        g = self.groups
        if g < 1 or self.c % g or self.k % g:
            raise ValueError(f"{g} groups do not divide C = {self.c} and K = {self.k}")
        if g > 1 and (self.cg % 8 or self.kg % 8):
            raise ValueError(f"grouped implicit GEMM needs per-group channels that are multiples of 8, "
                             f"got C/G = {self.cg} and K/G = {self.kg}")

    @property
    def cg(self) -> int:
        """Input channels of one group."""
        return self.c // self.groups

    @property
    def kg(self) -> int:
        """Output channels of one group."""
        return self.k // self.groups

    @property
    def cgp(self) -> int:
        """One group's reduction channels as the kernel reads them: Cp for one group, else Cg."""
        return self.cp if self.groups == 1 else self.cg

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
        """The reduction depth of one output channel (one group's R*S*Cp)."""
        return self.r * self.s * self.cgp

    @property
    def flops(self) -> int:
        """Useful multiply-adds x 2 (true channel counts, no padding)."""
        return 2 * self.m * self.k * self.r * self.s * self.cg

    def col_blocks(self, bn: int) -> int:
        """Grid y of a tile BN wide: every group's column tiles."""
        return self.groups * -(-self.kg // bn)


@dataclass(frozen=True)
class Tile:
    """A CTA tile: BM x BN outputs, WM x WN warps, a STAGES-deep cp.async pipeline whose k-tile
    rows are ``kc`` 16-byte chunks (4: BK = 32 fp16 channels; 8: BK = 64, half the barriers).

    The INT8 kernel shares the mainloop, so ``int8.Tile8`` differs only in class attributes (the
    kernel, the elements per chunk and the epilogue's shared-memory tile), which stay out of the
    fields, eq, hash and repr.
    """

    bm: int
    bn: int
    wm: int
    wn: int
    stages: int
    kc: int = 4

    KERNEL: ClassVar[str] = "conv_igemm"
    HEAD: ClassVar[str] = "igemm"  # tactic names begin with it
    CHUNK: ClassVar[int] = 8  # elements per 16-byte chunk
    EPI_PAD: ClassVar[int] = 8  # epilogue smem tile: row padding (elements) and element size (fp16)
    EPI_BYTES: ClassVar[int] = 2
    ALIGN: ClassVar[int] = 0  # extra bytes to start the stages on the compute step's boundary

    @property
    def bk(self) -> int:
        """Reduction elements per k-tile."""
        return self.kc * self.CHUNK

    @property
    def long_rows(self) -> bool:
        """Whether the k-tile rows are 128 bytes (kc = 8) rather than the default 64."""
        return self.kc != 4

    @property
    def dims(self) -> str:
        """'BMxBN', with 'xBK' for the 128-byte-row tiles (tactic names of 64-byte rows predate them)."""
        return f"{self.bm}x{self.bn}" + (f"x{self.bk}" if self.long_rows else "")

    @property
    def threads(self) -> int:
        return self.wm * self.wn * 32

    @property
    def smem_bytes(self) -> int:
        pipeline = self.stages * (self.bm + self.bn) * self.kc * 16 + self.ALIGN
        epilogue = self.bm * (self.bn + self.EPI_PAD) * self.EPI_BYTES
        return max(pipeline, epilogue)

    @property
    def template(self) -> str:
        return f"{self.KERNEL}<{self.bm},{self.bn},{self.wm},{self.wn},{self.stages},{self.kc}>"


# The tile shapes compiled into the module; every tactic picks one of them.
TILES: tuple[Tile, ...] = (
    Tile(128, 256, 2, 4, 3),
    Tile(128, 128, 2, 2, 3),
    Tile(128, 128, 2, 4, 3),
    Tile(128, 64, 2, 2, 4),
    Tile(64, 128, 2, 2, 4),
    Tile(64, 64, 2, 2, 4),
    Tile(128, 32, 4, 1, 4),  # narrow outputs (16-32 channels) over many pixels: 4 warps a CTA, not 2
    Tile(64, 32, 2, 1, 4),
    Tile(32, 64, 1, 2, 4),
    Tile(32, 32, 2, 1, 4),
    Tile(16, 64, 1, 2, 4),
    # two stages for short reductions (a 1x1 convolution on 16-128 channels has 1-4 k-tiles, the
    # MobileNetV2 / EfficientNet expand and project layers): deeper pipelines' shared memory only
    # lowers the CTAs per SM there, and those layers are bound by their epilogues' latency
    Tile(128, 128, 2, 2, 2),
    Tile(128, 64, 2, 2, 2),
    Tile(64, 128, 2, 2, 2),
    Tile(64, 64, 2, 2, 2),
    # 128-byte rows: twice the work between barriers, for long reductions at large batch
    Tile(128, 256, 2, 4, 3, 8),
    Tile(256, 128, 4, 2, 3, 8),
    Tile(128, 128, 2, 4, 3, 8),
)
NARROWEST_BN = min(t.bn for t in TILES)  # a layer with fewer output channels still needs a candidate
LONG_ROW_MIN_K_TILES = 4  # 128-byte-row tiles are candidates from this many of their k-tiles
SHORT_K_TILES = 4  # two-stage tiles are candidates up to this many k-tiles


def mostly_empty_width(bn: int, width: int, narrowest: int, groups: int) -> bool:
    """Whether a tile ``bn`` columns wide is mostly empty for a group of ``width`` output channels
    (padded to the kernel's vector): at least twice the width, or twice the narrowest tile's for a
    layer narrower than that (it still needs a candidate); grouped layers keep 32-column tiles."""
    return bn >= 2 * max(width, narrowest) and (groups == 1 or bn > 32)


@dataclass(frozen=True)
class TileWg(Tile):
    """A tile of the warpgroup-MMA mainloop (``wgmma_src``, sm_90a only): 128-byte rows, BM / 64
    warpgroups of 4 warps (``wm`` = BM / 16, ``wn`` = 1), each computing 64 rows x BN. With 4 or more
    stages one k-tile of MMAs stays in flight while the next is issued."""

    HEAD: ClassVar[str] = "wgmma"
    ALIGN: ClassVar[int] = 1024  # the 128-byte swizzle atom: the stages start on this boundary

    def __post_init__(self) -> None:
        if self.kc != 8 or self.wn != 1 or self.wm * 16 != self.bm or self.bm % 64 or self.bn not in (64, 128, 256):
            raise ValueError(f"not a wgmma tile: {self}")

    @property
    def inflight(self) -> int:
        return 1 if self.stages >= 4 else 0

    @property
    def template(self) -> str:
        base = super().template[:-1]  # without its closing '>'
        return f"{base},IgemmWgmma<{self.inflight}>>"


# The wgmma tiles (timed only on sm_90 devices, ``wgmma_usable``).
TILES_WG: tuple[TileWg, ...] = (
    TileWg(128, 256, 8, 1, 4, 8),
    TileWg(128, 256, 8, 1, 3, 8),
    TileWg(128, 128, 8, 1, 4, 8),
    TileWg(128, 128, 8, 1, 3, 8),
    TileWg(64, 256, 4, 1, 4, 8),
    TileWg(256, 128, 16, 1, 4, 8),
    # 64 columns: the 64-channel layers (ResNet stage 1), where wider tiles are mostly empty
    TileWg(128, 64, 8, 1, 4, 8),
    TileWg(256, 64, 16, 1, 4, 8),
)


def parse_tile_tactic(name: str, head: str, tile_type: type[Tile], tiles: Sequence[Tile],
                      make: Callable[[Any, int], Any]) -> Any:
    """Inverse of a tactic name '{head}_{dims}_w{WM}x{WN}_s{STAGES}_k{SPLITS}' (``Tile.dims``):
    ``make(tile, splits)``, or None when the name does not parse, names a tile not in ``tiles``
    (the kernels the module compiles) or is not the tactic's own spelling of itself."""
    try:
        got, dims, warps, stages, splits = name.split("_")
        sizes = list(map(int, dims.split("x")))
        wm, wn = map(int, warps[1:].split("x"))
        kc = sizes[2] // tile_type.CHUNK if len(sizes) == 3 else 4
        tile = tile_type(sizes[0], sizes[1], wm, wn, int(stages[1:]), kc)
        tactic = make(tile, int(splits[1:]))
    except (ValueError, AttributeError, IndexError):
        return None
    return tactic if got == head and tile in tiles and tactic.splits >= 1 and tactic.name == name else None


@dataclass(frozen=True)
class ConvTactic:
    tile: Tile
    splits: int = 1

    @property
    def name(self) -> str:
        t = self.tile
        return f"{t.HEAD}_{t.dims}_w{t.wm}x{t.wn}_s{t.stages}_k{self.splits}"

    def grid(self, g: ConvGeometry) -> tuple[int, int, int]:
        kt = -(-g.ktot // self.tile.bk)
        kps = -(-kt // self.splits)
        return (-(-g.m // self.tile.bm), g.col_blocks(self.tile.bn), -(-kt // kps))

    def k_tiles_per_split(self, g: ConvGeometry) -> int:
        kt = -(-g.ktot // self.tile.bk)
        return -(-kt // self.splits)

    def workspace_bytes(self, g: ConvGeometry) -> int:
        z = self.grid(g)[2]
        return 0 if z == 1 else z * g.m * g.kp * 4


def candidate_tactics(g: ConvGeometry, sms: int = 132, wgmma: bool = False) -> list[ConvTactic]:
    """Tactics worth timing for ``g``: every tile (with ``wgmma``, the sm_90a tiles too), plus
    split-K where the grid underfills the GPU."""
    out: list[ConvTactic] = []
    for t in TILES + (TILES_WG if wgmma else ()):
        kt = -(-g.ktot // t.bk)
        # mma.sync's 128-byte rows pay off on long reductions; wgmma tiles compete at any depth
        if t.long_rows and (g.groups > 1 or (kt < LONG_ROW_MIN_K_TILES and not isinstance(t, TileWg))):
            continue
        ctas = -(-g.m // t.bm) * g.col_blocks(t.bn)
        if t.bm >= 2 * max(g.m, 16) or mostly_empty_width(t.bn, round_up(g.kg, 8), NARROWEST_BN, g.groups):
            continue  # mostly empty tile
        if g.col_blocks(t.bn) > MAX_GRID_Y or (t.stages == 2 and kt > SHORT_K_TILES):
            continue
        out.append(ConvTactic(t, 1))
        if ctas < sms:
            for s in (2, 3, 4, 6, 8, 12, 16):
                if ctas * s <= 2 * sms and kt // s >= 2:
                    out.append(ConvTactic(t, s))
    return out


_NAMES = [t.template for t in TILES]
# The sm_90a module: the same kernels and epilogues, plus the wgmma instances.
CONV_WG_SRC = CONV_SRC + WGMMA_SRC + WGMMA_F16_OP
_WG_NAMES = [t.template for t in TILES_WG]
WG_ARCH = "sm_90a"


def module_of(tile: Tile) -> tuple[str, list[str], str | None]:
    """The source, template instances and target (None: the device's) of the module with ``tile``'s kernel."""
    return (CONV_WG_SRC, _WG_NAMES, WG_ARCH) if isinstance(tile, TileWg) else (CONV_SRC, _NAMES, None)


def _kernel(tile: Tile) -> Any:
    src, names, arch = module_of(tile)
    return get_function(src, tile.template, name_expressions=names, dynamic_smem=tile.smem_bytes, arch=arch)


@decided_once
def wgmma_usable() -> bool:
    """Whether the wgmma tiles run here: an sm_90 device (Hopper) whose NVRTC compiles the sm_90a
    module, unless ``HETRT_WGMMA=0`` turns them off. Decided once per process; a failed
    compilation only removes the tiles from timing."""
    if os.environ.get("HETRT_WGMMA", "1") == "0":
        return False
    try:
        from backends.gpu.kernels.compile import device_arch

        if device_arch() != "sm_90":
            return False
        for t in TILES_WG:
            _kernel(t)
        return True
    except Exception:  # no CuPy or CUDA, or an NVRTC without sm_90a: the mma.sync tiles remain
        return False


def compile_tasks() -> list[Callable[[], object]]:
    """The convolution modules' compilations (the mma.sync one, the sm_90a wgmma one), each a task
    that ``compile.compile_concurrently`` may run beside the others."""
    return [lambda: [_kernel(t) for t in TILES], wgmma_usable]


def compile_all() -> None:
    """Compile the convolution modules now (NVRTC takes seconds), not at the first launch."""
    compile_concurrently(compile_tasks())


def _ptr(a: Any) -> Any:
    return a if a is not None else np.uint64(0)


@dataclass(frozen=True)
class KernelLaunch:
    """One kernel launch of CONV_SRC as CuPy takes it: the kernel's name expression, the grid, the
    block size, the argument tuple and the dynamic shared memory (bytes). The CPU emulator's tests
    run the same launches."""

    kernel: str
    grid: tuple[int, ...]
    block: int
    args: tuple[Any, ...]
    shared_mem: int = 0


def enqueue(launches: Sequence[KernelLaunch], source: str, names: Sequence[str], arch: str | None = None) -> None:
    """Run ``launches`` on the current stream from the module of ``source`` (``names``: its
    template instances; ``arch``: its target, None for the device's), raising each kernel's
    dynamic shared-memory limit as it needs."""
    for launch in launches:
        fn = get_function(source, launch.kernel, name_expressions=names, dynamic_smem=launch.shared_mem, arch=arch)
        fn(launch.grid, (launch.block,), launch.args, shared_mem=launch.shared_mem)


def conv2d_launches(x: Any, w: Any, bias: Any, y: Any, g: ConvGeometry, tactic: ConvTactic,
                    act: tuple[int, float, float] = (0, 0.0, 0.0), residual: Any = None, workspace: Any = None,
                    scale: Any = None) -> list[KernelLaunch]:
    """The launches of ``conv2d`` (its arguments and checks): the tile's kernel, then with split-K
    ``splitk_epilogue``."""
    if scale is not None and ((g.r, g.s) != (1, 1) or g.groups != 1):
        raise ValueError("an input scale needs a 1x1 ungrouped convolution")
    grid = tactic.grid(g)
    split = grid[2] > 1
    if split and (workspace is None or workspace.nbytes < tactic.workspace_bytes(g)):
        raise ValueError(f"{tactic.name} needs a {tactic.workspace_bytes(g)}-byte workspace")
    i32, f32 = np.int32, np.float32
    code, alpha, beta = act
    if grid[1] > MAX_GRID_Y:
        raise ValueError(f"{tactic.name} needs {grid[1]} blocks in grid y (at most {MAX_GRID_Y})")
    geo = (g.n, g.h, g.w, g.cgp, g.kg, g.p, g.q, g.r, g.s, *g.stride, *g.pad, *g.dilation, g.groups)
    out = [KernelLaunch(tactic.tile.template, grid, tactic.tile.threads,
                        (x, w, _ptr(bias), _ptr(None if split else residual), y, _ptr(workspace if split else None),
                         _ptr(scale), *map(i32, geo), i32(code), f32(alpha), f32(beta),
                         i32(tactic.k_tiles_per_split(g))),
                        tactic.tile.smem_bytes)]
    if split:
        total = g.m * (g.kp // 8)
        out.append(KernelLaunch("splitk_epilogue", (-(-total // 256),), 256,
                                (workspace, i32(grid[2]), _ptr(bias), _ptr(residual), y, i32(g.m), i32(g.k),
                                 i32(code), f32(alpha), f32(beta))))
    return out


def conv2d(x: Any, w: Any, bias: Any, y: Any, g: ConvGeometry, tactic: ConvTactic,
           act: tuple[int, float, float] = (0, 0.0, 0.0), residual: Any = None, workspace: Any = None,
           scale: Any = None) -> None:
    """Enqueue y = act(conv(x * scale, w) + bias + residual) on the current stream.

    x: (N, H, W, Cp) fp16; w: (K, R, S, Cp) fp16, or for G groups (G, K/G, R, S, C/G) (each group's
    KRSC block); bias: (K,) fp32 or None; y, residual: (N, P, Q, Kp) fp16. ``workspace`` (fp32,
    >= tactic.workspace_bytes) is needed for split-K. ``scale``: (N, Cp) fp16 per-image channel
    scale (a squeeze-excitation), 1x1 ungrouped convolutions only.
    """
    enqueue(conv2d_launches(x, w, bias, y, g, tactic, act, residual, workspace, scale), *module_of(tactic.tile))


CUBLAS_TACTIC = "cublas"  # a GEMM-shaped convolution as one cuBLAS GEMM + ``gemm_epilogue``


@dataclass(frozen=True)
class LayerTactic:
    """A whole-layer alternative to the implicit-GEMM tiles, timed beside them (no split-K
    workspace): ``CublasTactic``, ``GemvTactic``."""

    name: str

    def workspace_bytes(self, g: ConvGeometry) -> int:
        return 0


@dataclass(frozen=True)
class CublasTactic(LayerTactic):
    """The cuBLAS GEMM and ``gemm_epilogue`` of a GEMM-shaped convolution."""

    name: str = CUBLAS_TACTIC


def cublas_eligible(g: ConvGeometry) -> bool:
    """A 1x1, stride-1, unpadded, ungrouped convolution (or FC layer) on channel counts that are
    multiples of 8: x (M x C) times w^T (C x K) row-major, with no padded channels to keep zero."""
    return (g.r == g.s == 1 and g.stride == (1, 1) and g.pad == (0, 0) and g.pad_end in (None, (0, 0))
            and g.dilation == (1, 1) and g.groups == 1 and g.c % 8 == 0 and g.k % 8 == 0)


def conv2d_cublas(x: Any, w: Any, bias: Any, y: Any, g: ConvGeometry, act: tuple[int, float, float] = (0, 0.0, 0.0),
                  residual: Any = None) -> None:
    """Enqueue the same result as ``conv2d`` for a ``cublas_eligible`` geometry: the product on
    cuBLAS (fp32 accumulation, fp16 out), then bias, residual and activation in place."""
    from backends.gpu.kernels import cublas

    code, alpha, beta = act
    plan = cublas.plan_gemm((), g.m, g.k, g.c, (g.c, 1), (1, g.c))
    assert plan is not None
    cublas.gemm(plan, x, w, y)
    ep = get_function(CONV_SRC, "gemm_epilogue", name_expressions=_NAMES)
    total = g.m * (g.k // 8)
    ep((-(-total // 256),), (256,), (y, _ptr(bias), _ptr(residual), np.int32(g.m), np.int32(g.k), np.int32(code),
                                     np.float32(alpha), np.float32(beta)))


CUBLASLT_TACTIC = "cublaslt"  # one cuBLASLt GEMM with the bias, residual and ReLU in its epilogue


@dataclass(frozen=True)
class CublasLtTactic(LayerTactic):
    """The fused-epilogue cuBLASLt GEMM of a GEMM-shaped convolution (``kernels/cublaslt``)."""

    name: str = CUBLASLT_TACTIC


def cublaslt_eligible(g: ConvGeometry, act: tuple[int, float, float]) -> bool:
    """A ``cublas_eligible`` geometry whose activation cuBLASLt's epilogue computes."""
    from backends.gpu.kernels import cublaslt

    return cublas_eligible(g) and act[0] in cublaslt.EPILOGUES


def conv2d_cublaslt(x: Any, w: Any, bias: Any, y: Any, g: ConvGeometry, act: tuple[int, float, float] = (0, 0.0, 0.0),
                    residual: Any = None) -> None:
    """Enqueue ``conv2d``'s result for a ``cublaslt_eligible`` geometry as one cuBLASLt GEMM; the
    bias is fp16 here (``kernels/cublaslt``), K of it."""
    from backends.gpu.kernels import cublaslt

    cublaslt.gemm(x, w, bias, y, g.m, g.k, g.c, act[0], residual)


@dataclass(frozen=True)
class CudnnTactic(LayerTactic):
    """cuDNN's fused convolution with one of its algorithms (``kernels/cudnn``: ``cudnn_a<algo>``)."""

    algo: int = 1
    name: str = field(init=False, default="")  # cudnn_a<algo>

    def __post_init__(self) -> None:
        from backends.gpu.kernels import cudnn

        object.__setattr__(self, "name", cudnn.tactic_name(self.algo))


def cudnn_tactics(g: ConvGeometry, act: tuple[int, float, float]) -> list[CudnnTactic]:
    """One tactic per algorithm cuDNN offers for this convolution here ([] without cuDNN)."""
    from backends.gpu.kernels import cudnn

    return [CudnnTactic(algo=a) for a in cudnn.algorithms(g, act[0])]


def conv2d_cudnn(x: Any, w: Any, bias: Any, y: Any, g: ConvGeometry, act: tuple[int, float, float],
                 residual: Any = None, algo: int = 1) -> None:
    """Enqueue ``conv2d``'s result as cuDNN's fused convolution with ``algo``; the bias is fp16, K of it."""
    from backends.gpu.kernels import cudnn

    cudnn.conv(x, w, bias, y, g, act[0], algo, residual)


GEMV_TACTIC = "gemv"  # a 1x1 convolution on few rows as ``gemv_conv``: a warp per output, one launch
GEMV_MAX_ROWS = 64  # beyond this many rows the tiles' reuse of the weights wins


@dataclass(frozen=True)
class GemvTactic(LayerTactic):
    """The warp-per-output ``gemv_conv`` of a 1x1 convolution on few rows."""

    name: str = GEMV_TACTIC


def gemv_eligible(g: ConvGeometry) -> bool:
    """A 1x1, stride-1, unpadded, ungrouped convolution (or FC layer) on at most ``GEMV_MAX_ROWS``
    pixels: x (M x Cp) times w^T (Cp x K) in the NHWC and KRSC layouts as they are."""
    return (g.r == g.s == 1 and g.stride == (1, 1) and g.pad == (0, 0) and g.pad_end in (None, (0, 0))
            and g.dilation == (1, 1) and g.groups == 1 and g.m <= GEMV_MAX_ROWS)


def conv2d_gemv(x: Any, w: Any, bias: Any, y: Any, g: ConvGeometry, act: tuple[int, float, float] = (0, 0.0, 0.0),
                residual: Any = None) -> None:
    """Enqueue ``conv2d``'s result for a ``gemv_eligible`` geometry as one ``gemv_conv`` launch."""
    code, alpha, beta = act
    fn = get_function(CONV_SRC, "gemv_conv", name_expressions=_NAMES)
    warps = g.m * g.kp
    fn((-(-warps * 32 // 256),), (256,), (x, w, _ptr(bias), _ptr(residual), y, np.int32(g.m), np.int32(g.c),
                                         np.int32(g.k), np.int32(code), np.float32(alpha), np.float32(beta)))


def heuristic_tactic(g: ConvGeometry, sms: int = 132) -> ConvTactic:
    """A reasonable tactic without timing: big tiles when they fill the GPU, else small tiles + split-K."""
    def ctas(t: Tile) -> int:
        return -(-g.m // t.bm) * g.col_blocks(t.bn)

    if g.groups > 1:
        return _grouped_heuristic(g, sms, ctas)
    for t in (Tile(128, 128, 2, 4, 3), Tile(128, 64, 2, 2, 4), Tile(64, 64, 2, 2, 4)):
        if ctas(t) >= sms:
            return ConvTactic(t)
    t = Tile(16, 64, 1, 2, 4) if g.m <= 16 else Tile(32, 64, 1, 2, 4)
    kt = -(-g.ktot // BK)
    splits = max(1, min(16, sms // max(ctas(t), 1), kt // 4))
    return ConvTactic(t, splits)


def _grouped_heuristic(g: ConvGeometry, sms: int, ctas: Any) -> ConvTactic:
    """Grouped: tiles of the narrowest width that covers one group's K (a wider tile multiplies
    zeros), the tallest that fills the GPU, else the smallest with split-K."""
    bn = next((b for b in (32, 64) if g.kg <= b), 128)
    family = [t for t in (Tile(128, 128, 2, 4, 3), Tile(64, 128, 2, 2, 4), Tile(128, 64, 2, 2, 4),
                          Tile(64, 64, 2, 2, 4), Tile(32, 64, 1, 2, 4), Tile(64, 32, 2, 1, 4), Tile(32, 32, 2, 1, 4))
              if t.bn == bn]
    for t in family:
        if ctas(t) >= sms:
            return ConvTactic(t)
    t = family[-1]
    kt = -(-g.ktot // BK)
    return ConvTactic(t, max(1, min(16, sms // max(ctas(t), 1), kt // 4)))
