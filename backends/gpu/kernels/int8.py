"""INT8 convolution / FC / pooling on the GPU: tiles, the reference's integer parameters, launchers.

Every integer parameter comes from the same functions the reference backend calls
(``engine.ir.int8_math``), so the GPU epilogue needs no arithmetic of its own beyond the
shifts and saturations in ``int8_src``. Layouts are documented there: NHWC int8 with channels
padded to 16 (one 16-byte vector), KRSC int8 weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from backends.gpu.kernels.compile import compile_concurrently, decided_once, get_function
from backends.gpu.kernels.conv import (
    LONG_ROW_MIN_K_TILES,
    SHORT_K_TILES,
    TILES_WG,
    WG_ARCH,
    ConvGeometry,
    KernelLaunch,
    Tile,
    TileWg,
    enqueue,
    mostly_empty_width,
    parse_tile_tactic,
    wgmma_usable,
)
from backends.gpu.kernels.int8_pw import POINTWISE8, PointwiseTactic8, pointwise8, pointwise8_runs, pointwise8_usable
from backends.gpu.kernels.int8_src import INT8_SRC
from backends.gpu.kernels.int8_stream import StreamTactic8, parse_stream8, stream8, stream8_runs, stream8_usable
from backends.gpu.kernels.wgmma_src import WGMMA_S8_OP, WGMMA_SRC
from backends.gpu.layout import MAX_GROUP_MERGE, group_merge_factor, merge_groups, round_up

BK = 64  # int8 channels per k-tile of the default (64-byte row) tiles
# The int32 accumulator wraps; sums stay exact (= the reference's saturated int64 sums) while
# Ktot * 128 * 128 < 2**31.
MAX_KTOT = (2**31 - 1) // (128 * 128)
i32, f32 = np.int32, np.float32


def cp16(c: int) -> int:
    """Channel stride of an int8 NHWC tensor."""
    return round_up(c, 16)


def group_channels8(g: ConvGeometry) -> tuple[int, int]:
    """One group's reduction channels and output channels as the INT8 kernel reads them: (Cp16, K)
    for one group, else (Cg, Kg), which must then be multiples of 16 (one 16-byte vector)."""
    if g.groups == 1:
        return cp16(g.c), g.k
    if g.cg % 16 or g.kg % 16:
        raise ValueError(f"grouped INT8 implicit GEMM needs per-group channels that are multiples of 16, "
                         f"got C/G = {g.cg} and K/G = {g.kg}")
    return g.cg, g.kg


def group_merge8(groups: int, cg: int, kg: int) -> int | None:
    """How many adjacent groups the INT8 kernel merges into one (``layout.group_merge_factor`` with
    its 16-byte vectors of 16 int8 channels); None where no merge of at most 8 groups fits."""
    return group_merge_factor(groups, cg, kg, 16)


def merge_plan8(groups: int, cg: int, kg: int) -> tuple[int, int] | None:
    """(m, padded group count) of the INT8 tensor-core kernel's group merge: ``group_merge8``'s m
    with the groups as they are, else the smallest m <= 8 that merges unevenly (RegNetY's 13 and 55
    groups of 8 channels): ceil(groups / m) merged groups, the last one filled with phantom groups
    whose weights are zero and whose channels are the tensors' padding to 16 (zero outputs, like
    every padded channel), where both padded totals fit that padding. None where neither fits."""
    m = group_merge8(groups, cg, kg)
    if m is not None:
        return m, groups
    for m in range(2, MAX_GROUP_MERGE + 1):  # m > groups too: one group with phantoms, block-diagonal
        total = -(-groups // m) * m
        if (m * cg) % 16 == 0 and (m * kg) % 16 == 0 and total * cg <= cp16(groups * cg) \
                and total * kg <= cp16(groups * kg):
            return m, total
    return None


def merge_groups8(kernel: np.ndarray, g: ConvGeometry, groups: int) -> tuple[np.ndarray, ConvGeometry] | None:
    """The INT8 tensor-core kernel's form of a convolution of ``groups`` groups (IR kernel (K, Cg, R, S),
    ``g`` its geometry as one group): adjacent groups merged as ``merge_plan8`` says, phantom groups
    appended, with the geometry of the merged groups (phantom channels counted in C and K). None where
    no merge fits."""
    cg, kg = g.c // groups, g.k // groups
    plan = merge_plan8(groups, cg, kg)
    if plan is None:
        return None
    m, total = plan
    if total > groups:
        kernel = np.concatenate([kernel, np.zeros(((total - groups) * kg, *kernel.shape[1:]), kernel.dtype)])
    return merge_groups(kernel, total, m), replace(g, c=total * cg, k=total * kg, groups=total // m)


def reduction8(g: ConvGeometry) -> int:
    """The reduction depth of one output channel (R * S * one group's channels)."""
    return g.r * g.s * group_channels8(g)[0]


@dataclass(frozen=True)
class Tile8(Tile):
    """A CTA tile of the INT8 kernel (BK = 16 ``kc``: 64 or 128): the fp16 tile's fields; its
    epilogue tile is int32 with rows padded by 4 words."""

    KERNEL: ClassVar[str] = "conv_igemm_s8"
    HEAD: ClassVar[str] = "s8igemm"
    CHUNK: ClassVar[int] = 16
    EPI_PAD: ClassVar[int] = 4
    EPI_BYTES: ClassVar[int] = 4


@dataclass(frozen=True)
class Tile8Wg(TileWg):
    """A wgmma tile of the INT8 kernel (sm_90a: m64nNk32 s8 x s8 -> s32): ``TileWg``'s warps and
    pipeline with the INT8 kernel, chunk and epilogue tile."""

    KERNEL: ClassVar[str] = Tile8.KERNEL
    HEAD: ClassVar[str] = "s8wgmma"
    CHUNK: ClassVar[int] = Tile8.CHUNK
    EPI_PAD: ClassVar[int] = Tile8.EPI_PAD
    EPI_BYTES: ClassVar[int] = Tile8.EPI_BYTES


TILES8: tuple[Tile8, ...] = (
    Tile8(128, 256, 2, 4, 3),
    Tile8(128, 128, 2, 2, 4),
    Tile8(128, 128, 2, 4, 3),
    Tile8(128, 64, 2, 2, 4),
    Tile8(64, 128, 2, 2, 4),
    Tile8(64, 64, 2, 2, 4),
    Tile8(128, 32, 4, 1, 4),  # narrow outputs (16-32 channels) over many pixels: 4 warps a CTA, not 2
    Tile8(64, 32, 2, 1, 4),
    Tile8(32, 64, 1, 2, 4),
    Tile8(32, 32, 2, 1, 4),
    Tile8(16, 64, 1, 2, 4),
    # two stages for short reductions (a 1x1 convolution on 64-256 channels has 1-4 k-tiles): the
    # smem of deeper pipelines only lowers the CTAs per SM there
    Tile8(128, 128, 2, 2, 2),
    Tile8(128, 64, 2, 2, 2),
    Tile8(64, 128, 2, 2, 2),
    Tile8(64, 64, 2, 2, 2),
    # 128-byte rows (BK = 128) for long reductions at large batch
    Tile8(128, 256, 2, 4, 3, 8),
    Tile8(128, 128, 2, 4, 3, 8),
)
NARROWEST_BN8 = min(t.bn for t in TILES8)  # a layer with fewer output channels still needs a candidate
_NAMES = [t.template for t in TILES8]
# The wgmma tiles (timed only where ``wgmma_usable8``): the fp16 ones' shapes.
TILES8_WG: tuple[Tile8Wg, ...] = tuple(Tile8Wg(t.bm, t.bn, t.wm, t.wn, t.stages, t.kc) for t in TILES_WG)
INT8_WG_SRC = INT8_SRC + WGMMA_SRC + WGMMA_S8_OP
_WG_NAMES = [t.template for t in TILES8_WG]


def module_of8(tile: Tile8) -> tuple[str, list[str], str | None]:
    """The source, template instances and target (None: the device's) of the module with ``tile``'s kernel."""
    return (INT8_WG_SRC, _WG_NAMES, WG_ARCH) if isinstance(tile, Tile8Wg) else (INT8_SRC, _NAMES, None)


@dataclass(frozen=True)
class Tactic8:
    tile: Tile8
    splits: int = 1

    @property
    def name(self) -> str:
        t = self.tile
        return f"{t.HEAD}_{t.dims}_w{t.wm}x{t.wn}_s{t.stages}_k{self.splits}"

    def k_tiles(self, g: ConvGeometry) -> int:
        return -(-reduction8(g) // self.tile.bk)

    def k_tiles_per_split(self, g: ConvGeometry) -> int:
        return -(-self.k_tiles(g) // self.splits)

    def grid(self, g: ConvGeometry) -> tuple[int, int, int]:
        kps = self.k_tiles_per_split(g)
        return (-(-g.m // self.tile.bm), g.col_blocks(self.tile.bn), -(-self.k_tiles(g) // kps))

    def workspace_bytes(self, g: ConvGeometry) -> int:
        z = self.grid(g)[2]
        return 0 if z == 1 else z * g.m * cp16(g.k) * 4


def parse_tactic8(name: str) -> Tactic8 | PointwiseTactic8 | StreamTactic8 | None:
    """Inverse of ``Tactic8.name`` (or 's8pw', or a streaming tactic's name); None when it does not
    parse or names a tile not compiled."""
    if name == POINTWISE8.name:
        return POINTWISE8
    if name.startswith("s8stream_"):
        return parse_stream8(name)
    return (parse_tile_tactic(name, "s8igemm", Tile8, TILES8, Tactic8)
            or parse_tile_tactic(name, "s8wgmma", Tile8Wg, TILES8_WG, Tactic8))


def candidate_tactics8(g: ConvGeometry, sms: int = 132, wgmma: bool = False) -> list[Tactic8]:
    """Every tile (with ``wgmma``, the sm_90a tiles too) that is not mostly empty, plus split-K
    where the grid underfills the GPU."""
    out: list[Tactic8] = []
    for t in TILES8 + (TILES8_WG if wgmma else ()):
        kt = -(-reduction8(g) // t.bk)
        if t.bm >= 2 * max(g.m, 16) or mostly_empty_width(t.bn, cp16(g.kg), NARROWEST_BN8, g.groups):
            continue
        if t.long_rows and (g.groups > 1 or (kt < LONG_ROW_MIN_K_TILES and not isinstance(t, Tile8Wg))):
            continue
        if t.stages == 2 and kt > SHORT_K_TILES:
            continue
        out.append(Tactic8(t, 1))
        ctas = -(-g.m // t.bm) * g.col_blocks(t.bn)
        if ctas < sms:
            for s in (2, 3, 4, 6, 8, 12, 16):
                if ctas * s <= 2 * sms and kt // s >= 2:
                    out.append(Tactic8(t, s))
    return out


def heuristic_tactic8(g: ConvGeometry, sms: int = 132) -> Tactic8:
    """Big tiles when they fill the GPU, else small tiles with split-K (as the fp16 heuristic)."""
    def ctas(t: Tile8) -> int:
        return -(-g.m // t.bm) * g.col_blocks(t.bn)

    family = (Tile8(128, 128, 2, 4, 3), Tile8(128, 64, 2, 2, 4), Tile8(64, 64, 2, 2, 4))
    narrow = g.groups > 1 or g.kg <= 32
    if narrow:  # the narrowest width that covers one group's K (a wider tile multiplies zeros)
        bn = next((b for b in (32, 64) if g.kg <= b), 128)
        family = tuple(t for t in (*family, Tile8(64, 128, 2, 2, 4), Tile8(64, 32, 2, 1, 4), Tile8(32, 32, 2, 1, 4))
                       if t.bn == bn)
    for t in family:
        if ctas(t) >= sms:
            return Tactic8(t)
    small = Tile8(16, 64, 1, 2, 4) if g.m <= 16 else Tile8(32, 64, 1, 2, 4)
    t = family[-1] if narrow else small
    kt = -(-reduction8(g) // BK)
    splits = max(1, min(16, sms // max(ctas(t), 1), kt // 4))
    return Tactic8(t, splits)


# ------------------------------------------------------------------------------------------ params


@dataclass
class Epilogue8:
    """Per-channel integer parameters of one INT8 conv/FC (numpy, uploaded by the backend).

    ``osc``/``osh`` None: float output ``v * sacc`` (the layer has no output scale), or a
    non-linear epilogue (``nonlinear`` 'silu' / 'hard_swish': ``f(v * sacc)``, then int8 at
    ``sout`` when the layer has an output scale, else float32).
    """

    k: int
    bias: np.ndarray | None  # int64 (K,)
    rsc: np.ndarray | None  # int32 (K,)
    rsh: np.ndarray | None
    osc: np.ndarray | None
    osh: np.ndarray | None
    sacc: np.ndarray | None  # float64 (K,)
    relu: bool
    clipq: int = 127
    clipf: float | None = None
    acc_bound: np.ndarray | None = None  # int64 (K,): 128 * sum|w_k|, a bound on |acc_k| (None: unknown)
    nonlinear: str | None = None  # 'silu' / 'hard_swish' (int8_rules.nonlinear_epilogue), None: linear
    sout: float | None = None  # the output scale of a non-linear epilogue (None: float output)

    @property
    def quantized(self) -> bool:
        """Whether the layer writes int8 (it has an output scale), not float32."""
        return self.osc is not None or self.sout is not None


def epilogue_params(layer: Any, activation: Any, residual_scale: float | None,
                    kernel: np.ndarray | None = None) -> Epilogue8:
    """The reference epilogue's integers (backends.reference.int8.epilogue), step for step.

    ``kernel``: the layer's int8 weights with output channels first, as the caller already holds
    them (``quantized_kernel``, or a regrouping of it); their per-channel sums of |w| bound the
    accumulator. Quantized here when None.

    A SiLU / hard-swish activation gives the non-linear epilogue's constants: per-channel s_acc and
    the output scale (``int8_rules.quantize_nonlinear``).

    Raises UnsupportedError where the reference would (an activation other than ReLU/clip(0, x),
    SiLU or hard-swish, a requant multiplier >= 2**15).
    """
    from engine.ir import int8_annotation as annotation
    from engine.ir.errors import UnsupportedError
    from engine.ir.int8_math import bias_params, requant_params, round_half_away
    from engine.ir.int8_rules import epilogue, nonlinear_epilogue

    spec = annotation.read(layer)
    if spec.kernel_scales is None:
        raise UnsupportedError(f"layer {layer.describe()}: INT8 kernel without per-channel weight scales")
    s_acc = np.float64(spec.input_scales[0]) * spec.kernel_scales.astype(np.float64)
    k = s_acc.size
    wq = quantized_kernel(layer) if kernel is None else kernel
    acc_bound = 128 * np.abs(wq[:k].reshape(k, -1).astype(np.int64)).sum(axis=1)  # past k: phantom groups
    bias = layer.weights.get("bias")
    b = None
    if bias is not None:
        b16, bshift = bias_params(round_half_away(np.asarray(bias, dtype=np.float64) / s_acc))
        b = np.clip(np.left_shift(b16.astype(np.int64), bshift), -(2**33), 2**33).astype(np.int64)
    rsc = rsh = None
    if residual_scale is not None:
        sc, sh = requant_params(np.float64(residual_scale) / s_acc)
        rsc, rsh = sc.astype(np.int32), sh.astype(np.int32)
    kind = nonlinear_epilogue(activation)
    if kind is not None:
        sout = None if spec.output_scale is None else float(spec.output_scale)
        return Epilogue8(k, b, rsc, rsh, None, None, s_acc, False, 127, None, acc_bound, kind.value, sout)
    try:
        relu, clip_hi = epilogue(activation)
    except UnsupportedError as e:
        raise UnsupportedError(f"layer {layer.describe()}: {e}") from None
    if spec.output_scale is None:
        clipf = None if clip_hi is None else float(np.float32(clip_hi))
        return Epilogue8(k, b, rsc, rsh, None, None, s_acc, relu, 127, clipf, acc_bound)
    sc, sh = requant_params(s_acc / np.float64(spec.output_scale))
    clipq = 127
    if clip_hi is not None:
        clipq = int(np.clip(int(round_half_away(clip_hi / spec.output_scale)), -128, 127))
    return Epilogue8(k, b, rsc, rsh, sc.astype(np.int32), sh.astype(np.int32), None, relu, clipq, None, acc_bound)


def pack_weights8(wq: np.ndarray) -> np.ndarray:
    """int8 IR kernel (K, C, R, S) -> (K, R, S, Cp16) int8, zero in channels C..Cp-1."""
    k, c, r, s = wq.shape
    out = np.zeros((k, r, s, cp16(c)), np.int8)
    out[..., :c] = wq.transpose(0, 2, 3, 1)
    return out


def quantized_kernel(layer: Any) -> np.ndarray:
    """The layer's int8 weights as the reference takes them (``reference.int8._kernel_int8``)."""
    from backends.reference.int8 import _kernel_int8
    from engine.ir import int8_annotation as annotation

    return _kernel_int8(layer, annotation.read(layer))


# ------------------------------------------------------------------------------------------ launch


def _kernel(tile: Tile8) -> Any:
    src, names, arch = module_of8(tile)
    return get_function(src, tile.template, name_expressions=names, dynamic_smem=tile.smem_bytes, arch=arch)


@decided_once
def wgmma_usable8() -> bool:
    """Whether the INT8 wgmma tiles run here (as ``conv.wgmma_usable``, for the INT8 module)."""
    if not wgmma_usable():
        return False
    try:
        for t in TILES8_WG:
            _kernel(t)
        return True
    except Exception:  # an NVRTC that rejects the module: the mma.sync tiles remain
        return False


def _fn(name: str) -> Any:
    return get_function(INT8_SRC, name, name_expressions=_NAMES)


def runs_here8(tactic: Tactic8 | PointwiseTactic8 | StreamTactic8, g: ConvGeometry, ldy: int) -> bool:
    """Whether a plan's INT8 tactic runs ``g`` here: a wgmma tile where the sm_90a module compiles,
    the pointwise and streaming kernels where they fit the layer and compile, the other tiles
    everywhere. The lowering gives any other (a Hopper plan on another GPU, a forged or stale
    entry) the heuristic tile."""
    if isinstance(tactic, PointwiseTactic8):
        return pointwise8_runs(g, ldy)
    if isinstance(tactic, StreamTactic8):
        return stream8_runs(g, tactic, ldy)
    return not isinstance(tactic.tile, Tile8Wg) or wgmma_usable8()


def compile_tasks() -> list[Callable[[], object]]:
    """The INT8 modules' compilations (tensor-core, depthwise, sm_90a wgmma), each a task that
    ``compile.compile_concurrently`` may run beside the others."""
    from backends.gpu.kernels.int8_dw import dw_fn  # int8_dw builds on this module

    return [lambda: [_kernel(t) for t in TILES8], lambda: dw_fn("dwconv_s8"), wgmma_usable8, pointwise8_usable,
            stream8_usable]


def compile_all() -> None:
    """Compile the INT8 modules now (NVRTC takes seconds), not at the first launch."""
    compile_concurrently(compile_tasks())


def ptr(a: Any) -> Any:
    """A device pointer argument: the array, or a null pointer for None."""
    return a if a is not None else np.uint64(0)


EP_ROWS = 12  # rows of the per-channel parameter array (int8_epi_src: EP_ROWS)
INT32_MAX = 2**31 - 1
NONLINEAR_FLAGS = {"silu": 4, "hard_swish": 8}  # int8_epi_src: EPI_SILU, EPI_HSWISH


def _requant_clamp(osc: np.ndarray, osh: np.ndarray) -> np.ndarray:
    """Per channel, the smallest |v| whose requant ``(|v| * osc + 2**(osh-1)) >> osh`` reaches 128
    (every larger |v| saturates too), capped at 2**31 (no |v| of int32 saturates)."""
    osc = osc.astype(object)
    out = np.empty(osc.shape, np.int64)
    for i, (sc, sh) in enumerate(zip(osc, osh.astype(object))):
        half = (1 << (sh - 1)) if sh > 0 else 0
        t = -(-((128 << sh) - half) // sc) if sc > 0 else 2**31
        out[i] = min(max(t, 0), 2**31)
    return out


def fast_requant_multipliers(osc: np.ndarray, osh: np.ndarray) -> np.ndarray | None:
    """Per channel B = osc * 2**(32 - osh), the fast requant's multiplier (int8_epi_src.requant_hi),
    or None where some channel's parameters do not allow it: B must stay below 2**31 with
    1 <= osh <= 32 (requant_params gives osc in [2**14, 2**15) and shifts 16..32 for multipliers
    in [2**-18, 1/2), the usual range of s_acc / s_out). A 0 scale (a padded channel) gives 0."""
    osc, osh = np.asarray(osc, np.int64), np.asarray(osh, np.int64)
    zero = osc == 0
    ok = zero | ((osh >= 1) & (osh <= 32) & (osc >= 0) & (osc < np.left_shift(np.int64(1), np.clip(osh - 1, 0, 62))))
    if not ok.all():
        return None
    return np.where(zero, 0, np.left_shift(osc, np.clip(32 - osh, 0, 31)))


def device_params(e: Epilogue8) -> tuple[np.ndarray, bool]:
    """The kernel's per-channel parameter rows (int32, EP_ROWS x Kp16; int8_epi_src documents each
    row) and whether the layer takes the general path (EPI_GEN): saturating adds where a sum may
    leave int32, and the 64-bit requant where some channel's shift is outside the fast one's range.

    Every value is the reference's integer step rewritten in 32-bit operations that give the same
    result (tests/gpu/test_int8_epilogue_cpu.py checks the rewrite against the reference on the CPU):
    the bias as two one-signed int32 parts (|bias| <= 2**33 while |acc| < 2**31, so clipping it to
    [-(2**32 - 1), 2**32 - 2] keeps every saturated sum), the requant as the high word of
    v * osc * 2**(32 - shift) + 2**31 (fast) or as a magnitude clamp at its saturation point, a
    32 x 32 + 64-bit multiply-add and a split shift (general), and the residual converter
    as ``(p + half - (p < 0)) >> shift`` with shift >= 1 (a 0 shift becomes scale * 2, shift 1; a
    shift over 30 rounds every |p| < 2**22 to 0, as 30 does).
    """
    kp = cp16(e.k)
    ep = np.zeros((EP_ROWS, kp), np.int64)
    k = e.k
    bias = np.zeros(k, np.int64) if e.bias is None else np.asarray(e.bias, np.int64)
    big = np.clip(bias, -(2**32 - 1), 2**32 - 2)
    b1 = np.clip(big, -INT32_MAX, INT32_MAX)
    ep[0, :k], ep[1, :k] = b1, big - b1
    slow_requant = False  # some channel's requant outside the fast path's range
    if e.osc is not None:
        osc, osh = np.asarray(e.osc, np.int64), np.asarray(e.osh, np.int64)
        half = np.where(osh > 0, np.left_shift(np.int64(1), np.maximum(osh - 1, 0)), 0)
        ep[2, :k] = _requant_clamp(osc, osh)
        ep[3, :k] = osc
        pairs = ep[4:6].reshape(-1, 2)  # u64 index n of rows 4-5: (low, high) words of channel n's half
        pairs[:k, 0], pairs[:k, 1] = half & 0xFFFFFFFF, half >> 32
        ep[6, :k] = np.minimum(osh, 32)
        ep[7, :k] = osh - np.minimum(osh, 32)
        fast = fast_requant_multipliers(osc, osh)
        slow_requant = fast is None
        if fast is not None:
            ep[11, :k] = fast
    res_max = np.zeros(k, np.int64)
    if e.rsc is not None:
        rsc, rsh = np.asarray(e.rsc, np.int64), np.asarray(e.rsh, np.int64)
        if np.any(rsc < 0):  # sum4 takes the sign of a converted residual from the residual's
            raise ValueError("residual converter scales must be >= 0")
        from backends.reference.int8 import rshift_round

        res_max = np.abs(rshift_round(-128 * rsc, rsh))
        zero = rsh == 0
        rsc, rsh = np.where(zero, 2 * rsc, rsc), np.where(zero, 1, np.minimum(rsh, 30))
        ep[8, :k], ep[9, :k], ep[10, :k] = rsc, np.left_shift(np.int64(1), rsh - 1), rsh
    sat = e.acc_bound is None or bool(np.any(np.asarray(e.acc_bound, np.int64) + np.abs(bias) + res_max > INT32_MAX))
    return _to_int32_bits(ep), sat or slow_requant


def _to_int32_bits(a: np.ndarray) -> np.ndarray:
    """int64 values in [-2**31, 2**32) as their 32-bit patterns."""
    return (a & 0xFFFFFFFF).astype(np.uint32).view(np.int32)


@dataclass
class DeviceEpilogue:
    """``Epilogue8`` on the device: the parameter rows (``device_params``), s_acc for a float output."""

    k: int
    ep: Any
    sacc: Any
    flags: int
    clipq: int
    clipf: float | None
    sout: float = 0.0  # a non-linear epilogue's output scale (0: float output, or a linear epilogue)

    @staticmethod
    def upload(e: Epilogue8, xp: Any = None) -> DeviceEpilogue:
        """On the GPU (``xp`` None: cupy), or as ``xp`` arrays (numpy: the CPU emulator's tests)."""
        if xp is None:
            import cupy as xp

        ep, general = device_params(e)
        flags = (1 if e.relu else 0) | (2 if general else 0) | NONLINEAR_FLAGS.get(e.nonlinear, 0)
        sacc = None if e.sacc is None else xp.asarray(np.ascontiguousarray(e.sacc, np.float64))
        sout = 0.0 if e.sout is None else float(e.sout)
        return DeviceEpilogue(e.k, xp.asarray(np.ascontiguousarray(ep)), sacc, flags, e.clipq, e.clipf, sout)

    @property
    def nl_instance(self) -> str:
        """The template flag of the CUDA-core kernels' float / non-linear instance (set with s_acc)."""
        return "false" if self.sacc is None else "true"

    def args(self, res: Any, ldr: int, y: Any, ldy: int) -> tuple:
        return (self.ep, ptr(res), i32(ldr), ptr(self.sacc), i32(self.flags), i32(self.clipq),
                i32(0 if self.clipf is None else 1), f32(0.0 if self.clipf is None else self.clipf), y, i32(ldy),
                np.float64(self.sout))


def conv2d_s8_launches(x: Any, w: Any, y: Any, g: ConvGeometry, tactic: Tactic8, epi: DeviceEpilogue,
                       residual: Any = None, workspace: Any = None, ldy: int | None = None) -> list[KernelLaunch]:
    """The launches of ``conv2d_s8`` (its arguments and checks): the tile's kernel, then with
    split-K ``splitk_epilogue_s8``."""
    cg, kg = group_channels8(g)
    if reduction8(g) > MAX_KTOT:
        raise ValueError(f"reduction of {reduction8(g)} exceeds the exact int32 bound {MAX_KTOT}")
    ldy = cp16(g.k) if ldy is None else ldy
    ldr = cp16(g.k)
    grid = tactic.grid(g)
    split = grid[2] > 1
    if split and (workspace is None or workspace.nbytes < tactic.workspace_bytes(g)):
        raise ValueError(f"{tactic.name} needs a {tactic.workspace_bytes(g)}-byte workspace")
    geo = (g.n, g.h, g.w, cg, kg, g.p, g.q, g.r, g.s, *g.stride, *g.pad, *g.dilation, g.groups)
    epi_args = epi.args(residual, ldr, y, ldy)
    out = [KernelLaunch(tactic.tile.template, grid, tactic.tile.threads,
                        (x, w, ptr(workspace if split else None), *map(i32, geo),
                         i32(tactic.k_tiles_per_split(g)), *epi_args),
                        tactic.tile.smem_bytes)]
    if split:
        total = g.m * (-(-ldy // 4))
        out.append(KernelLaunch("splitk_epilogue_s8", (-(-total // 256),), 256,
                                (workspace, i32(grid[2]), i32(g.m), i32(g.k), *epi_args)))
    return out


def conv2d_s8(x: Any, w: Any, y: Any, g: ConvGeometry, tactic: Tactic8 | PointwiseTactic8 | StreamTactic8,
              epi: DeviceEpilogue, residual: Any = None, workspace: Any = None, ldy: int | None = None) -> None:
    """Enqueue the INT8 convolution on the current stream.

    x: (N, H, W, Cp16) int8; w: (K, R, S, Cp16) int8; residual: (N, P, Q, Kp16) int8 or None;
    y: int8 (N, P, Q, Kp16), or float32 with channel stride ``ldy`` when ``epi`` has no output
    scale. ``workspace`` (>= tactic.workspace_bytes) is needed for split-K; 's8pw' runs ``pw_s8``,
    an 's8stream_…' tactic ``conv1x1_stream_s8``.
    """
    if isinstance(tactic, PointwiseTactic8):
        return pointwise8(x, w, y, g, epi, residual, cp16(g.k) if ldy is None else ldy)
    if isinstance(tactic, StreamTactic8):
        return stream8(x, w, y, g, tactic, epi, residual, cp16(g.k) if ldy is None else ldy)
    enqueue(conv2d_s8_launches(x, w, y, g, tactic, epi, residual, workspace, ldy), *module_of8(tactic.tile))


def quantize_nchw(x: Any, y: Any, shape: tuple[int, int, int, int], scale: float, s2d: bool) -> None:
    """float32 NCHW ``x`` -> int8 NHWC16 ``y`` (``y``'s pixel grid; with ``s2d`` its 2x2 space-to-depth)."""
    n, c, h, w = shape
    oh, ow, cp = y.shape[1], y.shape[2], y.shape[3]
    total = n * oh * ow * (cp // 16)
    _fn("quant_nchw_s8")((-(-total // 256),), (256,), (x, y, *map(i32, (n, c, h, w, oh, ow, cp)), f32(scale),
                                                      i32(1 if s2d else 0)))


def recip(k: int) -> int:
    """The PDP's RECIP_KERNEL register (backends.reference.int8.recip)."""
    return int(np.floor(65536 / k + 0.5))


def is_global_pool(g: Any) -> bool:
    """One window over the whole unpadded image (a global pooling, e.g. a squeeze-excitation's squeeze)."""
    return (g.p, g.q) == (1, 1) and tuple(g.window) == (g.h, g.w) and not any(g.pad) and not any(g.pad_end)


def pool2d_s8_launches(x: Any, y: Any, g: Any, average: bool) -> list[KernelLaunch]:
    """The launch of ``pool2d_s8``: the block-parallel ``global_pool_s8`` for a global pooling,
    else one thread per output vector of 16 channels."""
    vectors = cp16(g.c) // 16
    mode, rw, rh = i32(1 if average else 0), i32(recip(g.window[1])), i32(recip(g.window[0]))
    if is_global_pool(g):
        vb = min(8, 1 << (vectors - 1).bit_length())  # channel vectors per block, a power of two
        return [KernelLaunch("global_pool_s8", (-(-vectors // vb), g.n), 256,
                             (x, y, i32(g.h * g.w), i32(cp16(g.c)), i32(vb), mode, rw, rh))]
    total = g.n * g.p * g.q * vectors
    return [KernelLaunch("pool2d_s8", (-(-total // 256),), 256, (
        x, y, *map(i32, (g.n, g.h, g.w, cp16(g.c), g.p, g.q, *g.window, *g.stride, *g.pad)), mode, rw, rh))]


def pool2d_s8(x: Any, y: Any, g: Any, average: bool) -> None:
    """INT8 max/average pooling; ``g`` a ``direct.PoolGeometry`` (no dilation, no ceil mode)."""
    enqueue(pool2d_s8_launches(x, y, g, average), INT8_SRC, _NAMES)
