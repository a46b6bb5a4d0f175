"""In-memory data formats of the DLA, and the fixed-point number conversions they imply.

Feature cubes ([FMT] "Feature Data Format"): the cube is cut into 1x1xATOM-byte atoms
(32 B on nv_full/Xavier/Orin: 32 INT8 or 16 FP16 channels; 8 B on nv_small), channels are
padded at the end up to a whole atom, and atoms are laid out C' (one atom) -> W -> H -> C
(surfaces). Line stride, surface stride and start address are multiples of the atom size.
Padding bytes are zero here (the hardware allows any non-NaN value).

Direct-convolution weights ([FMT] "Basic Weight for Direct Convolution"): kernels are grouped
(16 per group for FP16, 32 for INT8 on nv_full; the config's atomic-K), each kernel is cut into
1x1x64-element cubes along C (the config's atomic-C; the last cube keeps C mod 64 elements, no
padding), the cubes of a group are scanned C' -> K -> S(W) -> R(H) -> C-block, groups follow each
other compactly and the whole blob is zero-padded to 128 bytes.

Number conversions ([PREC] precision.rst; cmod ``hls/include/nvdla_int.h``): every right shift in
the integer pipelines rounds half away from zero (ac_fixed AC_RND_INF) and saturates (AC_SAT) to
the output width. Those two primitives live here because every unit uses them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FeatureLayout",
    "IOFormat",
    "WeightLayout",
    "align_up",
    "convert_int",
    "feature_layout",
    "io_format_bytes",
    "pack_feature",
    "pack_io",
    "pack_weights_dc",
    "packed_weight_bytes",
    "rshift_round",
    "saturate",
    "to_fp16",
    "unpack_feature",
    "unpack_io",
    "unpack_weights_dc",
    "weight_layout_dc",
]


# ----------------------------------------------------------------------------------------------
# fixed-point primitives


def saturate(x: np.ndarray, bits: int) -> np.ndarray:
    """Clamp signed integers to ``bits`` bits (int64 in, int64 out)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(np.asarray(x, dtype=np.int64), lo, hi)


