"""CUDA source of the implicit-GEMM convolution (tensor cores, mma.sync m16n8k16, cp.async pipeline).

GEMM view (NHWC): M = N*P*Q output pixels, N = K output channels, and the reduction runs over
R*S*Cp with the channel fastest, so every 8-element chunk of the reduction is one 16-byte
contiguous load from both the input (an im2col gather done on the fly) and the weights.

Layouts (Cp = C rounded up to 8, Kp = K rounded up to 8):
  x    NHWC fp16, channel stride Cp, padded channels hold zeros
  w    K x R x S x Cp fp16 ("KRSC"), padded channels zero
  bias K fp32 (or null)
  res  NHWC fp16 with channel stride Kp (or null)
  y    NHWC fp16 with channel stride Kp; channels K..Kp-1 are written as zeros
Offsets are 32-bit: every tensor must hold fewer than 2**31 elements.

Squeeze-excitation scale: with ``sc`` non-null (1x1 convolutions only), the input is read as
x[n, p, q, c] * sc[n * Cp + c], each thread rescaling the 16-byte chunks it loaded once its
cp.async group has landed and before the barrier that hands the tile to ldmatrix; the product of
two fp16 values is exact in fp32, so the one rounding equals a separate fp16 multiply kernel's.

Split-K: with ``ws`` non-null, block z reduces k-tiles [z*kps, (z+1)*kps) and writes fp32
partials to ws[z][M][Kp]; ``splitk_epilogue`` then sums them and applies the epilogue.
"""

from backends.gpu.kernels.common import COMMON_SRC

