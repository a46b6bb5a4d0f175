"""CONV core (CDMA -> CBUF -> CSC -> CMAC -> CACC): functional model and timing model.

Functional model
----------------
* INT8: int8 x int8 products summed exactly (float64 BLAS is exact here: |sum| < 2^37 << 2^53), the
  CACC result (INT34 internally [IAS]) is handed on as int32 with saturation.
* FP16: fp16 x fp16 products are exact in float32 and are accumulated in float32 (CACC keeps FP44
  and truncates to FP32 [IAS]); summation order differs from the hardware, within FP32 rounding.
* Padding uses ``op.pad_value`` (CDMA pad value).  Dilation and groups as in the DC mode [IAS].
* Winograd F(2x2,3x3) (4x4 input tiles, 2x2 outputs, 16 multiplies for 36 [IAS]): the hardware
  multiplies *pre-transformed* 4x4 weights U = G g G^T (software converts them [IAS]) with the
  PRA-transformed input V = C^T d C and post-adds (POA) with A.  INT8: G has halves, so the weights
  are stored as the integer U4 = (2G) g (2G)^T = 4U, which must fit int8 (:func:`winograd_weights`
  raises otherwise: ``wt_cvt`` makes them "INT8 representable" [PREC]). The PRA results are
  truncated to int8 before the multipliers: ``pra_trunc`` "truncate the winograd pre-transformed
  results to INT8/16/FP16 representable", ``y = saturate_round(x[msb:lsb])`` with lsb = PRA_TRUNCATE
  (0-2) and round half away from zero [PREC], [HWARCH]. V of int8 data spans +-510, so INT8 Winograd
  is exact only when every |V| <= 127 at ``pra_trunc`` 0 (small inputs); at ``pra_trunc`` 2 nothing
  saturates but V loses its two low bits. The accumulator is ``4 / 2**pra_trunc`` times the direct
  result (:func:`winograd_int8_gain`; 1 at ``pra_trunc`` 2), folded into the SDP converter, as the
  bias scale equation of [PREC] (``SF_in*SF_wt / 2**(pra_trunc+cc_out_trunc)``) states. The POA
  adders are taken as exact (widths not published) [U]. This loss is why the NVDLA compiler never
  selects Winograd for INT8 (nvdla/sw ``umd/core/src/compiler/engine-ast/EngineNodeFactory.cpp``:
  Winograd only ``if (canWG && isWGPossible && !isGroupConv && !isDilation && !isInt8)``).
* Image input mode computes like direct convolution (the difference is layout and timing).
* Deconvolution = ``sy*sx`` stride-1 convolutions with split, order-reversed kernels whose outputs
  are appended along C, then the RUBIK contract interleaves them [IAS] (see :func:`deconvolution`).

Timing model (``cfg.timing_model == "hardware"``)
------------------------------------------------
* Atomic op: 1x1xatomic_c inputs x atomic_k kernels per cycle; a stripe is 16..32 atomic ops sharing
  weights; a stripe shorter than 16 still costs 16 cycles (weight reload) [IAS] -> 1x1-output layers
  at batch 1 run at 1/16 = 6.25 % MAC efficiency; batching lengthens the stripe.
* Direct: cycles = ceil(groups/p) * ceil(p*Kg/atomic_k) * ceil(p*Cg/atomic_c) * R * S * stripe_cycles(N*Ho*Wo)
  with p groups packed per atomic op (1 for an ordinary convolution).
* Winograd: blocks of 4x4x4 input, one stripe per block [IAS]: cycles =
  ceil(K/atomic_k) * ceil(C/4) * stripe_cycles(N * Ho/2 * Wo/2)  (2.25x over direct for C % 64 == 0).
* Image input: MACs / (MACs-per-cycle * image_efficiency); the 50 % average utilisation for
  3-channel input is [HWARCH]'s figure. Image input excludes multi-batch [PG]: an image-mode op of
  N images stands for the N one-image hardware layers the compiler issues (its cycles and bytes
  scale with N).
* 2:4 structured sparsity (Orin) halves the channel operations when C > 64 [FAQ].
* Grouped and depthwise convolution: groups packed block-diagonally into one atomic op
  (:func:`group_packing`), not one padded atom per group.  Orin's depthwise unit is modelled as
  processing atomic_c channels per cycle, one tap each [U] (throughput not published).
* Traffic: input cube (32-B atoms, padded C; image input in kDLA_HWC4) x CBUF input fetches,
  weights (128-B aligned blob; Winograd 16/9; compression) x weight fetches, output cube once.
  Fetch counts come from :mod:`dla_sim.cbuf`.

Spreadsheet timing model (``cfg.timing_model == "spreadsheet"``): :func:`spreadsheet_timing`.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import cbuf, limits, memory
from .config import DlaConfig
from .limits import DlaLimitError
from .ops import ConvOp, CubeDesc, Precision, RubikOp, UnitTiming, convert

WINOGRAD_INT8_GAIN = 4  # U4 = 4 * G g G^T at pra_trunc 0, see module docstring
PRA_TRUNC_MAX = 2  # PRA truncate register range 0-2 [HWARCH]


def winograd_int8_gain(pra_trunc: int) -> float:
    """INT8 Winograd accumulator / direct result: U4 = 4U, input transform >> ``pra_trunc``."""
    return WINOGRAD_INT8_GAIN / 2.0 ** pra_trunc

# Winograd F(2x2,3x3) matrices as written in [IAS] (C is the input transform, A^T the output one).
_C = np.array([[1, 0, 0, 0], [0, 1, -1, 1], [-1, 1, 1, 0], [0, 0, 0, -1]], dtype=np.float64)
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)


def check(op: ConvOp, cfg: DlaConfig) -> list[str]:
    """Every violated limit of ``op`` on ``cfg``: register limits and feature crossings from
    :mod:`dla_sim.limits`, plus the CONV core's own consistency rules."""
    reasons = list(limits.check(op, cfg))
    if op.input.n != op.output.n:
        reasons.append(f"batch: input N={op.input.n} != output N={op.output.n}")
    ho, wo = output_hw(op)
    if (ho, wo) != (op.output.h, op.output.w):
        reasons.append(f"output size: geometry gives {ho}x{wo}, op says {op.output.h}x{op.output.w}")
    if op.mode == "image" and op.input.c > 4:
        reasons.append(f"image input: C must be <= 4 (kDLA_HWC4), got {op.input.c}")
    if op.input.precision is Precision.FP16 and cfg.conv.macs_fp16 == 0:
        reasons.append(f"precision: FP16 not supported by {cfg.name}")
    if op.sparse_2_4 and op.input.precision is not Precision.INT8:
        reasons.append(f"2:4 sparsity: INT8 only, got {op.input.precision.value}")
    return reasons


