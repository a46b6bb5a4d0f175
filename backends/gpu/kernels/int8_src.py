"""CUDA source of the INT8 kernels: implicit-GEMM convolution on integer tensor cores and pooling.

The arithmetic is the reference's (``backends.reference.int8``) bit for bit: int8 x int8 products
summed exactly in int32 by ``mma.sync.m16n8k32.s32.s8.s8.s32``, then an integer epilogue in int64
that mirrors the reference's numpy steps one by one (bias add with int32 saturation, residual
through the SDP converter, ReLU, per-channel requant with round-half-away shifts and int8
saturation, clip's upper bound on the int8 result). Only a float output (an INT8 layer without an
output scale) leaves the integers: ``(float)((double)v * s_acc[k])``, the same IEEE operations as
numpy's float64 multiply and cast.

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
+-2**33, which leaves the saturated sum unchanged), rsc/rsh (residual converter), osc/osh (output
requant), sacc (float64 accumulator scale, float output only).
"""

from backends.gpu.kernels.common import COMMON_SRC

INT8_SRC = COMMON_SRC + r"""
typedef signed char i8;
typedef long long i64;

#define EPI_DECL const i64* __restrict__ bias, const i8* __restrict__ res, int ldr,                     \
    const int* __restrict__ rsc, const int* __restrict__ rsh, const int* __restrict__ osc,              \
    const int* __restrict__ osh, const double* __restrict__ sacc, int relu, int clipq, int has_clipf,   \
    float clipf, void* __restrict__ y, int ldy
#define EPI_ARGS bias, res, ldr, rsc, rsh, osc, osh, sacc, relu, clipq, has_clipf, clipf, y, ldy

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
__device__ __forceinline__ i64 sat32(i64 v) {
  return v < -2147483648LL ? -2147483648LL : (v > 2147483647LL ? 2147483647LL : v);
}
__device__ __forceinline__ i64 sat8(i64 v) { return v < -128 ? -128 : (v > 127 ? 127 : v); }

// The integer epilogue for 16 consecutive channels n..n+15 of output row m (n a multiple of 16).
__device__ __forceinline__ void epi16(const int* a, int m, int n, int K, EPI_DECL) {
  uint4 rv = make_uint4(0, 0, 0, 0);
  if (res != nullptr) rv = *reinterpret_cast<const uint4*>(res + (size_t)m * ldr + n);
  const i8* rq = reinterpret_cast<const i8*>(&rv);
  uint4 ov;
  i8* oq = reinterpret_cast<i8*>(&ov);
  float of[16];
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    const int c = n + j;
    oq[j] = 0;
    of[j] = 0.f;
    if (c >= K) continue;
    i64 v = a[j];
    if (bias != nullptr) v = sat32(v + bias[c]);
    if (res != nullptr) v = sat32(v + sat32(rshift_round((i64)rq[j] * rsc[c], rsh[c])));
    if (relu) v = v < 0 ? 0 : v;
    if (osc != nullptr) {
      i64 q = sat8(rshift_round(v * osc[c], osh[c]));
      oq[j] = (i8)(q < clipq ? q : clipq);
    } else {
      float f = __double2float_rn((double)v * sacc[c]);
      of[j] = has_clipf ? fminf(f, clipf) : f;
    }
  }
  if (osc != nullptr) {
    *reinterpret_cast<uint4*>(reinterpret_cast<i8*>(y) + (size_t)m * ldy + n) = ov;
  } else {
    float* yf = reinterpret_cast<float*>(y) + (size_t)m * ldy;
#pragma unroll
    for (int j = 0; j < 16; ++j)
      if (n + j < ldy) yf[n + j] = of[j];
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

  // Epilogue: int32 tile in smem, then one thread per 16 channels of a row (16-byte residual
  // reads and int8 stores).
  constexpr int CS = BN + 4;  // padded smem row (int32)
  int* cs = reinterpret_cast<int*>(smem8);
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
  constexpr int RCH = BN / 16;
  for (int id = tid; id < BM * RCH; id += THREADS) {
    int ml = id / RCH, nl = (id - ml * RCH) * 16;
    int m = m0 + ml, n = n0 + nl;
    if (m >= M || n >= ldy) continue;
    int a[16];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      int4 t = *reinterpret_cast<const int4*>(cs + ml * CS + nl + 4 * j);
      a[4 * j] = t.x; a[4 * j + 1] = t.y; a[4 * j + 2] = t.z; a[4 * j + 3] = t.w;
    }
    epi16(a, m, n, K, EPI_ARGS);
  }
}

// Sums the split-K partials (int32, exact) and applies the same epilogue; one thread per 16 channels.
extern "C" __global__ void splitk_epilogue_s8(const int* __restrict__ wsp, int splits, int M, int K, EPI_DECL)
{
  const int Kp = (K + 15) & ~15, KC = (ldy + 15) / 16;
  int id = blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= M * KC) return;
  int m = id / KC, n = (id - m * KC) * 16;
  int a[16];
#pragma unroll
  for (int j = 0; j < 16; ++j) a[j] = 0;
  for (int z = 0; z < splits; ++z) {
    const int4* p = reinterpret_cast<const int4*>(wsp + ((size_t)z * M + m) * Kp + n);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      int4 t = p[j];
      a[4 * j] += t.x; a[4 * j + 1] += t.y; a[4 * j + 2] += t.z; a[4 * j + 3] += t.w;
    }
  }
  epi16(a, m, n, K, EPI_ARGS);
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
