"""CUDA source of the INT8 kernels: implicit-GEMM convolution on integer tensor cores and pooling.

The arithmetic is the reference's (``backends.reference.int8``) bit for bit: int8 x int8 products
summed exactly in int32 by ``mma.sync.m16n8k32.s32.s8.s8.s32``, then an integer epilogue that mirrors
the reference's numpy steps one by one (bias add with int32 saturation, residual through the SDP
converter, ReLU, per-channel requant with round-half-away shifts and int8 saturation, clip's
upper bound on the int8 result), each step in the narrowest width that is provably exact
(``epi4``). Only a float output (an INT8 layer without an output scale) leaves the integers:
``(float)((double)v * s_acc[k])``, the same IEEE operations as numpy's float64 multiply and cast.

Why the mainloop is the fp16 kernel's: an m16n8k32 int8 fragment holds the same bytes of the same
rows as an m16n8k16 fp16 fragment, so a 64-byte smem row (64 int8 channels, BK = 64) is read by the
same swizzle and the same ``ldmatrix`` addresses as the fp16 kernel's 32-half rows.

Exactness bound: the int32 accumulator wraps instead of saturating, so the kernel equals the
reference while every exact sum fits int32, guaranteed when R*S*Cp*128*128 < 2**31
(``int8.MAX_KTOT``); the lowering sends larger reductions to the reference backend.

Layouts (Cp = C rounded up to 16, Kp = K rounded up to 16):
  x    NHWC int8, channel stride Cp, padded channels zero
  w    K x R x S x Cp int8 ("KRSC"), padded channels zero
  res  NHWC int8 with channel stride ldr (or null)
  y    int8 NHWC with channel stride ldy = Kp (channels K..Kp-1 written as zeros), or float32 with
       any channel stride ldy >= K when ``osc`` is null (the float output)
Per-channel epilogue arrays have K entries: bias (int64: int16 operand << bias_shift, clamped to
+-2**33, which leaves the saturated sum unchanged), rcv (residual converter) and ocv (output
requant), each ``scale | shift << 16`` (scale in 1..32767, shift in 0..63), sacc (float64
accumulator scale, float output only). The conv kernel stages its BN channels' parameters in
shared memory once, after the mainloop.
"""

from backends.gpu.kernels.common import COMMON_SRC