def enforce(op: ConvOp, cfg: DlaConfig) -> None:
    """Raise :class:`DlaLimitError` naming every violated limit and its value."""
    reasons = check(op, cfg)
    if reasons:
        raise DlaLimitError(f"conv op {op.name!r}: " + "; ".join(reasons))


def output_hw(op: ConvOp) -> tuple[int, int]:
    (r, s), (sy, sx), (dy, dx) = op.kernel, op.stride, op.dilation
    pt, pl, pb, pr = op.pad
    ho = (op.input.h + pt + pb - ((r - 1) * dy + 1)) // sy + 1
    wo = (op.input.w + pl + pr - ((s - 1) * dx + 1)) // sx + 1
    return ho, wo


# ------------------------------------------------------------------------------------------------
# functional model


def _pad(x: np.ndarray, op: ConvOp) -> np.ndarray:
    pt, pl, pb, pr = op.pad
    if not any(op.pad):
        return x
    return np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=op.pad_value)


def _patches(xp: np.ndarray, r: int, s: int, sy: int, sx: int, dy: int, dx: int, ho: int, wo: int) -> np.ndarray:
    """View of shape (N, Ho, Wo, C, R, S) over a padded NCHW array."""
    n, c, _, _ = xp.shape
    sn, sc, sh, sw = xp.strides
    return as_strided(xp, (n, ho, wo, c, r, s), (sn, sh * sy, sw * sx, sc, sh * dy, sw * dx), writeable=False)


