"""CUDA source of the implicit-GEMM convolution (tensor cores, mma.sync m16n8k16, cp.async pipeline).

GEMM view (NHWC): M = N*P*Q output pixels, N = K output channels, and the reduction runs over
R*S*Cp with the channel fastest, so every 8-element chunk of the reduction is one 16-byte
contiguous load from both the input (an im2col gather done on the fly) and the weights. The
mainloop is ``igemm_src``'s (shared with the INT8 kernel); this module adds its fp16 traits, the
squeeze-excitation hook and the epilogues.

Layouts (Cp = C rounded up to 8, Kp = K rounded up to 8):
  x    NHWC fp16, channel stride Cp, padded channels hold zeros
  w    K x R x S x Cp fp16 ("KRSC"), padded channels zero
  bias K fp32 (or null)
  res  NHWC fp16 with channel stride Kp (or null)
  y    NHWC fp16 with channel stride Kp; channels K..Kp-1 are written as zeros
Offsets are 32-bit: every tensor must hold fewer than 2**31 elements.

Groups (``G`` > 1): ``C`` and ``K`` are one group's channels, both multiples of 8; x has G*C
channels, w is G x K x R x S x C (each group's KRSC block), and bias, res and y have G*K. Block y
is grp * NT + t (NT = ceil(K / BN) column tiles per group): the mainloop reads x + grp*C and the
group's weights, and the epilogue writes channels grp*K + n, n < K. With G = 1, C is Cp and every
offset is the ungrouped kernel's.

Squeeze-excitation scale: with ``sc`` non-null (1x1 convolutions only), the input is read as
x[n, p, q, c] * sc[n * Cp + c], each thread rescaling the 16-byte chunks it loaded once its
cp.async group has landed and before the barrier that hands the tile to ldmatrix (``SeScale``, the
mainloop's hook); the product of two fp16 values is exact in fp32, so the one rounding equals a
separate fp16 multiply kernel's.

Split-K: with ``ws`` non-null, block z reduces k-tiles [z*kps, (z+1)*kps) and writes fp32
partials to ws[z][M][G*Kp] (each group its own columns); ``splitk_epilogue`` then sums them over
the whole G*K and applies the epilogue.
"""

from backends.gpu.kernels.common import COMMON_SRC
from backends.gpu.kernels.igemm_src import IGEMM_SRC