INT8_SRC = COMMON_SRC + r"""
typedef signed char i8;
typedef long long i64;

#define EPI_DECL const i64* __restrict__ bias, const i8* __restrict__ res, int ldr,                     \
    const int* __restrict__ rcv, const int* __restrict__ ocv, const double* __restrict__ sacc, int relu,  \
    int clipq, int has_clipf, float clipf, void* __restrict__ y, int ldy
#define EPI_ARGS bias, res, ldr, rcv, ocv, sacc, relu, clipq, has_clipf, clipf, y, ldy

__device__ __forceinline__ void mma_s8_16832(int* c, const u32* a, const u32* b) {
  asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// round(x / 2**s) half away from zero (dla_sim.formats.rshift_round); s in 0..63, |x| < 2**62.
__device__ __forceinline__ i64 rshift_round(i64 x, int s) {
  if (s <= 0) return x;
  i64 mag = x < 0 ? -x : x;
  mag = (mag + (1LL << (s - 1))) >> s;
  return x < 0 ? -mag : mag;
}
__device__ __forceinline__ int sat32(i64 v) {
  return v < -2147483648LL ? (int)0x80000000 : (v > 2147483647LL ? 2147483647 : (int)v);
}
__device__ __forceinline__ i64 sat8(i64 v) { return v < -128 ? -128 : (v > 127 ? 127 : v); }

// The residual converter in 32 bits, exactly: |e * scale| <= 128 * 32767 < 2**22, so the rounded
// shift fits an int, and a shift >= 24 rounds every such product to 0.
__device__ __forceinline__ int res_convert(int e, int cv) {
  const int sc = cv & 0xffff, sh = cv >> 16;
  const int p = e * sc;
  if (sh == 0) return p;
  if (sh >= 24) return 0;
  const int mag = ((p < 0 ? -p : p) + (1 << (sh - 1))) >> sh;
  return p < 0 ? -mag : mag;
}

// The reference's integer epilogue (backends.reference.int8.epilogue) for 4 consecutive channels
// n..n+3 of output row m (n a multiple of 4). Per-channel parameters: pb (bias as int64, null:
// none), pr (residual converter, scale | shift << 16), po (output requant, same packing); each
// indexed 0..3 for channels n..n+3. The steps, each exact in the width used:
//   v = sat32(acc + bias)           int64 add (|bias| <= 2**33), one clamp
//   v = sat32(v + convert(res))     the converter in int32 (res_convert), int64 add, clamp
//   relu; q = sat8(round(v * osc >> osh))   one 32x32 -> 64-bit multiply, one 64-bit rounded shift
__device__ __forceinline__ void epi4(const int* a, int m, int n, int K, const i64* pb, const int* pr,
                                     const int* po, const i8* __restrict__ res, int ldr,
                                     const double* __restrict__ sacc, int relu, int clipq, int has_clipf,
                                     float clipf, void* __restrict__ y, int ldy) {
  int rq[4] = {0, 0, 0, 0};
  if (res != nullptr) {
    const u32 rv = *reinterpret_cast<const u32*>(res + (size_t)m * ldr + n);
#pragma unroll
    for (int j = 0; j < 4; ++j) rq[j] = (int)(signed char)(rv >> (8 * j));
  }
  int v[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    int t = pb != nullptr ? sat32((i64)a[j] + pb[j]) : a[j];
    if (res != nullptr) t = sat32((i64)t + res_convert(rq[j], pr[j]));
    v[j] = relu && t < 0 ? 0 : t;
  }
  if (sacc == nullptr) {
    u32 ov = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int cv = po[j];
      i64 q = sat8(rshift_round((i64)v[j] * (i64)(cv & 0xffff), cv >> 16));
      q = q < clipq ? q : clipq;
      if (n + j < K) ov |= ((u32)q & 0xffu) << (8 * j);
    }
    *reinterpret_cast<u32*>(reinterpret_cast<i8*>(y) + (size_t)m * ldy + n) = ov;
  } else {
    float* yf = reinterpret_cast<float*>(y) + (size_t)m * ldy;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int c = n + j;
      if (c >= ldy) continue;
      float f = 0.f;
      if (c < K) {
        f = __double2float_rn((double)v[j] * sacc[c]);
        f = has_clipf ? fminf(f, clipf) : f;
      }
      yf[c] = f;
    }
  }
}

#define BKB 64  // k-tile: 64 int8 channels = one 64-byte smem row of 4 16-byte chunks
__device__ __forceinline__ int swzb(int row, int chunk) { return row * BKB + ((chunk ^ ((row >> 1) & 3)) << 4); }

template <int BM, int BN, int WM, int WN, int STAGES>
__global__ void __launch_bounds__(WM * WN * 32)
conv_igemm_s8(const i8* __restrict__ x, const i8* __restrict__ w, int* __restrict__ ws,
              int N, int H, int W, int C, int K, int P, int Q, int R, int S,
              int sh, int sw, int ph, int pw, int dh, int dw, int kps, EPI_DECL)
{
  constexpr int THREADS = WM * WN * 32;
  constexpr int WTM = BM / WM, WTN = BN / WN;
  constexpr int MI = WTM / 16, NI = WTN / 8;
  static_assert(WTM % 16 == 0 && WTN % 16 == 0, "warp tile must be a multiple of 16x16");
  constexpr int A_CH = BM * 4, B_CH = BN * 4;
  constexpr int A_IT = (A_CH + THREADS - 1) / THREADS, B_IT = (B_CH + THREADS - 1) / THREADS;
  extern __shared__ __align__(16) unsigned char smem8[];
  i8* As = reinterpret_cast<i8*>(smem8);
  i8* Bs = As + STAGES * BM * BKB;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / WN, wn = warp % WN;
  const int PQ = P * Q, M = N * PQ, Kp = (K + 15) & ~15;
  const int Ktot = R * S * C, KT = (Ktot + BKB - 1) / BKB;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
  const int kt0 = blockIdx.z * kps;
  const int nkt = max(min(KT, kt0 + kps) - kt0, 0);
  const int kc = tid & 3;

  int a_off[A_IT], a_ih[A_IT], a_iw[A_IT];
#pragma unroll
  for (int i = 0; i < A_IT; ++i) {
    int id = tid + i * THREADS, m = m0 + (id >> 2);
    bool ok = id < A_CH && m < M;
    int mm = ok ? m : 0;
    int n = mm / PQ, rem = mm - n * PQ, p = rem / Q, q = rem - p * Q;
    a_ih[i] = ok ? p * sh - ph : -(1 << 24);
    a_iw[i] = q * sw - pw;
    a_off[i] = ((n * H + a_ih[i]) * W + a_iw[i]) * C;
  }
  int b_off[B_IT];
  bool b_ok[B_IT];
#pragma unroll
  for (int i = 0; i < B_IT; ++i) {
    int id = tid + i * THREADS, n = n0 + (id >> 2);
    b_ok[i] = id < B_CH && n < K;
    b_off[i] = b_ok[i] ? n * Ktot : 0;
  }
  int ld_k = kt0 * BKB + kc * 16, ld_r, ld_s, ld_c;
  { int rs = ld_k / C; ld_c = ld_k - rs * C; ld_r = rs / S; ld_s = rs - ld_r * S; }

  auto load_tile = [&](int stage) {
    const bool kok = ld_k < Ktot;
    const int dr = ld_r * dh, ds = ld_s * dw, koff = (dr * W + ds) * C + ld_c;
    i8* as = As + stage * BM * BKB;
    i8* bs = Bs + stage * BN * BKB;
#pragma unroll
    for (int i = 0; i < A_IT; ++i) {
      int id = tid + i * THREADS;
      if (A_CH % THREADS == 0 || id < A_CH) {
        int ih = a_ih[i] + dr, iw = a_iw[i] + ds;
        bool v = kok && (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W;
        cp_async16(smem_addr(as + swzb(id >> 2, kc)), x + (v ? a_off[i] + koff : 0), v ? 16 : 0);
      }
    }
#pragma unroll
    for (int i = 0; i < B_IT; ++i) {
      int id = tid + i * THREADS;
      if (B_CH % THREADS == 0 || id < B_CH) {
        bool v = b_ok[i] && kok;
        cp_async16(smem_addr(bs + swzb(id >> 2, kc)), w + (v ? b_off[i] + ld_k : 0), v ? 16 : 0);
      }
    }
    ld_k += BKB;
    ld_c += BKB;
    while (ld_c >= C) { ld_c -= C; if (++ld_s == S) { ld_s = 0; ++ld_r; } }
  };

  int acc[MI][NI][4];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0;

#pragma unroll
  for (int st = 0; st < STAGES - 1; ++st) {
    if (st < nkt) load_tile(st);
    cp_async_commit();
  }

  for (int it = 0; it < nkt; ++it) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    int nxt = it + STAGES - 1;
    if (nxt < nkt) load_tile(nxt % STAGES);
    cp_async_commit();
    const i8* as = As + (it % STAGES) * BM * BKB;
    const i8* bs = Bs + (it % STAGES) * BN * BKB;
#pragma unroll
    for (int kk = 0; kk < 2; ++kk) {
      u32 af[MI][4], bf[NI][2];
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) {
        int row = wm * WTM + mi * 16 + (lane & 15);
        ldmatrix_x4(af[mi], smem_addr(as + swzb(row, kk * 2 + (lane >> 4))));
      }
#pragma unroll
      for (int nj = 0; nj < NI / 2; ++nj) {
        int row = wn * WTN + nj * 16 + (lane & 7) + ((lane >> 4) << 3);
        u32 t[4];
        ldmatrix_x4(t, smem_addr(bs + swzb(row, kk * 2 + ((lane >> 3) & 1))));
        bf[2 * nj][0] = t[0]; bf[2 * nj][1] = t[1]; bf[2 * nj + 1][0] = t[2]; bf[2 * nj + 1][1] = t[3];
      }
#pragma unroll
      for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) mma_s8_16832(acc[mi][ni], af[mi], bf[ni]);
    }
  }
  cp_async_wait<0>();
  __syncthreads();

  if (ws != nullptr) {  // split-K: int32 partials (exact; summed in splitk_epilogue_s8)
    int* wz = ws + (size_t)blockIdx.z * M * Kp;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < NI; ++ni)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          int m = m0 + wm * WTM + mi * 16 + (lane >> 2) + h * 8;
          int n = n0 + wn * WTN + ni * 8 + (lane & 3) * 2;
          if (m < M && n < Kp)
            *reinterpret_cast<int2*>(wz + (size_t)m * Kp + n) = make_int2(acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1]);
        }
    return;
  }

  // Epilogue: int32 tile in smem (and this CTA's per-channel parameters, staged once), then one
  // thread per 4 channels of a row: conflict-free 16-byte smem reads, coalesced 4-byte residual
  // reads and int8 stores.
  constexpr int CS = BN + 4;  // padded smem row (int32)
  int* cs = reinterpret_cast<int*>(smem8);
  i64* sb = reinterpret_cast<i64*>(smem8 + BM * CS * 4);
  int* srv = reinterpret_cast<int*>(sb + BN);
  int* sov = srv + BN;
  for (int i = tid; i < BN; i += THREADS) {
    const int c = n0 + i;
    const bool in = c < K;
    sb[i] = in && bias != nullptr ? bias[c] : 0;
    srv[i] = in && rcv != nullptr ? rcv[c] : 0;
    sov[i] = in && ocv != nullptr ? ocv[c] : 0;
  }
#pragma unroll
  for (int ni = 0; ni < NI; ++ni) {
    int nl = wn * WTN + ni * 8 + (lane & 3) * 2;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        int ml = wm * WTM + mi * 16 + (lane >> 2) + h * 8;
        *reinterpret_cast<int2*>(cs + ml * CS + nl) = make_int2(acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1]);
      }
  }
  __syncthreads();
  constexpr int RCH = BN / 4;
  for (int id = tid; id < BM * RCH; id += THREADS) {
    int ml = id / RCH, nl = (id - ml * RCH) * 4;
    int m = m0 + ml, n = n0 + nl;
    if (m >= M || n >= ldy) continue;
    const int4 t = *reinterpret_cast<const int4*>(cs + ml * CS + nl);
    const int a[4] = {t.x, t.y, t.z, t.w};
    epi4(a, m, n, K, sb + nl, srv + nl, sov + nl, res, ldr, sacc, relu, clipq, has_clipf, clipf, y, ldy);
  }
}

// Sums the split-K partials (int32, exact) and applies the same epilogue; one thread per 4 channels.
extern "C" __global__ void splitk_epilogue_s8(const int* __restrict__ wsp, int splits, int M, int K, EPI_DECL)
{
  const int Kp = (K + 15) & ~15, KC = (ldy + 3) / 4;
  int id = blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= M * KC) return;
  int m = id / KC, n = (id - m * KC) * 4;
  int a[4] = {0, 0, 0, 0};
  for (int z = 0; z < splits; ++z) {
    const int4 t = *reinterpret_cast<const int4*>(wsp + ((size_t)z * M + m) * Kp + n);
    a[0] += t.x; a[1] += t.y; a[2] += t.z; a[3] += t.w;
  }
  i64 b[4] = {0, 0, 0, 0};
  int r[4] = {0, 0, 0, 0}, o[4] = {0, 0, 0, 0};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    if (n + j >= K) continue;
    if (bias != nullptr) b[j] = bias[n + j];
    if (rcv != nullptr) r[j] = rcv[n + j];
    if (ocv != nullptr) o[j] = ocv[n + j];
  }
  epi4(a, m, n, K, b, r, o, res, ldr, sacc, relu, clipq, has_clipf, clipf, y, ldy);
}

// INT8 max (mode 0) or average (mode 1) pooling, NHWC int8 with channel stride Cp (a multiple of
// 16); one thread per 16 channels of an output pixel. Average: the PDP's sum over the full window
// (padding counts as zeros) and two reciprocal multiplies, RECIP_W first (reference.int8.pooling).
extern "C" __global__ void pool2d_s8(const i8* __restrict__ x, i8* __restrict__ y,
    int N, int H, int W, int Cp, int P, int Q, int R, int S, int sh, int sw, int ph, int pw,
    int mode, int recip_w, int recip_h)
{
  const int CC = Cp / 16;
  int id = blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= N * P * Q * CC) return;
  int c16 = id % CC, pix = id / CC;
  int q = pix % Q, t = pix / Q, p = t % P, n = t / P;
  int c0 = c16 * 16;
  int acc[16];
#pragma unroll
  for (int j = 0; j < 16; ++j) acc[j] = mode == 0 ? -128 : 0;
  int inside = 0;
  for (int r = 0; r < R; ++r) {
    int ih = p * sh - ph + r;
    if ((unsigned)ih >= (unsigned)H) continue;
    for (int s = 0; s < S; ++s) {
      int iw = q * sw - pw + s;
      if ((unsigned)iw >= (unsigned)W) continue;
      ++inside;
      uint4 v = *reinterpret_cast<const uint4*>(x + ((size_t)(n * H + ih) * W + iw) * Cp + c0);
      const i8* xv = reinterpret_cast<const i8*>(&v);
#pragma unroll
      for (int j = 0; j < 16; ++j) acc[j] = mode == 0 ? max(acc[j], (int)xv[j]) : acc[j] + xv[j];
    }
  }
  uint4 ov;
  i8* oq = reinterpret_cast<i8*>(&ov);
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    if (mode == 0) {
      oq[j] = inside ? (i8)acc[j] : (i8)0;  // an empty window: the reference's int64 minimum cast to int8
    } else {
      i64 tw = rshift_round((i64)acc[j] * recip_w, 16);
      oq[j] = (i8)sat8(rshift_round(tw * recip_h, 16));
    }
  }
  *reinterpret_cast<uint4*>(y + (size_t)pix * Cp + c0) = ov;
}
"""