def _check_arrays(op: ConvOp, x: np.ndarray, w: np.ndarray) -> None:
    if x.shape != op.input.shape:
        raise ValueError(f"{op.name or 'conv'}: input shape {x.shape} != op input {op.input.shape}")
    want = op.weight_shape if op.mode != "winograd" else (op.output.c, op.input.c, 4, 4)
    if w.shape != want:
        raise ValueError(f"{op.name or 'conv'}: weight shape {w.shape} != expected {want}")
    dt = op.input.precision.dtype
    if x.dtype != dt or w.dtype != op.wprec.dtype:
        raise ValueError(f"{op.name or 'conv'}: dtypes {x.dtype}/{w.dtype} do not match {dt}/{op.wprec.dtype}")


def _sat_int32(acc: np.ndarray) -> np.ndarray:
    return np.clip(acc, -(2**31), 2**31 - 1).astype(np.int32)


def accumulate(op: ConvOp, x: np.ndarray, w: np.ndarray, *, cfg: DlaConfig) -> np.ndarray:
    """CACC output of ``op``: int32 (INT8) or float32 (FP16), NCHW.

    ``w`` is KCRS (C per group); for ``mode='winograd'`` it is the pre-transformed (K, C, 4, 4) array
    from :func:`winograd_weights`.
    """
    enforce(op, cfg)
    _check_arrays(op, x, w)
    is_int = op.input.precision.is_int
    wt = w.astype(np.float32)
    ctype = _exact_int_type(x, wt, op) if is_int else np.float32
    xp = _pad(x.astype(ctype), op)
    wt = wt.astype(ctype, copy=False)
    if op.mode == "winograd":
        acc = _winograd(xp, wt, op.output.h, op.output.w, op.pra_trunc if is_int else None)
    else:
        acc = _direct(xp, wt, op, is_int)
    if is_int:
        return _sat_int32(np.rint(acc))
    return acc.astype(np.float32)


def _exact_int_type(x: np.ndarray, w: np.ndarray, op: ConvOp) -> type:
    """The float type in which BLAS computes this integer convolution exactly.

    Every partial sum of an output is an integer bounded by B = max|x| * max_k sum|w_k|; when
    B < 2**24 all of them are exact in float32 whatever order BLAS adds them in, so float32 (twice
    the speed) gives the same integers as float64 (exact below 2**53, far above any int8 layer's B).
    Winograd's transformed operands have no such simple bound and stay in float64.
    """
    if op.mode == "winograd" or x.size == 0 or w.size == 0:
        return np.float64
    xmax = max(-int(x.min()), int(x.max()), abs(int(op.pad_value)))
    wsum = float(np.abs(w).reshape(w.shape[0], -1).sum(axis=1, dtype=np.float64).max())
    return np.float32 if xmax * wsum < 2**24 else np.float64


def _tap(xp: np.ndarray, i: int, j: int, op: ConvOp) -> np.ndarray:
    """(N, C, Ho*Wo): the input pixels kernel tap (i, j) meets at every output position."""
    (sy, sx), (dy, dx), ho, wo = op.stride, op.dilation, op.output.h, op.output.w
    v = xp[:, :, i * dy: i * dy + (ho - 1) * sy + 1: sy, j * dx: j * dx + (wo - 1) * sx + 1: sx]
    return v.reshape(v.shape[0], v.shape[1], ho * wo)


