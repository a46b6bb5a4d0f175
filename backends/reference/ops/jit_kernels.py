"""numba-compiled float32 kernels of the reference backend (imported only through ``compiled``).

One thread, no fastmath, numpy's error model: every operation is the IEEE float32 operation it
reads as (a division by zero gives inf or NaN, products and sums are rounded separately), so
results differ from the numpy path only by the order of the additions. The innermost loops run
over the contiguous channel axis with no cross-iteration dependency, so LLVM vectorises them;
arrays are indexed directly, never sliced per pixel (each view costs reference counting).

``exp`` is written out (``_exp32``): numba's ``np.exp`` calls the scalar libm function, which
LLVM cannot vectorise and which costs ~4 ns per value, eight times numpy's SIMD exp2. The
polynomial below is the classic Cephes single-precision one (range reduction by ln 2 in two
parts, a degree-6 polynomial, the power of two assembled from its exponent bits), evaluated with
explicit fused multiply-adds (IEEE operations, one rounding each): within 2 ulp of the exact
value where the result is a normal float.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

# Activation codes (``compiled._ACT_CODES`` maps ActivationType onto the same numbers).
IDENTITY, RELU, CLIP, SIGMOID, SILU = 0, 1, 2, 3, 4


def _jit(fn):
    """``fn`` compiled lazily, cached on disk when a cache directory is writable (numba raises at
    decoration time when none is: then the compiled code lives for the process only)."""
    try:
        return njit(cache=True, fastmath=False, nogil=True, error_model="numpy")(fn)
    except RuntimeError:
        return njit(cache=False, fastmath=False, nogil=True, error_model="numpy")(fn)


@intrinsic
def _pow2(typingctx, n):
    """2**n for a float32 ``n`` holding an integer in [-126, 127], assembled from exponent bits
    in 32-bit integer arithmetic (numba's own integer typing would widen it to 64 bits, halving
    the SIMD width)."""
    if n != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        k = builder.fptosi(args[0], i32)
        bits = builder.shl(builder.add(k, ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.float32), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once (IEEE fusedMultiplyAdd; the CPU's FMA instruction when vectorised)."""
    if not (a == b == c == types.float32):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return types.float32(types.float32, types.float32, types.float32), codegen


_LOG2E = np.float32(1.44269504088896341)
_NEG_LN2_HI = np.float32(-0.693359375)
_NEG_LN2_LO = np.float32(2.12194440e-4)
_EXP_HI = np.float32(88.3762626647949)
_EXP_LO = np.float32(-87.3365447504)
_P0, _P1, _P2 = np.float32(1.9875691500e-4), np.float32(1.3981999507e-3), np.float32(8.3334519073e-3)
_P3, _P4, _P5 = np.float32(4.1665795894e-2), np.float32(1.6666665459e-1), np.float32(5.0000001201e-1)
_HALF, _ONE, _ZERO = np.float32(0.5), np.float32(1.0), np.float32(0.0)


@_jit
def _exp32(x):
    """exp(x) in float32, vectorisable; NaN stays NaN, arguments are clamped to where exp(x) is a
    normal float (so exp(-inf) is 1.2e-38 rather than 0: immaterial in 1 + exp(-x))."""
    t = x
    t = _EXP_LO if t < _EXP_LO else t  # NaN compares false: it stays NaN, and so does the result
    t = _EXP_HI if t > _EXP_HI else t
    n = np.floor(_fma(t, _LOG2E, _HALF))
    r = _fma(n, _NEG_LN2_LO, _fma(n, _NEG_LN2_HI, t))
    p = _fma(_fma(_fma(_fma(_fma(_P0, r, _P1), r, _P2), r, _P3), r, _P4), r, _P5)
    p = _fma(p, r * r, r) + _ONE
    return p * _pow2(n if n == n else _ZERO)


@_jit
def activate(v, kind, lo, hi):
    """Activation ``kind`` applied in place to the contiguous float32 vector ``v``; every branch
    is a separate loop so that each vectorises."""
    if kind == RELU:
        for i in range(v.size):
            a = v[i]
            v[i] = _ZERO if a < _ZERO else a
    elif kind == CLIP:
        for i in range(v.size):
            a = v[i]
            a = lo if a < lo else a
            v[i] = hi if a > hi else a
    elif kind == SIGMOID:
        for i in range(v.size):
            v[i] = _ONE / (_ONE + _exp32(-v[i]))
    elif kind == SILU:
        for i in range(v.size):
            a = v[i]
            v[i] = a / (_ONE + _exp32(-a))


