"""CUDA source of the INT8 integer epilogue, shared by every INT8 convolution kernel.

The reference's epilogue (``backends.reference.int8.epilogue``) rewritten in 32-bit operations
that give the same integers (``int8.device_params`` derives the parameters and documents the
rewrite; ``tests/gpu/test_int8_epilogue_cpu.py`` replays it in numpy): bias with int32 saturation,
residual through the SDP converter, ReLU, per-channel requant with round-half-away and int8
saturation, clip's bound, or the float output ``(float)((double)v * s_acc[k])``. A SiLU or hard-swish
layer (``flags`` EPI_SILU / EPI_HSWISH) takes the non-linear epilogue instead: float64
``f(v * s_acc[k])``, then int8 ``clip(rint(y / s_out))`` or the float32 y (``store_nl4``).

One text for the tensor-core kernel (``int8_src``) and the depthwise kernel (``int8_dw_src``), so
their integers are the same by construction. The inline PTX (``add.sat.s32``, ``shf.r.clamp.b32``,
a sign-extending ``prmt``) and intrinsics have a plain C++ equivalent under ``#ifndef __CUDACC__``:
NVRTC and nvcc compile the PTX; the host compiler of the CPU emulator (``tests/gpu/cuda_emu.py``) the C++, which
lets the depthwise kernel be tested bit for bit without a GPU. Needs ``u32`` (``common``).
"""