CONV_SRC = COMMON_SRC + IGEMM_SRC + r"""
// fp16 inputs, fp32 accumulators: 8 halves per 16-byte chunk, one m16n8k16 per k-step.
struct IgemmF16 {
  typedef h16 elem;
  typedef float acc;
  static constexpr int CHUNK = 8;
  static __device__ __forceinline__ void mma(float* c, const u32* a, const u32* b) { mma_16816(c, a, b); }
};

// Squeeze-excitation scale of a landed A chunk (R = S = 1: the reduction index k is the channel).
struct SeScale {
  const h16* __restrict__ sc;
  int C;
  __device__ __forceinline__ bool active() const { return sc != nullptr; }
  __device__ __forceinline__ bool takes(int k) const { return k < C; }  // past C: the zero tail of the reduction
  __device__ __forceinline__ void operator()(h16* chunk, int img, int k) const {
    uint4* pa = reinterpret_cast<uint4*>(chunk);
    uint4 v = *pa;
    const uint4 sv = *reinterpret_cast<const uint4*>(sc + img + k);
    u32* pv = reinterpret_cast<u32*>(&v);
    const u32* ps = reinterpret_cast<const u32*>(&sv);
#pragma unroll
    for (int j = 0; j < 4; ++j) pv[j] = pack2(lo2f(pv[j]) * lo2f(ps[j]), hi2f(pv[j]) * hi2f(ps[j]));
    *pa = v;
  }
};

// Registers as the INT8 kernel's: 64 x 128 and 128 x 64 tiles on 4 warps held to 128 (4 CTAs per SM;
// left free, 128 x 64 takes 158 and fits 3), 128 x 128 on 8 warps to 128 (2 CTAs); none spills. A 0
// leaves the other tiles to the compiler.
template <int BM, int BN, int WM, int WN, int STAGES, int KC, class Step = IgemmMmaSync>
__global__ void __launch_bounds__(WM * WN * 32, (BM * BN == 8192 && WM * WN == 4) ? 4
                                                : (BM * BN == 16384 && WM * WN == 8) ? 2 : 0)
conv_igemm(const h16* __restrict__ x, const h16* __restrict__ w, const float* __restrict__ bias,
           const h16* __restrict__ res, h16* __restrict__ y, float* __restrict__ ws,
           const h16* __restrict__ sc,
           int N, int H, int W, int C, int K, int P, int Q, int R, int S,
           int sh, int sw, int ph, int pw, int dh, int dw, int G,
           int act, float alpha, float beta, int kps)
{
  typedef Igemm<IgemmF16, BM, BN, WM, WN, STAGES, KC, Step> IG;
  constexpr int THREADS = IG::THREADS, WTM = IG::WTM, WTN = IG::WTN, MI = IG::MI, NI = IG::NI;
  extern __shared__ __align__(16) h16 smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / WN, wn = warp % WN;
  // C, K, Kp: one group's; YS: the pixel stride of y, res and ws (all groups' channels).
  const int M = N * (P * Q), Kp = (K + 7) & ~7, YS = G * Kp;
  const int NT = (K + BN - 1) / BN, grp = (int)blockIdx.y / NT;  // block y = grp * NT + column tile
  const int m0 = blockIdx.x * BM, n0 = ((int)blockIdx.y - grp * NT) * BN, goff = grp * K;
  float acc[MI][NI][4];
  IG::mainloop(acc, x + grp * C, w + (size_t)goff * (R * S * C), smem,
               {N, H, W, C, K, P, Q, R, S, sh, sw, ph, pw, dh, dw, G * C}, n0, kps, SeScale{sc, C});
  bias = bias != nullptr ? bias + goff : nullptr;  // from here on, the group's channels
  res = res != nullptr ? res + goff : nullptr;
  y += goff;

  if (ws != nullptr) {  // split-K: fp32 partials, epilogue in splitk_epilogue
    float* wz = ws + (size_t)blockIdx.z * M * YS + goff;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < NI; ++ni)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          int m = m0 + wm * WTM + mi * 16 + (lane >> 2) + h * 8;
          int n = n0 + wn * WTN + ni * 8 + (lane & 3) * 2;
          if (m < M && n < Kp)
            *reinterpret_cast<float2*>(wz + (size_t)m * YS + n) =
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
  // The thread's 16-byte chunks of the tile go in batches of EB whose smem and residual loads are all
  // issued before any arithmetic, so a thread has EB residual loads in flight rather than one (as
  // the INT8 epilogue's rows).
  constexpr int RCH = BN / 8, CHUNKS = BM * RCH;
  constexpr int ITERS = (CHUNKS + THREADS - 1) / THREADS, EB = ITERS < 8 ? ITERS : 8;
  for (int it0 = 0; it0 < ITERS; it0 += EB) {
    uint4 v[EB], rv[EB];
#pragma unroll
    for (int u = 0; u < EB; ++u) {
      const int id = tid + (it0 + u) * THREADS, ml = id / RCH, nl = (id - ml * RCH) * 8;
      const int m = m0 + ml, n = n0 + nl;
      const bool ok = it0 + u < ITERS && id < CHUNKS && m < M && n < Kp;
      v[u] = ok ? *reinterpret_cast<const uint4*>(cs + ml * CS + nl) : make_uint4(0, 0, 0, 0);
      rv[u] = ok && res != nullptr ? *reinterpret_cast<const uint4*>(res + (size_t)m * YS + n) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < EB; ++u) {
      const int id = tid + (it0 + u) * THREADS, ml = id / RCH, nl = (id - ml * RCH) * 8;
      const int m = m0 + ml, n = n0 + nl;
      if (it0 + u >= ITERS || id >= CHUNKS || m >= M || n >= Kp) continue;
      u32* pv = reinterpret_cast<u32*>(&v[u]);
      const u32* pr = reinterpret_cast<const u32*>(&rv[u]);
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
      *reinterpret_cast<uint4*>(y + (size_t)m * YS + n) = v[u];
    }
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
// The epilogue of a GEMM-shaped convolution computed by cuBLAS (tactic "cublas"): y holds the fp16
// product; y = act(round16(y + bias) + res) in place, as the implicit-GEMM kernel's epilogue rounds
// acc + bias to fp16 before the residual. K is a multiple of 8 (no padded channels); a thread per 8.
extern "C" __global__ void gemm_epilogue(h16* __restrict__ y, const float* __restrict__ bias,
                                         const h16* __restrict__ res, int M, int K, int act, float alpha, float beta)
{
  const int KC = K / 8;
  int id = blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= M * KC) return;
  int m = id / KC, n = (id - m * KC) * 8;
  uint4 v = *reinterpret_cast<const uint4*>(y + (size_t)m * K + n);
  uint4 rv = make_uint4(0, 0, 0, 0);
  if (res != nullptr) rv = *reinterpret_cast<const uint4*>(res + (size_t)m * K + n);
  u32* pv = reinterpret_cast<u32*>(&v);
  const u32* pr = reinterpret_cast<const u32*>(&rv);
  float f[8];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    float b0 = bias != nullptr ? bias[n + 2 * j] : 0.f, b1 = bias != nullptr ? bias[n + 2 * j + 1] : 0.f;
    u32 r = pack2(lo2f(pv[j]) + b0, hi2f(pv[j]) + b1);
    f[2 * j] = lo2f(r) + lo2f(pr[j]);
    f[2 * j + 1] = hi2f(r) + hi2f(pr[j]);
  }
  act8(f, act, alpha, beta);
#pragma unroll
  for (int j = 0; j < 4; ++j) pv[j] = pack2(f[2 * j], f[2 * j + 1]);
  *reinterpret_cast<uint4*>(y + (size_t)m * K + n) = v;
}

// A GEMM-shaped convolution on few rows (tactic "gemv": the squeeze-excitation FCs and FC heads at
// small batch), one launch where the tiles need 16+ rows and cuBLAS a second kernel for the
// epilogue: a warp per (row, output channel), lanes over the Cp input channels in 16-byte vectors,
// fp32 sums combined with shuffles, then the tile epilogue's steps (acc + bias rounded to fp16,
// + residual, activation). x: M x Cp and w: K x Cp fp16 (a 1x1's NHWC input and KRSC weights);
// y and res: M x Kp fp16, channels K..Kp-1 written zero.
extern "C" __global__ void __launch_bounds__(256) gemv_conv(const h16* __restrict__ x, const h16* __restrict__ w,
    const float* __restrict__ bias, const h16* __restrict__ res, h16* __restrict__ y, int M, int C, int K,
    int act, float alpha, float beta)
{
  const int Cp = (C + 7) & ~7, Kp = (K + 7) & ~7, lane = threadIdx.x & 31;
  const int warp = (int)((blockIdx.x * blockDim.x + threadIdx.x) >> 5);
  if (warp >= M * Kp) return;
  const int m = warp / Kp, k = warp - m * Kp;
  float s = 0.f;
  if (k < K) {
    const uint4* xr = reinterpret_cast<const uint4*>(x + (size_t)m * Cp);
    const uint4* wr = reinterpret_cast<const uint4*>(w + (size_t)k * Cp);
    for (int v = lane; v < Cp / 8; v += 32) {
      const uint4 a = xr[v], b = wr[v];
      const u32* pa = reinterpret_cast<const u32*>(&a);
      const u32* pb = reinterpret_cast<const u32*>(&b);
#pragma unroll
      for (int j = 0; j < 4; ++j) s = fmaf(lo2f(pa[j]), lo2f(pb[j]), fmaf(hi2f(pa[j]), hi2f(pb[j]), s));
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (lane != 0) return;
  float f = 0.f;
  if (k < K) {
    f = h2f(f2h(s + (bias != nullptr ? bias[k] : 0.f)));
    if (res != nullptr) f += h2f(res[(size_t)m * Kp + k]);
    f = act_fn(f, act, alpha, beta);
  }
  y[(size_t)m * Kp + k] = f2h(f);
}
"""