@_jit
def bias_activate(rows, flat, bias, kind, lo, hi):
    """rows[p, :] = act(rows[p, :] + bias) for a C-contiguous (pixels, channels) float32 array
    (``flat``: the same memory as a vector), a block of pixels at a time while it is in cache."""
    npix, c = rows.shape
    block = max(1, 4096 // max(c, 1))
    for p0 in range(0, npix, block):
        p1 = min(npix, p0 + block)
        for p in range(p0, p1):
            for k in range(c):
                rows[p, k] += bias[k]
        if kind != IDENTITY:
            activate(flat[p0 * c:p1 * c], kind, lo, hi)


@_jit
def depthwise(x, r0, h, w, bias, stride_h, stride_w, pad_t, pad_l, out, kind, lo, hi):
    """out[b, oy, ox, c] = act(bias[c] + sum_ij x[b, r0 + iy, ix, c] * w[i, j, c]) with
    iy = oy*stride_h - pad_t + i, ix = ox*stride_w - pad_l + j, taps outside the (h, W) image
    skipped (zero padding by bounds). ``x`` is a C-contiguous (N, rows, W, C) buffer whose image
    occupies rows r0 .. r0 + h - 1; ``out`` (N, Ho, Wo, C) and ``w`` (kh, kw, C) are C-contiguous.

    Arrays are indexed directly (no per-pixel views: each would cost reference counting), and a
    full 3x3 window is summed in one expression per channel, its partial sum kept in a register;
    the products are added in tap order in every case."""
    n, ho, wo, c = out.shape
    kh, kw = w.shape[0], w.shape[1]
    width = x.shape[2]
    for b in range(n):
        for oy in range(ho):
            top = oy * stride_h - pad_t
            i0, i1 = max(0, -top), min(kh, h - top)
            ra = r0 + top
            for ox in range(wo):
                left = ox * stride_w - pad_l
                j0, j1 = max(0, -left), min(kw, width - left)
                if kh == 3 and kw == 3 and i0 == 0 and i1 == 3 and j0 == 0 and j1 == 3:
                    l1, l2, rb, rc = left + 1, left + 2, ra + 1, ra + 2
                    for k in range(c):
                        out[b, oy, ox, k] = (
                            bias[k] + x[b, ra, left, k] * w[0, 0, k] + x[b, ra, l1, k] * w[0, 1, k]
                            + x[b, ra, l2, k] * w[0, 2, k] + x[b, rb, left, k] * w[1, 0, k]
                            + x[b, rb, l1, k] * w[1, 1, k] + x[b, rb, l2, k] * w[1, 2, k]
                            + x[b, rc, left, k] * w[2, 0, k] + x[b, rc, l1, k] * w[2, 1, k]
                            + x[b, rc, l2, k] * w[2, 2, k])
                    continue
                if kh == 5 and kw == 5 and i0 == 0 and i1 == 5 and j0 == 0 and j1 == 5:
                    l0, l1, l2, l3, l4 = left, left + 1, left + 2, left + 3, left + 4
                    r1, r2, r3, r4 = ra + 1, ra + 2, ra + 3, ra + 4
                    for k in range(c):
                        out[b, oy, ox, k] = (
                            bias[k] + x[b, ra, l0, k] * w[0, 0, k] + x[b, ra, l1, k] * w[0, 1, k]
                            + x[b, ra, l2, k] * w[0, 2, k] + x[b, ra, l3, k] * w[0, 3, k] + x[b, ra, l4, k] * w[0, 4, k]
                            + x[b, r1, l0, k] * w[1, 0, k] + x[b, r1, l1, k] * w[1, 1, k] + x[b, r1, l2, k] * w[1, 2, k]
                            + x[b, r1, l3, k] * w[1, 3, k] + x[b, r1, l4, k] * w[1, 4, k]
                            + x[b, r2, l0, k] * w[2, 0, k] + x[b, r2, l1, k] * w[2, 1, k] + x[b, r2, l2, k] * w[2, 2, k]
                            + x[b, r2, l3, k] * w[2, 3, k] + x[b, r2, l4, k] * w[2, 4, k]
                            + x[b, r3, l0, k] * w[3, 0, k] + x[b, r3, l1, k] * w[3, 1, k] + x[b, r3, l2, k] * w[3, 2, k]
                            + x[b, r3, l3, k] * w[3, 3, k] + x[b, r3, l4, k] * w[3, 4, k]
                            + x[b, r4, l0, k] * w[4, 0, k] + x[b, r4, l1, k] * w[4, 1, k] + x[b, r4, l2, k] * w[4, 2, k]
                            + x[b, r4, l3, k] * w[4, 3, k] + x[b, r4, l4, k] * w[4, 4, k])
                    continue
                for k in range(c):
                    out[b, oy, ox, k] = bias[k]
                for i in range(i0, i1):
                    r = ra + i
                    if kw == 5 and j0 == 0 and j1 == 5:
                        l1, l2, l3, l4 = left + 1, left + 2, left + 3, left + 4
                        for k in range(c):
                            out[b, oy, ox, k] = (
                                out[b, oy, ox, k] + x[b, r, left, k] * w[i, 0, k] + x[b, r, l1, k] * w[i, 1, k]
                                + x[b, r, l2, k] * w[i, 2, k] + x[b, r, l3, k] * w[i, 3, k]
                                + x[b, r, l4, k] * w[i, 4, k])
                        continue
                    for j in range(j0, j1):
                        col = left + j
                        for k in range(c):
                            out[b, oy, ox, k] += x[b, r, col, k] * w[i, j, k]
            if kind != IDENTITY:
                activate(out[b, oy].reshape(wo * c), kind, lo, hi)