EPI8_SRC = r"""
typedef signed char i8;
typedef long long i64;

#define EPI_DECL const int* __restrict__ ep, const i8* __restrict__ res, int ldr,                      \
    const double* __restrict__ sacc, int flags, int clipq, int has_clipf, float clipf, void* __restrict__ y, int ldy, \
    double sout
#define EPI_ARGS ep, res, ldr, sacc, flags, clipq, has_clipf, clipf, y, ldy, sout
#define EPI_RELU 1    // flags: ReLU (or clip(0, x)) before the requant
#define EPI_GEN 2     // flags: the general path: saturating adds (add.sat.s32: some sum may leave
                      // int32) and the 64-bit requant (a shift outside the fast requant's range)
#define EPI_SILU 4    // flags: SiLU epilogue (non-linear: float64 of v * s_acc[k], see store_nl4)
#define EPI_HSWISH 8  // flags: hard-swish epilogue (non-linear)
#define EPI_NL (EPI_SILU | EPI_HSWISH)

// round(x / 2**s) half away from zero (dla_sim.formats.rshift_round); s in 0..63, |x| < 2**62.
__device__ __forceinline__ i64 rshift_round(i64 x, int s) {
  if (s <= 0) return x;
  i64 mag = x < 0 ? -x : x;
  mag = (mag + (1LL << (s - 1))) >> s;
  return x < 0 ? -mag : mag;
}
__device__ __forceinline__ i64 sat8(i64 v) { return v < -128 ? -128 : (v > 127 ? 127 : v); }
__device__ __forceinline__ int add_sat(int a, int b) {
#ifdef __CUDACC__
  int r; asm("add.sat.s32 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b)); return r;
#else  // host C++ (tests/gpu/cuda_emu.py): the same clamp
  const i64 t = (i64)a + b;
  return (int)(t < -2147483648LL ? -2147483648LL : (t > 2147483647LL ? 2147483647LL : t));
#endif
}

// Per-channel epilogue parameters, rows of the int32 array ``ep`` (row stride Kp, int8.device_params):
//   0, 1  bias as two int32 parts of one sign (b1 + b2; saturating adds in turn equal sat32(acc + b))
//   2     T: |v| clamp (u32), the smallest magnitude whose requant saturates (or 2**31)
//   3     requant scale (u32)
//   4, 5  its rounding half 2**(shift-1) as 64-bit words, channel n at u64 index n of the two rows
//         (so the multiply-add reads its addend as an aligned register pair)
//   6, 7  the requant shift split as min(shift, 32) and shift - 32 (funnel shift, then a plain one)
//   8, 9, 10  residual converter: scale, half 2**(shift-1), shift (shift >= 1, a 0 shift doubled)
//   11    the fast requant's multiplier osc * 2**(32 - shift) (< 2**31), where the layer has one
// Padded channels (K..Kp-1) have every parameter 0, which makes their output 0.
#define EP_ROWS 12
struct Epi4 {
  int b1[4], b2[4], rsc[4], rh[4], rsh[4], B[4];
  u32 T[4], osc[4], s1[4], s2[4];
  unsigned long long h[4];
};
__device__ __forceinline__ void load4(int* d, const int* __restrict__ p) {
  const int4 t = *reinterpret_cast<const int4*>(p); d[0] = t.x; d[1] = t.y; d[2] = t.z; d[3] = t.w;
}
__device__ __forceinline__ void load_epi4(Epi4& e, const int* __restrict__ ep, int Kp, int n, bool res) {
  load4(e.b1, ep + n); load4(e.b2, ep + Kp + n);
  load4(reinterpret_cast<int*>(e.T), ep + 2 * Kp + n); load4(reinterpret_cast<int*>(e.osc), ep + 3 * Kp + n);
  const ulonglong2 h01 = *reinterpret_cast<const ulonglong2*>(ep + 4 * Kp + 2 * n);
  const ulonglong2 h23 = *reinterpret_cast<const ulonglong2*>(ep + 4 * Kp + 2 * n + 4);
  e.h[0] = h01.x; e.h[1] = h01.y; e.h[2] = h23.x; e.h[3] = h23.y;
  load4(reinterpret_cast<int*>(e.s1), ep + 6 * Kp + n); load4(reinterpret_cast<int*>(e.s2), ep + 7 * Kp + n);
  load4(e.B, ep + 11 * Kp + n);
  if (res) { load4(e.rsc, ep + 8 * Kp + n); load4(e.rh, ep + 9 * Kp + n); load4(e.rsh, ep + 10 * Kp + n); }
}

// Byte j of w, sign-extended: one prmt whose selector nibbles 1-3 have their sign bit set, which
// replicates byte j's sign there (PTX ISA, prmt). Not __byte_perm: it reads 3 bits of each nibble.
__device__ __forceinline__ int sbyte(u32 w, int j) {
#ifdef __CUDACC__
  int r;
  asm("prmt.b32 %0, %1, 0, %2;" : "=r"(r) : "r"(w), "r"(j | (8 + j) << 4 | (8 + j) << 8 | (8 + j) << 12));
  return r;
#else
  return (int)(signed char)(w >> (8 * j));
#endif
}

// v = acc + bias (+ residual converted to the accumulator's scale), exactly as the reference's
// saturating int64 steps: with SAT (the general path) the adds saturate; without it the host proved
// no sum can leave int32 (128 * sum|w| + |bias| + max|converted residual| < 2**31 on every channel).
template <bool RES, bool SAT>
__device__ __forceinline__ void sum4(int* v, const int* a, const Epi4& e, u32 rv) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    int t = SAT ? add_sat(add_sat(a[j], e.b1[j]), e.b2[j]) : a[j] + e.b1[j];
    if (RES) {
      // the SDP converter, round half away: (p + half - (p < 0)) >> shift equals it for shift >= 1;
      // the scale is >= 0, so p < 0 only where the residual r < 0 (and with a 0 scale, half - 1
      // still shifts to 0)
      const int r = sbyte(rv, j);
      const int c = (r * e.rsc[j] + e.rh[j] + (r >> 31)) >> e.rsh[j];
      t = SAT ? add_sat(t, c) : t + c;
    }
    v[j] = t;
  }
}

// round(mag * osc / 2**osh) for a magnitude already clamped to T: the 64-bit mag * osc + half, then
// its bits osh..osh+31 (a funnel shift by min(osh, 32), then a shift by the rest).
__device__ __forceinline__ u32 requant_mag(u32 mag, const Epi4& e, int j) {
#ifdef __CUDACC__
  // one mad.wide.u32, spelled out (ptxas gives the C++ form below the same instruction count)
  u32 lo, hi, r;
  asm("{\n\t.reg .u64 t;\n\tmad.wide.u32 t, %2, %3, %4;\n\tmov.b64 {%0, %1}, t;\n\t}"
      : "=r"(lo), "=r"(hi) : "r"(mag), "r"(e.osc[j]), "l"(e.h[j]));
  asm("shf.r.clamp.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(lo), "r"(hi), "r"(e.s1[j]));
#else  // host C++: the funnel shift's clamp at 32 (s1 <= 32 by construction)
  const unsigned long long p = (unsigned long long)mag * e.osc[j] + e.h[j];
  const u32 r = (u32)(p >> (e.s1[j] < 32u ? e.s1[j] : 32u));
#endif
  return r >> e.s2[j];
}

// Four int8 results packed into one word (byte j from q[j]'s low byte).
__device__ __forceinline__ u32 pack4(const int* q) {
#ifdef __CUDACC__
  return __byte_perm(__byte_perm((u32)q[0], (u32)q[1], 0x0040), __byte_perm((u32)q[2], (u32)q[3], 0x0040), 0x5410);
#else
  return ((u32)q[0] & 0xffu) | ((u32)q[1] & 0xffu) << 8 | ((u32)q[2] & 0xffu) << 16 | ((u32)q[3] & 0xffu) << 24;
#endif
}

// The fast requant, round(v * osc / 2**osh) half away from zero, as the high word of one signed
// 32 x 32 + 64-bit multiply-add: with B = osc * 2**(32 - osh) < 2**31 (1 <= osh <= 32; the host
// takes this path only where every channel's parameters allow it), v * B + 2**31 is the exact
// quotient's numerator scaled by 2**32, so its high word is floor(v * osc / 2**osh + 1/2), round half
// up; one less in the addend (v < 0) makes it round half down, which is half away from zero there.
// |v| < 2**31 and B < 2**31 keep the product within int64 and the quotient within int32: no clamp.
__device__ __forceinline__ int requant_hi(int v, int B, u32 addend) {
  return (int)(((long long)v * B + (long long)addend) >> 32);
}

// q = min(sat8(round_half_away(v * osc / 2**osh)), clipq) for 4 channels, packed as 4 bytes.
// GEN: |v| clamped to T first (the saturation point), so the rounded quotient fits 32 bits, then
// the 64-bit multiply-add and a split shift (requant_mag), for any shift; otherwise requant_hi.
template <bool RELU, bool GEN>
__device__ __forceinline__ u32 requant4(const int* v, const Epi4& e, int clipq) {
  int q[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    if (!GEN) {
      q[j] = RELU ? min(requant_hi(max(v[j], 0), e.B[j], 0x80000000u), clipq)
                  : min(max(requant_hi(v[j], e.B[j], 0x80000000u + (u32)(v[j] >> 31)), -128), clipq);
    } else if (RELU) {
      q[j] = min((int)requant_mag(min((u32)max(v[j], 0), e.T[j]), e, j), clipq);
    } else {
      const int s = v[j] >> 31;  // 0 or -1: |v| = (v ^ s) - s, then 127 or 128 as the bound
      const u32 r = min(requant_mag(min(((u32)v[j] ^ (u32)s) - (u32)s, e.T[j]), e, j), (u32)(127 - s));
      q[j] = min(((int)r ^ s) - s, clipq);
    }
  }
  return pack4(q);
}

// float64 -> float32, round to nearest, keeping float32 denormals as numpy's cast does. CuPy compiles
// every module with -ftz=true (appended after the caller's options), under which the plain cast
// becomes cvt.rn.ftz.f32.f64 and flushes results below 2**-126 to zero; the PTX here has no .ftz.
__device__ __forceinline__ float d2f_rn(double x) {
#ifdef __CUDACC__
  float r; asm("cvt.rn.f32.f64 %0, %1;" : "=f"(r) : "d"(x)); return r;
#else  // host C++ (tests/gpu/cuda_emu.py) keeps denormals
  return (float)x;
#endif
}

// The float output (a layer without an output scale): (float)((double)v * s_acc[k]), clip's bound.
__device__ __forceinline__ void store_float4(const int* v, int m, int n, int K, const double* __restrict__ sacc,
                                             int relu, int has_clipf, float clipf, float* __restrict__ y, int ldy) {
  float* yf = y + (size_t)m * ldy;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int c = n + j;
    if (c >= ldy) continue;
    float f = 0.f;
    if (c < K) {
      const int t = relu && v[j] < 0 ? 0 : v[j];
      f = d2f_rn((double)t * sacc[c]);
      f = has_clipf && f > clipf ? clipf : f;  // not fminf, whose ftz form would flush a denormal f
    }
    yf[c] = f;
  }
}

// float64 steps each rounded on its own (no fused multiply-add), as numpy's.
#ifdef __CUDACC__
#define DMUL(a, b) __dmul_rn(a, b)
#define DADD(a, b) __dadd_rn(a, b)
#define DDIV(a, b) __ddiv_rn(a, b)
#else
#define DMUL(a, b) ((a) * (b))
#define DADD(a, b) ((a) + (b))
#define DDIV(a, b) ((a) / (b))
#endif

// engine.ir.int8_rules.activation_value: SiLU x / (1 + exp(-x)), hard-swish
// x * clip(x + 3, 0, 6) / 6. Hard-swish is IEEE operations only, the same bits as numpy's; SiLU's
// exp may differ from numpy's in the last bit, which moves a result only for a quotient within an
// ulp of a rounding tie (or a float32 rounding midpoint).
__device__ __forceinline__ double nl_value(double x, bool hswish) {
  if (hswish) return DDIV(DMUL(x, fmin(fmax(DADD(x, 3.0), 0.0), 6.0)), 6.0);
  return DDIV(x, DADD(1.0, exp(-x)));
}

// The float64 definition, out of line (as is ``nl_float``): only the lanes the fast path below
// cannot decide call it, and one copy of exp and the divisions keeps the unrolled callers small.
// Inlined, every call site carried its own: a depthwise thread's 32 outputs made that kernel's SiLU
// instance 270 KB of code (the integer one 104 KB; 160 KB out of line, nvcc 13, sm_90).
__device__ __noinline__ int nl_q8_exact(int v, double sacc, bool hswish, double sout) {
  return (int)fmin(fmax(rint(DDIV(nl_value(DMUL((double)v, sacc), hswish), sout)), -128.0), 127.0);
}
__device__ __noinline__ float nl_float(int v, double sacc, bool hswish) {
  return d2f_rn(nl_value(DMUL((double)v, sacc), hswish));
}

// The fast path's exp and division: the intrinsics, whose worst errors the tie test below allows
// for (CUDA C++ Programming Guide, intrinsic functions: __expf 2 + floor(|1.173 x|) ulp, __fdividef
// 2 ulp for a divisor in [2**-126, 2**126]; here it is 1 + exp(-x) <= 1 + e**80). The host C++ of
// the emulator (tests/gpu/cuda_emu.py) takes the correctly rounded value and moves it by that worst
// error, up or down by a bit of the argument, so the emulated tests exercise the bound.
#ifdef __CUDACC__
__device__ __forceinline__ float nl_exp(float x) { return __expf(x); }
__device__ __forceinline__ float nl_div(float a, float b) { return __fdividef(a, b); }
#else
__device__ __forceinline__ float nl_worst(float r, int ulps, unsigned bits) {
  for (int i = 0; i < ulps; ++i) r = nextafterf(r, (bits & 1u) ? INFINITY : -INFINITY);
  return r;
}
__device__ __forceinline__ float nl_exp(float x) {
  unsigned b; memcpy(&b, &x, 4);
  return nl_worst(expf(x), 2 + (int)floorf(fabsf(1.173f * x)), b >> 3);
}
__device__ __forceinline__ float nl_div(float a, float d) {
  unsigned b; memcpy(&b, &a, 4);
  return nl_worst(a / d, 2, b >> 5);
}
#endif

// The int8 result clip(rint(f(x) / s_out)) of the float64 definition above, taken from a float32
// evaluation wherever that cannot round differently. The fast path has no float64 operation: x is
// (float)v * (float)s_acc, three roundings, at most 3u |x| from the exact product (u = 2**-24; a
// flushed denormal: 2**-126), which moves f by at most 4.5u |x| (|f'| <= 1.5 for both functions).
// The float32 t = f(x) * (1 / s_out) is then within err of the float64 quotient T: SiLU's exp
// (2 + 1.173 |x| ulp, an ulp at most 2u relative), 1 + e, the division (2 ulp), 1 / s_out and the
// product move t by at most (11 + 2.35 |x|) u |t| (hard-swish's IEEE steps by 5u |t|); all doubled
// for margin. rint(t) is rint(T) when t is farther than err from the tie between two integers, and
// the clipped result is when T lies past 126.5 or -127.5 even at a tie (a saturating layer's sums);
// otherwise, where t is not finite and where s_acc is not a normal float32 (``Nl4`` makes it NaN),
// the float64 path decides. Outside the int8 range the clamp hides any error.
// |x| >= 80 (the float64 x is then beyond 79.99) needs no exp: there 1 + exp(-x) rounds to 1 in
// float64, so SiLU's y is x itself and hard-swish's is x within two roundings, and for x <= -80 both
// are below 1.5e-33 in magnitude, so the quotient rounds to 0 while 1 / s_out < 1e30. A positive
// t = x * (1 / s_out) (a normal float32) is within 5u t of T; the test allows 1e-6 (t + 1). Such
// sums are where random or badly calibrated data saturates a layer.
__device__ __forceinline__ int nl_q8(int v, double sacc, float sacc_f, bool hswish, double sout, float inv_out) {
  const float x = (float)v * sacc_f, ax = fabsf(x);
  if (ax < 80.f) {  // false for a NaN x
    const float y = hswish ? x * fminf(fmaxf(x + 3.f, 0.f), 6.f) / 6.f : nl_div(x, 1.f + nl_exp(-x));
    const float t = y * inv_out, r = rintf(t);
    const float err = ((24.f + 5.f * ax) * fabsf(t) + 10.f * ax * inv_out) * 5.9604645e-8f
                      + 1.1754944e-38f * 4.f * inv_out;
    if (0.5f - fabsf(t - r) > err || t - err > 126.5f || t + err < -127.5f)  // false for a NaN t
      return (int)fminf(fmaxf(r, -128.f), 127.f);
  } else if (x < 0.f) {
    if (inv_out < 1e30f) return 0;
  } else if (ax <= 3.0e38f && inv_out >= 1.1754944e-38f) {  // false for a NaN or infinite x
    const float t = x * inv_out, r = rintf(t);
    if (t >= 128.f) return 127;  // past 127.5 however t rounded
    if (0.5f - fabsf(t - r) > 1e-6f * (t + 1.f)) return (int)fminf(r, 127.f);
  }
  return nl_q8_exact(v, sacc, hswish, sout);
}

// A thread's constants of the non-linear epilogue for channels n..n+3, loaded once rather than per
// row: their accumulator scales (0 past K) in float64 and float32 (NaN where the scale is not a
// normal float32 below 2**100, which keeps those channels on the float64 path) and the float32
// 1 / s_out (a float64 division).
struct Nl4 {
  double sacc[4];
  float sacc_f[4];
  float inv_out;
};
__device__ __forceinline__ void load_nl4(Nl4& p, const double* __restrict__ sacc, int n, int K, double sout) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    p.sacc[j] = n + j < K ? sacc[n + j] : 0.0;
    const float f = d2f_rn(p.sacc[j]);
    p.sacc_f[j] = f >= 1.1754944e-38f && f <= 1.2676506e30f ? f : nanf("");
  }
  p.inv_out = sout > 0.0 ? d2f_rn(DDIV(1.0, sout)) : 0.f;
}

// A non-linear epilogue (int8_rules.quantize_nonlinear) on 4 channels of row m: y = f((double)v *
// s_acc[k]), then int8 clip(rint(y / s_out), -128, 127) (rint: round half even, as numpy's) when
// sout > 0, else the float32 y. Channels K.. (padding) are 0; channels ldy.. are not written.
__device__ __forceinline__ void store_nl4(const int* v, int m, int n, int K, const Nl4& p, int flags,
                                          double sout, void* __restrict__ y, int ldy) {
  const bool hs = flags & EPI_HSWISH;
  if (sout > 0.0) {
    u32 out = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (n + j >= K) continue;
      out |= ((u32)nl_q8(v[j], p.sacc[j], p.sacc_f[j], hs, sout, p.inv_out) & 0xffu) << (8 * j);
    }
    *reinterpret_cast<u32*>(reinterpret_cast<i8*>(y) + (size_t)m * ldy + n) = out;
    return;
  }
  float* yf = reinterpret_cast<float*>(y) + (size_t)m * ldy;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int c = n + j;
    if (c >= ldy) continue;
    yf[c] = c < K ? nl_float(v[j], p.sacc[j], hs) : 0.f;
  }
}

// The float or non-linear store of one 4-channel group's sums a (row m, channels n..n+3): bias and,
// where res4 points at the residual's 4 int8, the residual, with saturating adds; then store_nl4 or
// store_float4. Only a last FC or a SiLU / hard-swish layer takes this path, so it is not specialised.
__device__ __forceinline__ void store_fnl4(const int* a, const Epi4& e, const u32* res4, int m, int n, int K,
                                           const Nl4& nl, const double* __restrict__ sacc, int flags,
                                           int has_clipf, float clipf, void* __restrict__ y, int ldy, double sout) {
  int v[4];
  if (res4 != nullptr) sum4<true, true>(v, a, e, *res4);
  else sum4<false, true>(v, a, e, 0u);
  if (flags & EPI_NL) store_nl4(v, m, n, K, nl, flags, sout, y, ldy);
  else store_float4(v, m, n, K, sacc, flags & EPI_RELU, has_clipf, clipf, reinterpret_cast<float*>(y), ldy);
}

// CASE(R, S, T) with the flags as compile-time arguments (R ReLU, S residual, T saturating adds):
// each combination's loop is compiled on its own and the flags are tested once per thread.
#define EPI_DISPATCH(CASE, relu, has_res, sat)                                          \
  do {                                                                                  \
    if (has_res) {                                                                      \
      if (relu) { if (sat) CASE(true, true, true); else CASE(true, true, false); }      \
      else { if (sat) CASE(false, true, true); else CASE(false, true, false); }         \
    } else {                                                                            \
      if (relu) { if (sat) CASE(true, false, true); else CASE(true, false, false); }    \
      else { if (sat) CASE(false, false, true); else CASE(false, false, false); }       \
    }                                                                                   \
  } while (0)

"""

# __byte_perm and signed __dp4a for the CUDA-core INT8 kernels (depthwise, pointwise), with the C++
# equivalents the emulator's host compiler takes.
DP4_SRC = r"""
// __byte_perm and __dp4a (signed), with their C++ equivalents for the host compiler of the emulator.
__device__ __forceinline__ u32 bperm(u32 a, u32 b, u32 sel) {
#ifdef __CUDACC__
  return __byte_perm(a, b, sel);
#else
  const unsigned long long v = ((unsigned long long)b << 32) | a;
  u32 r = 0;
  for (int i = 0; i < 4; ++i) r |= (u32)((v >> (8 * ((sel >> (4 * i)) & 7))) & 0xffu) << (8 * i);
  return r;
#endif
}
__device__ __forceinline__ int dp4(u32 a, u32 b, int c) {
#ifdef __CUDACC__
  return __dp4a((int)a, (int)b, c);
#else
  for (int i = 0; i < 4; ++i) c += (int)(signed char)(a >> (8 * i)) * (int)(signed char)(b >> (8 * i));
  return c;
#endif
}
"""
