"""CUDA source of the INT8 kernels: implicit-GEMM convolution on integer tensor cores and pooling.

The arithmetic is the reference's (``backends.reference.int8``) bit for bit: int8 x int8 products
summed exactly in int32 by ``mma.sync.m16n8k32.s32.s8.s8.s32``, then an integer epilogue that mirrors
the reference's numpy steps one by one (bias add with int32 saturation, residual through the SDP
converter, ReLU, per-channel requant with round-half-away shifts and int8 saturation, clip's
upper bound on the int8 result), each step in the narrowest width that is provably exact
(``epi4``). Only a float output (an INT8 layer without an output scale) leaves the integers:
``(float)((double)v * s_acc[k])``, the same IEEE operations as numpy's float64 multiply and cast,
and a SiLU / hard-swish epilogue, float64 ``f(v * s_acc[k])`` then ``rint(y / s_out)`` (``int8_epi_src``).

Why the mainloop is the fp16 kernel's (``igemm_src``, one template for both): an m16n8k32 int8
fragment holds the same bytes of the same rows as an m16n8k16 fp16 fragment, so a 64-byte smem row
(64 int8 channels, BK = 64) is read by the same swizzle and the same ``ldmatrix`` addresses as the
fp16 kernel's 32-half rows. ``IgemmS8`` gives the template its element, accumulator and mma.

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
accumulator scale: float output and SiLU / hard-swish only; ``sout`` their output scale, 0 for a
float output). The conv kernel stages its BN channels' parameters in
shared memory once, after the mainloop.
"""

from backends.gpu.kernels.common import COMMON_SRC
from backends.gpu.kernels.igemm_src import IGEMM_SRC
from backends.gpu.kernels.int8_epi_src import EPI8_SRC