CONV_SRC = COMMON_SRC + r"""
#define BK 32
// smem tile row = 32 halves = 4 chunks of 16 B; XOR-swizzle the chunk so ldmatrix is conflict-free.
__device__ __forceinline__ int swz(int row, int chunk) { return row * BK + ((chunk ^ ((row >> 1) & 3)) << 3); }

template <int BM, int BN, int WM, int WN, int STAGES>
__global__ void __launch_bounds__(WM * WN * 32)
conv_igemm(const h16* __restrict__ x, const h16* __restrict__ w, const float* __restrict__ bias,
           const h16* __restrict__ res, h16* __restrict__ y, float* __restrict__ ws,
           const h16* __restrict__ sc,
           int N, int H, int W, int C, int K, int P, int Q, int R, int S,
           int sh, int sw, int ph, int pw, int dh, int dw,
           int act, float alpha, float beta, int kps)
{
  constexpr int THREADS = WM * WN * 32;
  constexpr int WTM = BM / WM, WTN = BN / WN;
  constexpr int MI = WTM / 16, NI = WTN / 8;
  static_assert(WTM % 16 == 0 && WTN % 16 == 0, "warp tile must be a multiple of 16x16");
  constexpr int A_CH = BM * 4, B_CH = BN * 4;
  constexpr int A_IT = (A_CH + THREADS - 1) / THREADS, B_IT = (B_CH + THREADS - 1) / THREADS;
  extern __shared__ __align__(16) h16 smem[];
  h16* As = smem;
  h16* Bs = smem + STAGES * BM * BK;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / WN, wn = warp % WN;
  const int PQ = P * Q, M = N * PQ, Kp = (K + 7) & ~7;
  const int Ktot = R * S * C, KT = (Ktot + BK - 1) / BK;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
  const int kt0 = blockIdx.z * kps;
  const int nkt = max(min(KT, kt0 + kps) - kt0, 0);
  const int kc = tid & 3;  // this thread's 16-byte chunk column in every tile it loads

  // Per-row state: offset of pixel (n, ih0, iw0) and the window origin. Rows past M get an origin
  // far outside the image, so the per-tile bounds check rejects them without a separate flag.
  int a_off[A_IT], a_ih[A_IT], a_iw[A_IT], a_sc[A_IT];
#pragma unroll
  for (int i = 0; i < A_IT; ++i) {
    int id = tid + i * THREADS, m = m0 + (id >> 2);
    bool ok = id < A_CH && m < M;
    int mm = ok ? m : 0;
    int n = mm / PQ, rem = mm - n * PQ, p = rem / Q, q = rem - p * Q;
    a_sc[i] = n * C;
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
  // (r, s, c) of this thread's chunk in the next tile to load, advanced without divisions.
  int ld_k = kt0 * BK + kc * 8, ld_r, ld_s, ld_c;
  { int rs = ld_k / C; ld_c = ld_k - rs * C; ld_r = rs / S; ld_s = rs - ld_r * S; }

  auto load_tile = [&](int stage) {
    const bool kok = ld_k < Ktot;
    const int dr = ld_r * dh, ds = ld_s * dw, koff = (dr * W + ds) * C + ld_c;
    h16* as = As + stage * BM * BK;
    h16* bs = Bs + stage * BN * BK;
#pragma unroll
    for (int i = 0; i < A_IT; ++i) {
      int id = tid + i * THREADS;
      if (A_CH % THREADS == 0 || id < A_CH) {
        int ih = a_ih[i] + dr, iw = a_iw[i] + ds;
        bool v = kok && (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W;
        cp_async16(smem_addr(as + swz(id >> 2, kc)), x + (v ? a_off[i] + koff : 0), v ? 16 : 0);
      }
    }
#pragma unroll
    for (int i = 0; i < B_IT; ++i) {
      int id = tid + i * THREADS;
      if (B_CH % THREADS == 0 || id < B_CH) {
        bool v = b_ok[i] && kok;
        cp_async16(smem_addr(bs + swz(id >> 2, kc)), w + (v ? b_off[i] + ld_k : 0), v ? 16 : 0);
      }
    }
    ld_k += BK;
    ld_c += BK;
    while (ld_c >= C) { ld_c -= C; if (++ld_s == S) { ld_s = 0; ++ld_r; } }
  };

  float acc[MI][NI][4];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

#pragma unroll
  for (int st = 0; st < STAGES - 1; ++st) {
    if (st < nkt) load_tile(st);
    cp_async_commit();
  }

  for (int it = 0; it < nkt; ++it) {
    cp_async_wait<STAGES - 2>();
    if (sc != nullptr) {  // SE scale (R = S = 1: the k index is the channel)
      const int c = (kt0 + it) * BK + kc * 8;
      h16* as = As + (it % STAGES) * BM * BK;
#pragma unroll
      for (int i = 0; i < A_IT; ++i) {
        int id = tid + i * THREADS;
        if ((A_CH % THREADS == 0 || id < A_CH) && c < C) {
          uint4* pa = reinterpret_cast<uint4*>(as + swz(id >> 2, kc));
          uint4 v = *pa;
          const uint4 sv = *reinterpret_cast<const uint4*>(sc + a_sc[i] + c);
          u32* pv = reinterpret_cast<u32*>(&v);
          const u32* ps = reinterpret_cast<const u32*>(&sv);
#pragma unroll
          for (int j = 0; j < 4; ++j) pv[j] = pack2(lo2f(pv[j]) * lo2f(ps[j]), hi2f(pv[j]) * hi2f(ps[j]));
          *pa = v;
        }
      }
    }
    __syncthreads();
    int nxt = it + STAGES - 1;
    if (nxt < nkt) load_tile(nxt % STAGES);
    cp_async_commit();
    const h16* as = As + (it % STAGES) * BM * BK;
    const h16* bs = Bs + (it % STAGES) * BN * BK;
#pragma unroll
    for (int kk = 0; kk < 2; ++kk) {
      u32 af[MI][4], bf[NI][2];
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) {
        int row = wm * WTM + mi * 16 + (lane & 15);
        ldmatrix_x4(af[mi], smem_addr(as + swz(row, kk * 2 + (lane >> 4))));
      }
#pragma unroll
      for (int nj = 0; nj < NI / 2; ++nj) {
        int row = wn * WTN + nj * 16 + (lane & 7) + ((lane >> 4) << 3);
        u32 t[4];
        ldmatrix_x4(t, smem_addr(bs + swz(row, kk * 2 + ((lane >> 3) & 1))));
        bf[2 * nj][0] = t[0]; bf[2 * nj][1] = t[1]; bf[2 * nj + 1][0] = t[2]; bf[2 * nj + 1][1] = t[3];
      }
#pragma unroll
      for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) mma_16816(acc[mi][ni], af[mi], bf[ni]);
    }
  }
  cp_async_wait<0>();
  __syncthreads();

  if (ws != nullptr) {  // split-K: fp32 partials, epilogue in splitk_epilogue
    float* wz = ws + (size_t)blockIdx.z * M * Kp;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < NI; ++ni)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          int m = m0 + wm * WTM + mi * 16 + (lane >> 2) + h * 8;
          int n = n0 + wn * WTN + ni * 8 + (lane & 3) * 2;
          if (m < M && n < Kp)
            *reinterpret_cast<float2*>(wz + (size_t)m * Kp + n) =
                make_float2(acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1]);
        }
    return;
  }

  // Epilogue: acc + bias -> fp16 tile in smem, then 16-byte coalesced rows: + residual, activation.
  constexpr int CS = BN + 8;  // padded smem row (halves)
  h16* cs = smem;
#pragma unroll
  for (int ni = 0; ni < NI; ++ni) {
    int nl = wn * WTN + ni * 8 + (lane & 3) * 2, n = n0 + nl;
    float b0 = (bias != nullptr && n < K) ? bias[n] : 0.f;
    float b1 = (bias != nullptr && n + 1 < K) ? bias[n + 1] : 0.f;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        int ml = wm * WTM + mi * 16 + (lane >> 2) + h * 8;
        *reinterpret_cast<u32*>(cs + ml * CS + nl) = pack2(acc[mi][ni][2 * h] + b0, acc[mi][ni][2 * h + 1] + b1);
      }
  }
  __syncthreads();
  constexpr int RCH = BN / 8;
  for (int id = tid; id < BM * RCH; id += THREADS) {
    int ml = id / RCH, nl = (id - ml * RCH) * 8;
    int m = m0 + ml, n = n0 + nl;
    if (m >= M || n >= Kp) continue;
    uint4 v = *reinterpret_cast<const uint4*>(cs + ml * CS + nl);
    uint4 rv = make_uint4(0, 0, 0, 0);
    if (res != nullptr) rv = *reinterpret_cast<const uint4*>(res + (size_t)m * Kp + n);
    u32* pv = reinterpret_cast<u32*>(&v);
    const u32* pr = reinterpret_cast<const u32*>(&rv);
    float f[8];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      f[2 * j] = lo2f(pv[j]) + lo2f(pr[j]);
      f[2 * j + 1] = hi2f(pv[j]) + hi2f(pr[j]);
    }
    act8(f, act, alpha, beta);
#pragma unroll
    for (int j = 0; j < 4; ++j)
      pv[j] = pack2(n + 2 * j < K ? f[2 * j] : 0.f, n + 2 * j + 1 < K ? f[2 * j + 1] : 0.f);
    *reinterpret_cast<uint4*>(y + (size_t)m * Kp + n) = v;
  }
}

// Sums split-K partials and applies the same epilogue; one thread per 8 output channels.
extern "C" __global__ void splitk_epilogue(const float* __restrict__ ws, int splits, const float* __restrict__ bias,
                                           const h16* __restrict__ res, h16* __restrict__ y,
                                           int M, int K, int act, float alpha, float beta)
{
  const int Kp = (K + 7) & ~7, KC = Kp / 8;
  int id = blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= M * KC) return;
  int m = id / KC, n = (id - m * KC) * 8;
  float v[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) v[j] = 0.f;
  for (int z = 0; z < splits; ++z) {
    const float4* p = reinterpret_cast<const float4*>(ws + ((size_t)z * M + m) * Kp + n);
    float4 a = p[0], b = p[1];
    v[0] += a.x; v[1] += a.y; v[2] += a.z; v[3] += a.w; v[4] += b.x; v[5] += b.y; v[6] += b.z; v[7] += b.w;
  }
  uint4 rv = make_uint4(0, 0, 0, 0);
  if (res != nullptr) rv = *reinterpret_cast<const uint4*>(res + (size_t)m * Kp + n);
  const u32* pr = reinterpret_cast<const u32*>(&rv);
  uint4 out;
  u32* po = reinterpret_cast<u32*>(&out);
#pragma unroll
  for (int j = 0; j < 8; ++j) v[j] += (bias != nullptr && n + j < K ? bias[n + j] : 0.f);
#pragma unroll
  for (int j = 0; j < 4; ++j) { v[2 * j] += lo2f(pr[j]); v[2 * j + 1] += hi2f(pr[j]); }
  act8(v, act, alpha, beta);
#pragma unroll
  for (int j = 0; j < 4; ++j) po[j] = pack2(n + 2 * j < K ? v[2 * j] : 0.f, n + 2 * j + 1 < K ? v[2 * j + 1] : 0.f);
  *reinterpret_cast<uint4*>(y + (size_t)m * Kp + n) = out;
}
"""