def _direct(xp: np.ndarray, w: np.ndarray, op: ConvOp, exact: bool = False) -> np.ndarray:
    """The convolution as BLAS GEMMs. ``exact``: the operands are integers whose partial sums are
    exact in ``w``'s float type, so the summation order is free (tap by tap for large inputs)."""
    (r, s), (sy, sx), (dy, dx) = op.kernel, op.stride, op.dilation
    n, ho, wo, g = op.output.n, op.output.h, op.output.w, op.groups
    k, cg = w.shape[0], w.shape[1]
    kg = k // g
    if exact and g == 1 and r == s == 1:  # 1x1: one GEMM on the (strided) input, no patch copy
        return np.matmul(w.reshape(k, cg), _tap(xp, 0, 0, op)).reshape(n, k, ho, wo)
    if exact and g == 1 and cg >= 32 and ho * wo >= 64:  # one GEMM per tap: contiguous copies, no im2col
        acc = None
        for i in range(r):
            for j in range(s):
                part = np.matmul(np.ascontiguousarray(w[:, :, i, j]), _tap(xp, i, j, op))
                acc = part if acc is None else np.add(acc, part, out=acc)
        return acc.reshape(n, k, ho, wo)
    pt = _patches(xp, r, s, sy, sx, dy, dx, ho, wo)
    if g == 1:
        cols = pt.reshape(n * ho * wo, cg * r * s)
        out = cols @ w.reshape(k, -1).T  # (N*Ho*Wo, K)
        return out.reshape(n, ho, wo, k).transpose(0, 3, 1, 2)
    p = pt.reshape(n, ho, wo, g, cg, r, s)
    wg = w.reshape(g, kg, cg, r, s)
    out = np.einsum("nhwgcrs,gkcrs->nhwgk", p, wg, optimize=True)
    return out.reshape(n, ho, wo, k).transpose(0, 3, 1, 2)


def winograd_weights(g: np.ndarray, precision: Precision) -> np.ndarray:
    """Software pre-transform of 3x3 KCRS weights to the (K, C, 4, 4) Winograd weights.

    FP16: U = G g G^T rounded to fp16.  INT8: U4 = (2G) g (2G)^T, exact integers; raises if any value
    leaves int8 (the layer must then run in direct mode).
    """
    if g.shape[2:] != (3, 3):
        raise ValueError(f"winograd weights need 3x3 kernels, got {g.shape[2:]}")
    gf = g.astype(np.float64)
    if precision is Precision.INT8:
        g2 = 2 * _G
        u = np.einsum("ar,kcrs,bs->kcab", g2, gf, g2)
        if u.min() < -128 or u.max() > 127:
            raise DlaLimitError(
                f"winograd INT8: transformed weight range [{u.min():.0f}, {u.max():.0f}] exceeds int8"
            )
        return u.astype(np.int8)
    u = np.einsum("ar,kcrs,bs->kcab", _G, gf, _G)
    return u.astype(np.float16)


def _pra_truncate(v: np.ndarray, shift: int) -> np.ndarray:
    """INT8 PRA output: ``saturate_round(v[shift + 7 : shift])`` (round half away from zero) [PREC]."""
    from .formats import rshift_round, saturate

    return saturate(rshift_round(np.rint(v).astype(np.int64), shift), 8).astype(v.dtype)


def _winograd(xp: np.ndarray, u: np.ndarray, ho: int, wo: int, pra_trunc: int | None = None) -> np.ndarray:
    """Tile-wise Winograd F(2x2,3x3) on a padded NCHW input with pre-transformed weights;
    ``pra_trunc`` (INT8): the input transform truncated to int8 as the PRA does."""
    n, c = xp.shape[:2]
    th, tw = ho // 2, wo // 2
    sn, sc, sh, sw = xp.strides
    d = as_strided(xp, (n, th, tw, c, 4, 4), (sn, 2 * sh, 2 * sw, sc, sh, sw), writeable=False)
    ct = _C.astype(xp.dtype)
    # PRA: V = C^T d C, as two BLAS tensordots over the tile axes -> (4, 4, N, th, tw, C)
    v = np.tensordot(ct.T, np.tensordot(ct.T, d, axes=(1, 5)), axes=(1, 5))  # (i, j, n, th, tw, c)
    v = v.reshape(16, n * th * tw, c)
    if pra_trunc is not None:
        v = _pra_truncate(v, pra_trunc)
    k = u.shape[0]
    uf = u.reshape(k, c, 16).transpose(2, 1, 0)  # (16, C, K)
    m = np.matmul(v, uf)  # 16 point-wise products, each a (tiles x C) @ (C x K) matmul
    m = m.reshape(4, 4, n, th, tw, k)
    at = _AT.astype(xp.dtype)
    # POA: S = A^T M A -> (2, 2, N, th, tw, K)
    sm = np.tensordot(at, np.tensordot(at, m, axes=(1, 1)), axes=(1, 1))  # (p, q, n, th, tw, k)
    s = sm.transpose(2, 5, 3, 0, 4, 1)  # (n, k, th, p, tw, q)
    return s.reshape(n, k, ho, wo)