INT8_SRC = COMMON_SRC + IGEMM_SRC + EPI8_SRC + r"""
__device__ __forceinline__ void mma_s8_16832(int* c, const u32* a, const u32* b) {
  asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

#define EPI_ROWS 8
// EPI_ROWS rows u = 0.. of one thread, at pointers advanced by a row stride: sums from smem (acc),
// residual words (res), int8 outputs (y). FULL: every row exists, so no row is tested.
template <bool RELU, bool RES, bool GEN, bool FULL>
__device__ __forceinline__ void epi_group(const int* acc, int astep, const i8* __restrict__ res, size_t rstep,
                                          i8* __restrict__ y, size_t ystep, int nrows, const Epi4& e, int clipq) {
  int4 t[EPI_ROWS];
  u32 rv[EPI_ROWS];
#pragma unroll
  for (int u = 0; u < EPI_ROWS; ++u) {
    const bool ok = FULL || u < nrows;
    t[u] = ok ? *reinterpret_cast<const int4*>(acc + u * astep) : make_int4(0, 0, 0, 0);
    rv[u] = RES && ok ? __ldg(reinterpret_cast<const unsigned int*>(res + u * rstep)) : 0u;
  }
#pragma unroll
  for (int u = 0; u < EPI_ROWS; ++u) {
    if (!FULL && u >= nrows) break;
    const int a[4] = {t[u].x, t[u].y, t[u].z, t[u].w};
    int v[4];
    sum4<RES, GEN>(v, a, e, rv[u]);
    *reinterpret_cast<u32*>(y + u * ystep) = requant4<RELU, GEN>(v, e, clipq);
  }
}

// The epilogue of one thread: channels n..n+3 of rows m0 + ml for ml = ml0, ml0 + mstep, ... < mend,
// int32 sums read from ``acc`` (row stride lda). Parameters are loaded once into registers; rows go
// in groups of EPI_ROWS whose smem and residual loads are all issued before any arithmetic, so a
// thread has EPI_ROWS residual loads in flight rather than one. Whole groups test no row and step
// their pointers by a stride, which keeps the per-row work to the loads, the arithmetic and the store.
template <bool RELU, bool RES, bool GEN>
__device__ __forceinline__ void epi_rows(const int* acc, int lda, int ml0, int mstep, int mend, int m0, int M,
                                         int n, int K, const int* __restrict__ ep, const i8* __restrict__ res,
                                         int ldr, i8* __restrict__ y, int ldy, int clipq) {
  Epi4 e;
  load_epi4(e, ep, (K + 15) & ~15, n, RES);
  const int rows = min(mend, M - m0);  // rows ml < rows exist
  if (ml0 >= rows) return;
  const int astep = mstep * lda;
  const size_t rstep = (size_t)mstep * ldr, ystep = (size_t)mstep * ldy;
  const int* ap = acc + (size_t)ml0 * lda;
  const i8* rp = RES ? res + (size_t)(m0 + ml0) * ldr + n : nullptr;
  i8* yp = y + (size_t)(m0 + ml0) * ldy + n;
  int left = (rows - ml0 + mstep - 1) / mstep;  // this thread's rows
  for (; left >= EPI_ROWS; left -= EPI_ROWS) {
    epi_group<RELU, RES, GEN, true>(ap, astep, rp, rstep, yp, ystep, EPI_ROWS, e, clipq);
    ap += EPI_ROWS * astep;
    if (RES) rp += EPI_ROWS * rstep;
    yp += EPI_ROWS * ystep;
  }
  if (left > 0) epi_group<RELU, RES, GEN, false>(ap, astep, rp, rstep, yp, ystep, left, e, clipq);
}

// Dispatch on the flags once per thread (the loop above is compiled for each combination).
__device__ __forceinline__ void epilogue_rows(const int* acc, int lda, int ml0, int mstep, int mend, int m0, int M,
                                              int n, int K, EPI_DECL) {
  if (n >= ldy) return;
  if (sacc != nullptr) {  // float output (rare: a last FC) or a SiLU / hard-swish epilogue, kept simple
    Epi4 e;
    load_epi4(e, ep, (K + 15) & ~15, n, res != nullptr);
    Nl4 nl;
    load_nl4(nl, sacc, n, K, sout);
    for (int ml = ml0; ml < mend; ml += mstep) {
      const int m = m0 + ml;
      if (m >= M) break;
      const int4 t = *reinterpret_cast<const int4*>(acc + (size_t)ml * lda);
      const int a[4] = {t.x, t.y, t.z, t.w};
      const u32* r4 = res != nullptr ? reinterpret_cast<const u32*>(res + (size_t)m * ldr + n) : nullptr;
      store_fnl4(a, e, r4, m, n, K, nl, sacc, flags, has_clipf, clipf, y, ldy, sout);
    }
    return;
  }
  i8* yq = reinterpret_cast<i8*>(y);
#define EPI_CASE(R, S, T) epi_rows<R, S, T>(acc, lda, ml0, mstep, mend, m0, M, n, K, ep, res, ldr, yq, ldy, clipq)
  EPI_DISPATCH(EPI_CASE, flags & EPI_RELU, res != nullptr, flags & EPI_GEN);
#undef EPI_CASE
}

// int8 inputs, int32 accumulators: 16 int8 per 16-byte chunk, one m16n8k32 per k-step.
struct IgemmS8 {
  typedef i8 elem;
  typedef int acc;
  static constexpr int CHUNK = 16;
  static __device__ __forceinline__ void mma(int* c, const u32* a, const u32* b) { mma_s8_16832(c, a, b); }
};

// Registers: 64 x 128 and 128 x 64 tiles on 4 warps are held to 128 (4 CTAs per SM; left free, the
// compiler takes ~158 and fits 3), 128 x 128 on 8 warps to 128 (2 CTAs); none spills. A 0 leaves the
// other tiles to the compiler.
template <int BM, int BN, int WM, int WN, int STAGES, int KC, class Step = IgemmMmaSync>
__global__ void __launch_bounds__(WM * WN * 32, (BM * BN == 8192 && WM * WN == 4) ? 4
                                                : (BM * BN == 16384 && WM * WN == 8) ? 2 : 0)
conv_igemm_s8(const i8* __restrict__ x, const i8* __restrict__ w, int* __restrict__ ws,
              int N, int H, int W, int C, int K, int P, int Q, int R, int S,
              int sh, int sw, int ph, int pw, int dh, int dw, int G, int kps, EPI_DECL)
{
  typedef Igemm<IgemmS8, BM, BN, WM, WN, STAGES, KC, Step> IG;
  constexpr int THREADS = IG::THREADS, WTM = IG::WTM, WTN = IG::WTN, MI = IG::MI, NI = IG::NI;
  extern __shared__ __align__(16) unsigned char smem8[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / WN, wn = warp % WN;
  // C, K, Kp: one group's (with G > 1 both multiples of 16, so Kp = K); YS: the pixel stride of ws.
  const int M = N * (P * Q), Kp = (K + 15) & ~15, YS = G * Kp;
  const int NT = (K + BN - 1) / BN, grp = (int)blockIdx.y / NT;  // block y = grp * NT + column tile
  const int n0 = ((int)blockIdx.y - grp * NT) * BN, goff = grp * K;
  int acc[MI][NI][4];
  IG::mainloop(acc, x + grp * C, w + (size_t)goff * (R * S * C), reinterpret_cast<i8*>(smem8),
               {N, H, W, C, K, P, Q, R, S, sh, sw, ph, pw, dh, dw, G * C}, n0, kps, IgemmNoHook());
  const int m0 = blockIdx.x * BM;

  if (ws != nullptr) {  // split-K: int32 partials (exact; summed in splitk_epilogue_s8)
    int* wz = ws + (size_t)blockIdx.z * M * YS + goff;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < NI; ++ni)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          int m = m0 + wm * WTM + mi * 16 + (lane >> 2) + h * 8;
          int n = n0 + wn * WTN + ni * 8 + (lane & 3) * 2;
          if (m < M && n < Kp)
            *reinterpret_cast<int2*>(wz + (size_t)m * YS + n) = make_int2(acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1]);
        }
    return;
  }

  // Epilogue: the int32 tile goes to smem, then each thread owns 4 channels of the tile (its
  // parameters in registers) over every THREADS / (BN / 4)-th row: conflict-free 16-byte smem reads,
  // coalesced 4-byte residual reads and int8 stores.
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
  constexpr int RCH = BN / 4;
  static_assert(THREADS % RCH == 0, "a thread's channels must be the same in every row");
  const int nl = (tid % RCH) * 4;
  // Channels are the layer's (group offset added); a grouped tile's columns past its group's K belong
  // to the next group and are not written (with one group the epilogue writes zeros up to Kp).
  if (G == 1 || n0 + nl < K)
    epilogue_rows(cs + nl, CS, tid / RCH, THREADS / RCH, BM, m0, M, goff + n0 + nl, G * K, EPI_ARGS);
}

// Sums the split-K partials (int32, exact) and applies the same epilogue; one thread per 4 channels
// of a row.
extern "C" __global__ void splitk_epilogue_s8(const int* __restrict__ wsp, int splits, int M, int K, EPI_DECL)
{
  const int Kp = (K + 15) & ~15, KC = (ldy + 3) / 4;
  int id = blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= M * KC) return;
  int m = id / KC, n = (id - m * KC) * 4;
  int4 a = make_int4(0, 0, 0, 0);
  for (int z = 0; z < splits; ++z) {
    const int4 t = *reinterpret_cast<const int4*>(wsp + ((size_t)z * M + m) * Kp + n);
    a.x += t.x; a.y += t.y; a.z += t.z; a.w += t.w;
  }
  epilogue_rows(reinterpret_cast<const int*>(&a), 0, 0, 1, 1, m, M, n, K, EPI_ARGS);
}

// float32 NCHW -> int8 NHWC with channel stride Cp: the reference's float32 rint(x / s), int8
// saturation, NaN -> 0. With S2D (C <= 4), the 2x2 space-to-depth of that: output pixel (i, j)
// holds channel (v * 2 + u) * C + c = x[n, c, 2i + v, 2j + u] (0 outside the image), which turns a
// stride-2 convolution on C channels into a stride-1 one on 4C (space_to_depth.space_to_depth_conv). One
// thread per 16 output channels of a pixel: one 16-byte store. S2D's C is a template argument so the
// channel -> (group, channel) split folds away; indices are 32-bit (tensors < 2**31 elements).
__device__ __forceinline__ u32 quant1(float x, float s) {
  const float v = rintf(x / s);
  return (u32)(v != v ? 0 : (int)fminf(fmaxf(v, -128.f), 127.f)) & 0xffu;
}
template <int S2D_C>
__device__ __forceinline__ void quant_pixel(const float* __restrict__ x, i8* __restrict__ y, int C, int H, int W,
                                            int n, int oh, int ow, int c16, int pix, int Cp, float s) {
  const int CT = S2D_C ? 4 * S2D_C : C;
  u32 out[4] = {0u, 0u, 0u, 0u};
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    const int ch = c16 * 16 + j;
    if (S2D_C && j >= CT) break;
    if (!S2D_C && ch >= CT) break;
    int c = ch, ih = oh, iw = ow, cc = C;
    if (S2D_C) {
      const int g = j / (S2D_C ? S2D_C : 1);
      c = j - g * (S2D_C ? S2D_C : 1); ih = 2 * oh + (g >> 1); iw = 2 * ow + (g & 1); cc = S2D_C;
    }
    if (ih >= H || iw >= W) continue;
    out[j >> 2] |= quant1(x[((n * cc + c) * H + ih) * W + iw], s) << (8 * (j & 3));
  }
  *reinterpret_cast<uint4*>(y + pix * Cp + c16 * 16) = make_uint4(out[0], out[1], out[2], out[3]);
}
// The S2D pixel when W is even (so 2 * ow + 1 < W and the pair's offset is even): each (v, c) is one
// 8-byte load of x[n, c, 2 * oh + v, 2 * ow .. 2 * ow + 1], so a warp reads 256 contiguous bytes a load
// where quant_pixel's single floats read every other one (the stem's input is the largest tensor read).
template <int C>
__device__ __forceinline__ void quant_pixel_s2d_pairs(const float* __restrict__ x, i8* __restrict__ y, int H, int W,
                                                      int n, int oh, int ow, int pix, int Cp, float s) {
  u32 out[4] = {0u, 0u, 0u, 0u};
#pragma unroll
  for (int v = 0; v < 2; ++v) {
    const int ih = 2 * oh + v;
    if (ih >= H || 2 * ow >= W) break;  // W is even: 2 * ow < W means 2 * ow + 1 < W too
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const float2 p = *reinterpret_cast<const float2*>(x + ((n * C + c) * H + ih) * W + 2 * ow);
      const int j0 = (v * 2) * C + c, j1 = (v * 2 + 1) * C + c;
      out[j0 >> 2] |= quant1(p.x, s) << (8 * (j0 & 3));
      out[j1 >> 2] |= quant1(p.y, s) << (8 * (j1 & 3));
    }
  }
  *reinterpret_cast<uint4*>(y + pix * Cp) = make_uint4(out[0], out[1], out[2], out[3]);
}
extern "C" __global__ void quant_nchw_s8(const float* __restrict__ x, i8* __restrict__ y, int N, int C, int H,
                                         int W, int OH, int OW, int Cp, float s, int s2d)
{
  const int CC = Cp / 16;
  const int id = blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= N * OH * OW * CC) return;
  const int c16 = id % CC, pix = id / CC;
  const int ow = pix % OW, oh = (pix / OW) % OH, n = pix / (OW * OH);
  if (s2d && (W & 1) == 0 && C == 3 && Cp == 16) {  // the RGB stem: the pair loads (Cp is 16, one vector a pixel)
    quant_pixel_s2d_pairs<3>(x, y, H, W, n, oh, ow, pix, Cp, s);
    return;
  }
  switch (s2d ? C : 0) {
    case 1: quant_pixel<1>(x, y, C, H, W, n, oh, ow, c16, pix, Cp, s); break;
    case 2: quant_pixel<2>(x, y, C, H, W, n, oh, ow, c16, pix, Cp, s); break;
    case 3: quant_pixel<3>(x, y, C, H, W, n, oh, ow, c16, pix, Cp, s); break;
    case 4: quant_pixel<4>(x, y, C, H, W, n, oh, ow, c16, pix, Cp, s); break;
    default: quant_pixel<0>(x, y, C, H, W, n, oh, ow, c16, pix, Cp, s);
  }
}

// INT8 max (mode 0) or average (mode 1) pooling, NHWC int8 with channel stride Cp (a multiple of
// 16); one thread per 16 channels of an output pixel. Average: the PDP's sum over the full window
// (padding counts as zeros) and two reciprocal multiplies, RECIP_W first (reference.int8.pooling).
// The average of an exact window sum: the PDP's two reciprocal multiplies with round-half-away
// shifts (width then height, backends.reference.int8.pooling), saturated to int8.
__device__ __forceinline__ i8 avg_pool_q8(int sum, int recip_w, int recip_h) {
  const i64 tw = rshift_round((i64)sum * recip_w, 16);
  return (i8)sat8(rshift_round(tw * recip_h, 16));
}

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
      oq[j] = avg_pool_q8(acc[j], recip_w, recip_h);
    }
  }
  *reinterpret_cast<uint4*>(y + (size_t)pix * Cp + c0) = ov;
}

// Global pooling (the window is the whole H x W image, no padding): a block per (image, VB channel
// vectors of 16), its 256 threads as VB vectors x 256 / VB pixel slices, each slice's pixels summed
// (or maxed) with four loads in flight, then a shared-memory tree over the slices. pool2d_s8's one
// thread per output vector would walk all H * W pixels alone (12544 dependent loads at 112 x 112).
// int32 sums are exact (H * W * 128 < 2**31) and addition is associative, so the result is
// pool2d_s8's bit for bit.
extern "C" __global__ void __launch_bounds__(256) global_pool_s8(const i8* __restrict__ x, i8* __restrict__ y,
    int HW, int Cp, int VB, int mode, int recip_w, int recip_h)
{
  __shared__ int red[256][17];  // a row per thread, padded against bank conflicts
  const int tid = threadIdx.x, cv = tid % VB, sl = tid / VB, slices = 256 / VB;
  const int c16 = blockIdx.x * VB + cv, n = blockIdx.y;
  const bool live = c16 * 16 < Cp;
  int acc[16];
#pragma unroll
  for (int j = 0; j < 16; ++j) acc[j] = mode == 0 ? -128 : 0;
  if (live) {
    const i8* px = x + (size_t)n * HW * Cp + c16 * 16;
#pragma unroll 4
    for (int i = sl; i < HW; i += slices) {
      const uint4 v = *reinterpret_cast<const uint4*>(px + (size_t)i * Cp);
      const i8* xv = reinterpret_cast<const i8*>(&v);
#pragma unroll
      for (int j = 0; j < 16; ++j) acc[j] = mode == 0 ? max(acc[j], (int)xv[j]) : acc[j] + xv[j];
    }
  }
#pragma unroll
  for (int j = 0; j < 16; ++j) red[tid][j] = acc[j];
  __syncthreads();
  for (int s = slices / 2; s > 0; s /= 2) {
    if (sl < s)
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const int o = red[tid + s * VB][j];
        red[tid][j] = mode == 0 ? max(red[tid][j], o) : red[tid][j] + o;
      }
    __syncthreads();
  }
  if (sl == 0 && live) {
    uint4 ov;
    i8* oq = reinterpret_cast<i8*>(&ov);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      oq[j] = mode == 0 ? (i8)red[tid][j] : avg_pool_q8(red[tid][j], recip_w, recip_h);
    }
    *reinterpret_cast<uint4*>(y + (size_t)n * Cp + c16 * 16) = ov;
  }
}
"""