def rshift_round(x: np.ndarray, shift: np.ndarray | int) -> np.ndarray:
    """Arithmetic right shift with round-half-away-from-zero (the hardware's AC_RND_INF).

    ``shift`` may be negative (a left shift, exact). Works on int64 without overflow as long as
    ``|x| < 2**62``.
    """
    x = np.asarray(x, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    if np.any(s < 0):
        left = np.where(s < 0, -s, 0)
        x = x << left
        s = np.where(s < 0, 0, s)
    # round half away from zero: floor((x + h) / 2^s) for x >= 0 and -floor((-x + h) / 2^s) =
    # floor((x + h - 1) / 2^s) for x < 0, with h = 2^(s-1) (h = 0 and no correction when s = 0)
    pos = s > 0
    half = np.where(pos, np.int64(1) << np.maximum(s - 1, 0), 0)
    r = x + half
    if np.any(pos):
        r -= (x < 0) & pos
    r >>= s
    return r


def convert_int(
    x: np.ndarray, offset: np.ndarray | int, scale: np.ndarray | int, shift: np.ndarray | int, out_bits: int
) -> np.ndarray:
    """The INT converter: y = sat(round((x - offset) * scale >> shift)), round half away from zero.

    [PREC]: "y = saturation_round((x - offset) * scaling >> shifter)", offset INT32, scaling
    INT16, shifter UINT; cmod ``sdp_c.cpp`` computes it in 33/49-bit integers, so there is no
    intermediate overflow for int32 input (|product| < 2**48) and int64 is exact here.
    """
    d = np.asarray(x, dtype=np.int64) - np.asarray(offset, dtype=np.int64)
    p = d * np.asarray(scale, dtype=np.int64)
    return saturate(rshift_round(p, shift), out_bits)


def to_fp16(x: np.ndarray) -> np.ndarray:
    """Round to FP16 (round to nearest even) with the DLA's saturation: no INF, clip to +-65504."""
    x = np.asarray(x, dtype=np.float64)
    return np.clip(x, -65504.0, 65504.0).astype(np.float16)


# ----------------------------------------------------------------------------------------------
# feature cubes


def align_up(x: int, a: int) -> int:
    """Round ``x`` up to a multiple of ``a``."""
    return -(-x // a) * a


@dataclass(frozen=True)
class FeatureLayout:
    """Where every element of an NCHW cube sits in the DLA feature format (byte offsets)."""

    n: int
    c: int
    h: int
    w: int
    bpe: int  # bytes per element (1 INT8, 2 FP16)
    atom_bytes: int  # 32 on nv_full/Xavier/Orin, 8 on nv_small
    line_stride: int  # bytes between consecutive lines (H)
    surface_stride: int  # bytes between consecutive surfaces (channel atoms)
    batch_stride: int  # bytes between consecutive images

    @property
    def atom_elems(self) -> int:
        return self.atom_bytes // self.bpe

    @property
    def surfaces(self) -> int:
        return -(-self.c // self.atom_elems)

    @property
    def c_padded(self) -> int:
        return self.surfaces * self.atom_elems

    @property
    def total_bytes(self) -> int:
        """Bytes the cube occupies (padded); what a full read or write moves."""
        return self.n * self.batch_stride

    @property
    def payload_bytes(self) -> int:
        """Bytes of real (unpadded) elements."""
        return self.n * self.c * self.h * self.w * self.bpe

    @property
    def transfer_bytes(self) -> int:
        """Bytes actually moved when reading/writing the cube: only atoms that exist, no line
        or surface gaps (the DMA skips them)."""
        return self.n * self.surfaces * self.h * self.w * self.atom_bytes


def feature_layout(
    n: int,
    c: int,
    h: int,
    w: int,
    bpe: int,
    atom_bytes: int = 32,
    line_stride: int | None = None,
    surface_stride: int | None = None,
    batch_stride: int | None = None,
) -> FeatureLayout:
    """Build a (packed by default) feature layout and check the mandatory 32-B alignments."""
    if bpe not in (1, 2):
        raise ValueError(f"bytes per element must be 1 (INT8) or 2 (FP16), got {bpe}")
    if atom_bytes % bpe or atom_bytes <= 0:
        raise ValueError(f"atom of {atom_bytes} B does not hold whole {bpe}-byte elements")
    if min(n, c, h, w) < 1:
        raise ValueError(f"cube dimensions must be >= 1, got N={n} C={c} H={h} W={w}")
    ls = w * atom_bytes if line_stride is None else line_stride
    ss = h * ls if surface_stride is None else surface_stride
    surfaces = -(-c // (atom_bytes // bpe))
    bs = surfaces * ss if batch_stride is None else batch_stride
    for name, v in (("line stride", ls), ("surface stride", ss), ("batch stride", bs)):
        if v % atom_bytes:
            raise ValueError(f"{name} {v} B is not a multiple of the {atom_bytes}-B atom")
    if ls < w * atom_bytes:
        raise ValueError(f"line stride {ls} B < width {w} x {atom_bytes} B atoms")
    if ss < (h - 1) * ls + w * atom_bytes:
        raise ValueError(f"surface stride {ss} B overlaps the {h} lines of {ls} B")
    if bs < (surfaces - 1) * ss + (h - 1) * ls + w * atom_bytes:
        raise ValueError(f"batch stride {bs} B overlaps the {surfaces} surfaces")
    return FeatureLayout(n, c, h, w, bpe, atom_bytes, ls, ss, bs)


def _elem_dtype(bpe: int) -> np.dtype:
    return np.dtype(np.int8) if bpe == 1 else np.dtype("<f2")


def _offsets(lay: FeatureLayout) -> np.ndarray:
    """Byte offset of every (n, c_padded, h, w) element, shape (N, Cp, H, W)."""
    cp = np.arange(lay.c_padded)
    surf, lane = cp // lay.atom_elems, cp % lay.atom_elems
    off = (
        np.arange(lay.n)[:, None, None, None] * lay.batch_stride
        + (surf * lay.surface_stride + lane * lay.bpe)[None, :, None, None]
        + np.arange(lay.h)[None, None, :, None] * lay.line_stride
        + np.arange(lay.w)[None, None, None, :] * lay.atom_bytes
    )
    return off


def pack_feature(x: np.ndarray, lay: FeatureLayout) -> np.ndarray:
    """NCHW array (int8 or float16) -> uint8 buffer of ``lay.total_bytes`` in DLA feature format."""
    if x.shape != (lay.n, lay.c, lay.h, lay.w):
        raise ValueError(f"array shape {x.shape} does not match layout {(lay.n, lay.c, lay.h, lay.w)}")
    dt = _elem_dtype(lay.bpe)
    if x.dtype != dt.newbyteorder("="):
        raise ValueError(f"array dtype {x.dtype} does not match {lay.bpe}-byte layout ({dt})")
    buf = np.zeros(lay.total_bytes, dtype=np.uint8)
    xp = np.zeros((lay.n, lay.c_padded, lay.h, lay.w), dtype=dt)
    xp[:, : lay.c] = x
    raw = xp.astype(dt.newbyteorder("<")).view(np.uint8).reshape(*xp.shape, lay.bpe)
    off = _offsets(lay)
    for b in range(lay.bpe):
        buf[off + b] = raw[..., b]
    return buf


def unpack_feature(buf: np.ndarray, lay: FeatureLayout) -> np.ndarray:
    """uint8 buffer in DLA feature format -> NCHW array (int8 or float16); padding dropped."""
    buf = np.asarray(buf, dtype=np.uint8).reshape(-1)
    if buf.size < lay.total_bytes:
        raise ValueError(f"buffer of {buf.size} B is smaller than the layout's {lay.total_bytes} B")
    off = _offsets(lay)[:, : lay.c]
    raw = np.stack([buf[off + b] for b in range(lay.bpe)], axis=-1)
    dt = _elem_dtype(lay.bpe).newbyteorder("<")
    return np.ascontiguousarray(raw).view(dt)[..., 0].astype(dt.newbyteorder("="))


# ----------------------------------------------------------------------------------------------
# direct-convolution weights


@dataclass(frozen=True)
class WeightLayout:
    """Sizes of a packed direct-convolution weight blob."""

    k: int
    c: int
    r: int
    s: int
    bpe: int
    kernel_group: int  # kernels per group (atomic-K for the precision)
    cube_elems: int  # elements per 1x1xC' cube (atomic-C)
    align: int = 128

    @property
    def groups(self) -> int:
        return -(-self.k // self.kernel_group)

    @property
    def payload_bytes(self) -> int:
        return self.k * self.c * self.r * self.s * self.bpe

    @property
    def total_bytes(self) -> int:
        """Bytes in memory, including the final alignment padding (what a fetch moves)."""
        return align_up(self.payload_bytes, self.align)


def weight_layout_dc(
    k: int, c: int, r: int, s: int, bpe: int, kernel_group: int | None = None, cube_elems: int = 64
) -> WeightLayout:
    """Layout of DC weights; kernel group defaults to 32 (INT8) / 16 (FP16) as on nv_full."""
    kg = kernel_group if kernel_group is not None else (32 if bpe == 1 else 16)
    if min(k, c, r, s, kg, cube_elems) < 1:
        raise ValueError(f"weight dims must be >= 1, got K={k} C={c} R={r} S={s}")
    return WeightLayout(k, c, r, s, bpe, kg, cube_elems)


def packed_weight_bytes(op, cfg) -> int:
    """Bytes of a ConvOp's DC weights in memory (uncompressed, 128-B aligned), kernel group =
    the config's atomic-K for the weight precision, cube = atomic-C. Grouped convolutions are
    packed group by group."""
    k, cg, r, s = op.weight_shape
    prec = op.wprec
    kg = cfg.conv.atoms(prec)[1]
    per_group = weight_layout_dc(k // op.groups, cg, r, s, prec.bytes, kg, cfg.conv.atomic_c)
    return align_up(op.groups * per_group.payload_bytes, 128)


def _weight_order(wl: WeightLayout) -> np.ndarray:
    """Flat KCRS indices in memory order: group -> C-block -> R -> S -> K-in-group -> C'."""
    idx = np.arange(wl.k * wl.c * wl.r * wl.s).reshape(wl.k, wl.c, wl.r, wl.s)
    out = []
    for g0 in range(0, wl.k, wl.kernel_group):
        grp = idx[g0 : g0 + wl.kernel_group]  # (Kg, C, R, S)
        for c0 in range(0, wl.c, wl.cube_elems):
            blk = grp[:, c0 : c0 + wl.cube_elems]  # (Kg, C', R, S)
            out.append(blk.transpose(2, 3, 0, 1).reshape(-1))  # R -> S -> K -> C'
    return np.concatenate(out)


def pack_weights_dc(wt: np.ndarray, wl: WeightLayout) -> np.ndarray:
    """KCRS weights (int8 or float16) -> uint8 blob in direct-convolution weight format."""
    if wt.shape != (wl.k, wl.c, wl.r, wl.s):
        raise ValueError(f"weight shape {wt.shape} does not match layout {(wl.k, wl.c, wl.r, wl.s)}")
    dt = _elem_dtype(wl.bpe)
    if wt.dtype != dt.newbyteorder("="):
        raise ValueError(f"weight dtype {wt.dtype} does not match {wl.bpe}-byte layout")
    flat = wt.reshape(-1)[_weight_order(wl)].astype(dt.newbyteorder("<"))
    buf = np.zeros(wl.total_bytes, dtype=np.uint8)
    buf[: wl.payload_bytes] = flat.view(np.uint8)
    return buf


def unpack_weights_dc(buf: np.ndarray, wl: WeightLayout) -> np.ndarray:
    """Inverse of :func:`pack_weights_dc`."""
    buf = np.asarray(buf, dtype=np.uint8).reshape(-1)
    if buf.size < wl.payload_bytes:
        raise ValueError(f"weight blob of {buf.size} B is smaller than {wl.payload_bytes} B")
    dt = _elem_dtype(wl.bpe).newbyteorder("<")
    flat = buf[: wl.payload_bytes].view(dt).astype(dt.newbyteorder("="))
    out = np.empty(wl.k * wl.c * wl.r * wl.s, dtype=flat.dtype)
    out[_weight_order(wl)] = flat
    return out.reshape(wl.k, wl.c, wl.r, wl.s)


# ----------------------------------------------------------------------------------------------
# TensorRT-style DLA I/O formats


class IOFormat(enum.Enum):
    """Tensor formats a DLA loadable accepts at its boundary ([TRTR] TensorFormat)."""

    CHW16 = "kCHW16"  # FP16 native: [N][ceil(C/16)][H][W][16]
    CHW32 = "kCHW32"  # INT8 native: [N][ceil(C/32)][H][W][32]
    DLA_LINEAR = "kDLA_LINEAR"  # NCHW, each W row padded to 64 B
    DLA_HWC4 = "kDLA_HWC4"  # image input: C in {1,3,4} padded to 4, rows of W*4 padded


def io_format_bytes(fmt: IOFormat, n: int, c: int, h: int, w: int, bpe: int, hwc4_row_align: int = 32) -> int:
    """Bytes of a tensor in ``fmt`` (padding included).

    kDLA_HWC4 rows are aligned to 32 B on Xavier and 64 B on Orin ([TRTR]); pass the platform's.
    """
    if fmt is IOFormat.CHW16:
        return n * align_up(c, 16) * h * w * bpe
    if fmt is IOFormat.CHW32:
        return n * align_up(c, 32) * h * w * bpe
    if fmt is IOFormat.DLA_LINEAR:
        return n * c * h * align_up(w * bpe, 64)
    if fmt is IOFormat.DLA_HWC4:
        if c not in (1, 3, 4):
            raise ValueError(f"kDLA_HWC4 needs C in {{1,3,4}}, got C={c}")
        return n * h * align_up(w * 4 * bpe, hwc4_row_align)
    raise NotImplementedError(f"I/O format {fmt}")


def pack_io(x: np.ndarray, fmt: IOFormat, hwc4_row_align: int = 32) -> np.ndarray:
    """NCHW array -> uint8 buffer in a TensorRT DLA I/O format."""
    n, c, h, w = x.shape
    bpe = x.dtype.itemsize
    if fmt in (IOFormat.CHW16, IOFormat.CHW32):
        v = 16 if fmt is IOFormat.CHW16 else 32
        xp = np.zeros((n, align_up(c, v), h, w), dtype=x.dtype)
        xp[:, :c] = x
        arr = xp.reshape(n, -1, v, h, w).transpose(0, 1, 3, 4, 2)
    elif fmt is IOFormat.DLA_LINEAR:
        wp = align_up(w * bpe, 64) // bpe
        arr = np.zeros((n, c, h, wp), dtype=x.dtype)
        arr[..., :w] = x
    elif fmt is IOFormat.DLA_HWC4:
        if c not in (1, 3, 4):
            raise ValueError(f"kDLA_HWC4 needs C in {{1,3,4}}, got C={c}")
        row = align_up(w * 4 * bpe, hwc4_row_align) // bpe
        arr = np.zeros((n, h, row), dtype=x.dtype)
        arr[:, :, : w * 4].reshape(n, h, w, 4)[..., :c] = x.transpose(0, 2, 3, 1)
    else:
        raise NotImplementedError(f"I/O format {fmt}")
    return np.ascontiguousarray(arr).astype(x.dtype.newbyteorder("<")).view(np.uint8).reshape(-1)


def unpack_io(
    buf: np.ndarray, fmt: IOFormat, shape: tuple[int, int, int, int], dtype: np.dtype, hwc4_row_align: int = 32
) -> np.ndarray:
    """Inverse of :func:`pack_io`."""
    n, c, h, w = shape
    dt = np.dtype(dtype)
    size = io_format_bytes(fmt, n, c, h, w, dt.itemsize, hwc4_row_align)
    flat = np.asarray(buf, dtype=np.uint8).reshape(-1)[:size].view(dt.newbyteorder("<")).astype(dt)
    if fmt in (IOFormat.CHW16, IOFormat.CHW32):
        v = 16 if fmt is IOFormat.CHW16 else 32
        arr = flat.reshape(n, align_up(c, v) // v, h, w, v).transpose(0, 1, 4, 2, 3)
        return np.ascontiguousarray(arr.reshape(n, -1, h, w)[:, :c])
    if fmt is IOFormat.DLA_LINEAR:
        return np.ascontiguousarray(flat.reshape(n, c, h, -1)[..., :w])
    if fmt is IOFormat.DLA_HWC4:
        rows = flat.reshape(n, h, -1)[:, :, : w * 4].reshape(n, h, w, 4)[..., :c]
        return np.ascontiguousarray(rows.transpose(0, 3, 1, 2))
    raise NotImplementedError(f"I/O format {fmt}")


def fp16_ulp(x: np.ndarray) -> np.ndarray:
    """Spacing of FP16 numbers at ``x`` (used by tests and error bounds)."""
    return np.spacing(np.abs(np.asarray(x, dtype=np.float16))).astype(np.float64)