def run(op: ConvOp, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None = None, *, cfg: DlaConfig) -> np.ndarray:
    """Layer output as written to memory when no SdpOp is fused after the convolution.

    The SDP then works as a pass-through with bias and the output converter: INT8 ->
    ``convert(acc + bias, op.requant)`` (``requant`` required); FP16 -> fp16(acc + bias).
    """
    acc = accumulate(op, x, w, cfg=cfg)
    if op.has_bias != (bias is not None):
        state = "missing" if bias is None else "given"
        raise ValueError(f"{op.name or 'conv'}: has_bias={op.has_bias} but bias {state}")
    if op.input.precision.is_int:
        a = acc.astype(np.int64)
        if bias is not None:
            a = a + np.asarray(bias, dtype=np.int64).reshape(1, -1, 1, 1)
        if op.requant is None:
            if op.output.precision is Precision.INT8:
                raise ValueError(f"{op.name or 'conv'}: INT8 output needs requant parameters")
            raise NotImplementedError(f"conv output precision {op.output.precision} from an INT8 layer")
        return convert(a, op.requant)
    a = acc.astype(np.float32)
    if bias is not None:
        a = a + np.asarray(bias, dtype=np.float32).reshape(1, -1, 1, 1)
    from .formats import to_fp16

    return to_fp16(a)


# ------------------------------------------------------------------------------------------------
# deconvolution = stride_x * stride_y convolutions + RUBIK contract


def deconv_phase_weights(wt: np.ndarray, stride: tuple[int, int]) -> list[np.ndarray]:
    """Split transposed-conv weights (C, K, R, S) into ``sy*sx`` stride-1 conv kernels (K, C, Jy, Jx).

    Phase (py, px), index ``py*sx + px``, produces outputs oy = qy*sy + py; its kernel holds taps
    r = py + j*sy in reversed order (Jy = ceil(R/sy), missing taps are zero).
    """
    c, k, r, s = wt.shape
    sy, sx = stride
    jy, jx = -(-r // sy), -(-s // sx)
    out = []
    for py in range(sy):
        for px in range(sx):
            sub = np.zeros((k, c, jy, jx), dtype=wt.dtype)
            for j in range(jy):
                for i in range(jx):
                    rr, ss = py + (jy - 1 - j) * sy, px + (jx - 1 - i) * sx
                    if rr < r and ss < s:
                        sub[:, :, j, i] = wt[:, :, rr, ss].T
            out.append(sub)
    return out


def lower_deconvolution(
    inp: CubeDesc, k: int, kernel: tuple[int, int], stride: tuple[int, int], name: str = "deconv",
    out_precision: Precision | None = None,
) -> tuple[list[ConvOp], RubikOp, tuple[int, int]]:
    """Hardware ops of a transposed convolution (pad 0): the phase convolutions, the contract, and
    the (H, W) to crop from the contracted cube."""
    (r, s), (sy, sx) = kernel, stride
    jy, jx = -(-r // sy), -(-s // sx)
    ho, wo = inp.h + jy - 1, inp.w + jx - 1
    prec = out_precision or inp.precision
    sub_out = CubeDesc(n=inp.n, c=k, h=ho, w=wo, precision=prec, memory=inp.memory)
    convs = [
        ConvOp(
            name=f"{name}.phase{p}", input=inp, output=sub_out, kernel=(jy, jx),
            pad=(jy - 1, jx - 1, jy - 1, jx - 1),
        )
        for p in range(sy * sx)
    ]
    ext = CubeDesc(n=inp.n, c=k * sy * sx, h=ho, w=wo, precision=prec, memory=inp.memory)
    out = CubeDesc(n=inp.n, c=k, h=ho * sy, w=wo * sx, precision=prec, memory=inp.memory)
    rub = RubikOp(name=f"{name}.contract", input=ext, output=out, mode="contract", stride=(sy, sx))
    return convs, rub, ((inp.h - 1) * sy + r, (inp.w - 1) * sx + s)


def contract(ext: np.ndarray, stride: tuple[int, int]) -> np.ndarray:
    """RUBIK contract: channel-extended (N, sy*sx*K, H, W) -> (N, K, H*sy, W*sx).

    Channel block ``py*sx + px`` goes to output positions (oy*sy + py, ox*sx + px).
    """
    sy, sx = stride
    n, ck, h, w = ext.shape
    k = ck // (sy * sx)
    return ext.reshape(n, sy, sx, k, h, w).transpose(0, 3, 4, 1, 5, 2).reshape(n, k, h * sy, w * sx)


def deconvolution(
    x: np.ndarray, wt: np.ndarray, stride: tuple[int, int], *, cfg: DlaConfig, name: str = "deconv"
) -> np.ndarray:
    """Transposed convolution (pad 0, weights (C, K, R, S)) computed the hardware way; returns the CACC
    values (int32 / float32) of the cropped output."""
    c, k, r, s = wt.shape
    prec = Precision.INT8 if x.dtype == np.int8 else Precision.FP16
    inp = CubeDesc(n=x.shape[0], c=c, h=x.shape[2], w=x.shape[3], precision=prec)
    convs, rub, (hc, wc) = lower_deconvolution(inp, k, (r, s), stride, name)
    phases = deconv_phase_weights(wt, stride)
    ext = np.concatenate([accumulate(op, x, wp, cfg=cfg) for op, wp in zip(convs, phases)], axis=1)
    try:
        from .rubik import contract as rubik_contract
    except ImportError:  # pragma: no cover
        rubik_contract = None
    out = rubik_contract(ext, stride) if rubik_contract is not None else contract(ext, stride)
    del rub
    return out[:, :, :hc, :wc]


# ------------------------------------------------------------------------------------------------
# timing model (hardware)


def stripe_cycles(positions: int, cfg: DlaConfig) -> int:
    """Cycles for ``positions`` atomic ops sharing one weight set: stripes of <= stripe_max ops, each
    costing at least stripe_min cycles (the weight reload) [IAS]."""
    smax, smin = cfg.conv.stripe_max, cfg.conv.stripe_min
    full, rem = divmod(positions, smax)
    return full * smax + (max(rem, smin) if rem else 0)


def compute_cycles(op: ConvOp, cfg: DlaConfig) -> float:
    prec = op.input.precision
    mpc = cfg.conv.macs(prec)
    ac, ak = cfg.conv.atoms(prec)
    k, cg, r, s = op.weight_shape
    g = op.groups
    kg = k // g
    n, ho, wo = op.output.n, op.output.h, op.output.w
    if op.mode == "image":
        return op.macs / (mpc * cfg.conv.image_efficiency)
    if g > 1 and cg == 1 and kg == 1 and cfg.conv.depthwise_unit:
        return math.ceil(k / ac) * r * s * n * ho * wo
    c_eff = -(-cg // 2) if op.sparse_2_4 else cg
    if op.mode == "winograd":
        return math.ceil(k / ak) * math.ceil(c_eff / 4) * stripe_cycles(n * (ho // 2) * (wo // 2), cfg)
    p = group_packing(g, c_eff, kg, ac, ak)
    return (math.ceil(g / p) * math.ceil(p * kg / ak) * math.ceil(p * c_eff / ac) * r * s
            * stripe_cycles(n * ho * wo, cfg))


def group_packing(groups: int, cg: int, kg: int, ac: int, ak: int) -> int:
    """Groups of a grouped convolution that share one atomic op.

    The DC weight format holds kernels in groups of ``atomic_k`` over 1x1x``atomic_c`` input blocks
    ([FMT], [IAS]); a group with ``cg`` input channels and ``kg`` kernels fills only a ``cg`` x ``kg``
    corner of that block. The compiler places ``p`` groups side by side on the diagonal (zero weights
    elsewhere, removed again by weight compression), so one atomic op computes ``p`` groups:
    ``p = min(groups, atomic_c // cg, atomic_k // kg)`` [D]. ResNeXt's 4x4 groups on a 64x32 atom
    pack 8 groups per op instead of one; a depthwise layer packs ``min(atomic_c, atomic_k)`` channels.
    """
    if groups <= 1 or cg > ac or kg > ak:
        return 1
    return max(1, min(groups, ac // cg, ak // kg))


def input_bytes(op: ConvOp) -> int:
    """Bytes of the input cube as fetched: 32-B atoms, or kDLA_HWC4 pixels for image input."""
    if op.mode == "image":
        bpe = op.input.precision.bytes
        return op.input.n * op.input.h * (-(-op.input.w * 4 * bpe // 32) * 32)
    return op.input.payload_bytes


def weight_bytes(op: ConvOp, cfg: DlaConfig) -> tuple[int, int]:
    """(all weights, one kernel group) in bytes as stored for ``op``."""
    from .formats import align_up

    k, cg, r, s = op.weight_shape
    bpe = op.wprec.bytes
    taps = 16 if op.mode == "winograd" else r * s
    raw = k * cg * taps * bpe
    if op.sparse_2_4:
        raw = raw // 2 + raw // 16  # kept half + 2-bit index per kept element [U]
    total = align_up(int(math.ceil(raw * (1.0 - op.weight_compression))), 128)
    _, ak = cfg.conv.atoms(op.input.precision)
    group = min(k, ak) * cg * taps * bpe
    return total, group


def _route(nbytes: float, where: str) -> tuple[int, int]:
    b = int(round(nbytes))
    return (b, 0) if where == "dram" else (0, b)


def timing(op: ConvOp, cfg: DlaConfig) -> UnitTiming:
    """Timing of one convolution layer whose output goes straight to memory (SDP pass-through)."""
    if cfg.timing_model == "spreadsheet":
        return spreadsheet_timing(op, cfg)
    enforce(op, cfg)
    comp = compute_cycles(op, cfg)
    in_b = input_bytes(op)
    w_b, grp = weight_bytes(op, cfg)
    pl = cbuf.plan(op, cfg, in_b, w_b, grp)
    in_dram, in_sram = _route(in_b * pl.input_fetches, op.input.memory)
    w_dram, w_sram = _route(w_b * pl.weight_fetches, op.weight_memory)
    out_dram, out_sram = _route(op.output.payload_bytes, op.output.memory)
    mem = memory.transfer_cycles(cfg, in_dram + w_dram + out_dram, in_sram + w_sram, out_sram)
    lat = memory.access_latency(cfg, bool(in_dram or w_dram), bool(in_sram or w_sram))
    cycles = max(comp, mem) + lat + cfg.conv.pipeline_latency
    return UnitTiming(
        unit="conv", cycles=cycles, compute_cycles=comp,
        dram_read_bytes=in_dram + w_dram, dram_write_bytes=out_dram,
        sram_read_bytes=in_sram + w_sram, sram_write_bytes=out_sram,
        macs=op.macs,
        notes=(f"cbuf={pl.mode}", f"in_fetch={pl.input_fetches:.3g}", f"w_fetch={pl.weight_fetches:.3g}"),
    )


# ------------------------------------------------------------------------------------------------
# timing model (NVDLA performance spreadsheet [PERF])


def _c16(x: float) -> int:
    return int(math.ceil(x / 16) * 16)


def spreadsheet_timing(
    op: ConvOp, cfg: DlaConfig, out: CubeDesc | None = None, eltwise: bool = False, padded: bool | None = None
) -> UnitTiming:
    """One layer as the NVDLA performance spreadsheet computes it [PERF].

    ``out``: the cube finally written (after a fused pooling), default ``op.output``; ``eltwise``:
    a fused element-wise operand is read (the sheet's "conv + elwise" adds the output size again).
    The sheet's rules, reproduced here (KB = bytes/1024, B = bytes per element):

    * strided convolutions are costed on the channel-extended input: C' = ceil16(C*sy*sx),
      H' = ceil(H/sy), W' = ceil(W/sx), kernel ceil(R/sy) x ceil(S/sx);
    * MAC cycles = C' * ceil(H_eff/sy) * ceil(W_eff/sx) * ceil16(K*N) * R*S/(sy*sx) / MACs
      / (2.25 if 3x3), H_eff = H when padded else H-R+1 (the sheet's "zero padding" flag);
    * every 3x3 layer divides its MAC cycles by 2.25 (Winograd assumed); weights are 16/9 larger
      where the layer stores Winograd-transformed weights (``op.mode == 'winograd'``);
    * traffic = input + weights + output (+ output again for eltwise), with refetch when weights and
      input do not fit the CBUF together: the smaller operand stays, the other is refetched
      ceil(size / (CBUF - min_other)) times (min input = ceil16(C')*min(R+1, H')*W', min weight =
      one group of 32 kernels, capped at CBUF/2);
    * cycles = max(MAC, ceil(DRAM KB / GB/s * MHz)); pooling/bias/BN/ReLU/eltwise are fused (free).
    A batch-N op (e.g. the sheet's FC batch) is costed as one layer over all N images.
    """
    out = out or op.output
    b_in = op.input.precision.bytes
    b_w = op.wprec.bytes
    (r, s), (sy, sx) = op.kernel, op.stride
    g = op.groups
    cg, kg = op.input.c // g, op.output.c // g
    n = op.input.n
    h, w = op.input.h, op.input.w
    if padded is None:
        padded = any(op.pad)
    wino = (r, s) == (3, 3)
    wino_w = op.mode == "winograd"
    cext = _c16(cg * sy * sx)
    h_eff = h if padded else h - r + 1
    w_eff = w if padded else w - s + 1
    mac = 0.0
    for _ in range(g):
        mac += (cext * math.ceil(h_eff / sy) * math.ceil(w_eff / sx) * _c16(kg * n) * r * s / (sy * sx)
                / cfg.conv.macs(op.input.precision) / (2.25 if wino else 1.0))
    kb = 1024.0
    x = g * cext * math.ceil(h / sy) * math.ceil(w / sx) * b_in * n / kb
    y = g * cext * min(r + 1, math.ceil(h / sy)) * math.ceil(w / sx) * b_in * n / kb
    z = out.h * out.w * _c16(out.c) * b_in * out.n / kb
    wt = g * cext * math.ceil(r / sy) * math.ceil(s / sx) * kg * b_w * (1 - op.weight_compression) / kb
    wt *= 16 / 9 if wino_w else 1.0
    wmin = g * cext * math.ceil(r / sy) * math.ceil(s / sx) * 32 * b_w * (1 - op.weight_compression) / kb
    cb = cfg.cbuf.size_bytes / kb
    wmin = cb / 2 if wmin >= cb else wmin
    if x < wt:  # feature map is the smaller operand: keep it, refetch weights if needed
        traffic = (math.ceil(x / (cb - wmin)) * wt + x + z) if x > cb - wmin else x + wt + z
    else:
        traffic = (math.ceil(wt / (cb - y)) * x + wt + z) if wt > cb - y else x + wt + z
    if eltwise:
        traffic += z
    dram = memory.spreadsheet_cycles(cfg, traffic * kb, cfg.mem.dram_gbps)
    mac_c = math.ceil(mac - 1e-9)
    return UnitTiming(
        unit="conv", cycles=float(max(dram, mac_c)), compute_cycles=float(mac_c),
        dram_read_bytes=int(round((traffic - z) * kb)), dram_write_bytes=int(round(z * kb)),
        macs=op.macs, notes=("spreadsheet", "MAC" if mac_c >= dram else "DRAM"),
    )
