"""CUDA source of the memory-bound kernels: one thread per 8 channels (a 16-byte vector) of output.

All tensors are NHWC fp16 with channel stride Cp = C rounded up to 8 unless named otherwise, and
each kernel writes zeros into the padded channels C..Cp-1.
"""

from backends.gpu.kernels.common import COMMON_SRC

DIRECT_SRC = COMMON_SRC + r"""
__device__ __forceinline__ void unpack8(const uint4& v, float* f) {
  const u32* p = reinterpret_cast<const u32*>(&v);
#pragma unroll
  for (int j = 0; j < 4; ++j) { f[2 * j] = lo2f(p[j]); f[2 * j + 1] = hi2f(p[j]); }
}
__device__ __forceinline__ uint4 pack8(const float* f, int c0, int C) {
  uint4 v; u32* p = reinterpret_cast<u32*>(&v);
#pragma unroll
  for (int j = 0; j < 4; ++j)
    p[j] = pack2(c0 + 2 * j < C ? f[2 * j] : 0.f, c0 + 2 * j + 1 < C ? f[2 * j + 1] : 0.f);
  return v;
}

// Depthwise conv (groups = C = K): w is R x S x Cp fp16, bias Cp fp32 (or null), res like y (or null).
extern "C" __global__ void depthwise_conv(const h16* __restrict__ x, const h16* __restrict__ w,
    const float* __restrict__ bias, const h16* __restrict__ res, h16* __restrict__ y,
    int N, int H, int W, int C, int P, int Q, int R, int S, int sh, int sw, int ph, int pw, int dh, int dw,
    int act, float alpha, float beta)
{
  const int Cp = (C + 7) & ~7, CC = Cp / 8;
  int id = blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= N * P * Q * CC) return;
  int c8 = id % CC, pix = id / CC;
  int q = pix % Q, t = pix / Q, p = t % P, n = t / P;
  int c0 = c8 * 8;
  float acc[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) acc[j] = 0.f;
  for (int r = 0; r < R; ++r) {
    int ih = p * sh - ph + r * dh;
    if ((unsigned)ih >= (unsigned)H) continue;
    for (int s = 0; s < S; ++s) {
      int iw = q * sw - pw + s * dw;
      if ((unsigned)iw >= (unsigned)W) continue;
      float xv[8], wv[8];
      unpack8(*reinterpret_cast<const uint4*>(x + ((size_t)(n * H + ih) * W + iw) * Cp + c0), xv);
      unpack8(*reinterpret_cast<const uint4*>(w + (r * S + s) * Cp + c0), wv);
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[j] = fmaf(xv[j], wv[j], acc[j]);
    }
  }
  float rv[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  if (res != nullptr) unpack8(*reinterpret_cast<const uint4*>(res + (size_t)pix * Cp + c0), rv);
#pragma unroll
  for (int j = 0; j < 8; ++j) acc[j] += (bias != nullptr ? bias[c0 + j] : 0.f) + rv[j];
  act8(acc, act, alpha, beta);
  *reinterpret_cast<uint4*>(y + (size_t)pix * Cp + c0) = pack8(acc, c0, C);
}

// The same depthwise conv with QV consecutive output columns per thread, for dilation 1 and an
// S-wide window at column stride SW (template constants): each input column of the row window is
// loaded once and serves every output that reads it, and each weight once per row instead of once
// per tap and output (QV = 4, 3x3, stride 1: 6.75 loads an output instead of 18). Per output the
// products are summed in the generic kernel's order (rows, then columns ascending) and a column
// outside the image contributes fmaf(0, w, acc) = acc, so the results are that kernel's bit for bit.
template <int S, int SW, int QV>
__global__ void __launch_bounds__(256) depthwise_conv_row(const h16* __restrict__ x, const h16* __restrict__ w,
    const float* __restrict__ bias, const h16* __restrict__ res, h16* __restrict__ y,
    int N, int H, int W, int C, int P, int Q, int R, int sh, int ph, int pw, int dh, int act, float alpha, float beta)
{
  constexpr int SPAN = (QV - 1) * SW + S;  // input columns of the row window
  const int Cp = (C + 7) & ~7, CC = Cp / 8, QB = (Q + QV - 1) / QV;
  const int id = blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= N * P * QB * CC) return;
  const int c8 = id % CC, t = id / CC, qb = t % QB, np_ = t / QB, p = np_ % P, n = np_ / P;
  const int c0 = c8 * 8, q0 = qb * QV, iw0 = q0 * SW - pw;
  float acc[QV][8];
#pragma unroll
  for (int i = 0; i < QV; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;
  for (int r = 0; r < R; ++r) {
    const int ih = p * sh - ph + r * dh;
    if ((unsigned)ih >= (unsigned)H) continue;
    float wv[S][8];
#pragma unroll
    for (int s = 0; s < S; ++s) unpack8(*reinterpret_cast<const uint4*>(w + (r * S + s) * Cp + c0), wv[s]);
    const h16* xr = x + (size_t)(n * H + ih) * W * Cp + c0;
#pragma unroll
    for (int j = 0; j < SPAN; ++j) {
      float xv[8];
      const int iw = iw0 + j;
      if ((unsigned)iw < (unsigned)W) unpack8(*reinterpret_cast<const uint4*>(xr + (size_t)iw * Cp), xv);
      else {
#pragma unroll
        for (int k = 0; k < 8; ++k) xv[k] = 0.f;
      }
#pragma unroll
      for (int i = 0; i < QV; ++i) {
        const int s = j - i * SW;  // the tap of output column q0 + i that reads this column
        if (s >= 0 && s < S) {
#pragma unroll
          for (int k = 0; k < 8; ++k) acc[i][k] = fmaf(xv[k], wv[s][k], acc[i][k]);
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < QV; ++i) {
    if (q0 + i >= Q) break;
    const size_t pix = (size_t)(n * P + p) * Q + q0 + i;
    float rv[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    if (res != nullptr) unpack8(*reinterpret_cast<const uint4*>(res + pix * Cp + c0), rv);
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] += (bias != nullptr ? bias[c0 + j] : 0.f) + rv[j];
    act8(acc[i], act, alpha, beta);
    *reinterpret_cast<uint4*>(y + pix * Cp + c0) = pack8(acc[i], c0, C);
  }
}

// act8's functions for a pair of values (its fast sigmoid and SiLU included), so the kernels that
// write two channels a thread round exactly as those that write eight.
__device__ __forceinline__ void act_pair(float& a, float& b, int act, float alpha, float beta) {
  if (act == 4) { a = fast_div(1.f, sigmoid_denominator(a)); b = fast_div(1.f, sigmoid_denominator(b)); }
  else if (act == 5) { a = fast_div(a, sigmoid_denominator(a)); b = fast_div(b, sigmoid_denominator(b)); }
  else if (act != 0) { a = act_fn(a, act, alpha, beta); b = act_fn(b, act, alpha, beta); }
}

// Depthwise conv at stride 1 and dilation 1 with an S x S window, from a shared-memory tile. A block
// computes ROWS output rows x DT_STRIPS * QV columns of 32 channels: it loads that tile's input
// window once (zeros outside the image and past Cp) and the weights as fp32, then each thread
// computes QV consecutive columns of one output row for one channel pair, every input column of
// its row window read from shared memory once and used by each output that covers it. The row
// kernel reads each input from global memory per thread and converts it per use; a 7x7 window
// made it issue-bound (0.24 TB/s on ConvNeXt's first stage, bench/results/gpu_depthwise_h100.json).
// Per output the products are summed in the generic kernel's order (rows, then columns ascending),
// and a tap outside the image adds fmaf(0, w, acc) = acc, so the results are that kernel's bit for bit.
// A warp is 16 channel pairs x 2 output rows; a tile row holds an odd number of 64-byte pixels, so
// the two rows' 64-byte reads fall in different bank halves.
#define DT_STRIPS 2
#define DT_PAIRS 16
template <int S, int QV, int ROWS>
__global__ void __launch_bounds__(DT_PAIRS * ROWS * DT_STRIPS) depthwise_conv_tile(
    const h16* __restrict__ x, const h16* __restrict__ w, const float* __restrict__ bias,
    const h16* __restrict__ res, h16* __restrict__ y, int H, int W, int C, int P, int Q, int ph, int pw,
    int tiles_q, int tiles_p, int act, float alpha, float beta)
{
  constexpr int TW = DT_STRIPS * QV, IW = TW + S - 1, IH = ROWS + S - 1, PIX = 2 * DT_PAIRS;
  constexpr int ROW = (IW % 2 == 0 ? IW + 1 : IW) * PIX;  // h16 per tile row
  __shared__ __align__(16) h16 tile[IH * ROW];
  __shared__ float2 wt[S * S][DT_PAIRS];
  const int Cp = (C + 7) & ~7, c0 = blockIdx.y * PIX;
  const int tq = blockIdx.x % tiles_q, tp = (blockIdx.x / tiles_q) % tiles_p, n = blockIdx.x / (tiles_q * tiles_p);
  const int p0 = tp * ROWS, q0 = tq * TW, ih0 = p0 - ph, iw0 = q0 - pw;
  for (int v = threadIdx.x; v < IH * IW * 4; v += blockDim.x) {  // 4 vectors of 8 channels a pixel
    const int cv = v & 3, px = v >> 2, r = px / IW, col = px - r * IW;
    const int ih = ih0 + r, iw = iw0 + col, c = c0 + cv * 8;
    uint4 val = make_uint4(0u, 0u, 0u, 0u);
    if ((unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W && c < Cp)
      val = *reinterpret_cast<const uint4*>(x + ((size_t)(n * H + ih) * W + iw) * Cp + c);
    *reinterpret_cast<uint4*>(tile + r * ROW + col * PIX + cv * 8) = val;
  }
  for (int v = threadIdx.x; v < S * S * DT_PAIRS; v += blockDim.x) {
    const int pr = v % DT_PAIRS, tap = v / DT_PAIRS, c = c0 + 2 * pr;
    float2 f = make_float2(0.f, 0.f);
    if (c < Cp) {
      const u32 h = *reinterpret_cast<const u32*>(w + tap * Cp + c);
      f = make_float2(lo2f(h), hi2f(h));
    }
    wt[tap][pr] = f;
  }
  __syncthreads();
  const int pr = threadIdx.x % DT_PAIRS, t = threadIdx.x / DT_PAIRS, row = t % ROWS, strip = t / ROWS;
  const int c = c0 + 2 * pr, p = p0 + row, qs = q0 + strip * QV;
  if (c >= Cp || p >= P) return;
  float a0[QV], a1[QV];
#pragma unroll
  for (int i = 0; i < QV; ++i) { a0[i] = 0.f; a1[i] = 0.f; }
  for (int r = 0; r < S; ++r) {
    float2 wr[S];
#pragma unroll
    for (int s = 0; s < S; ++s) wr[s] = wt[r * S + s][pr];
    const h16* xr = tile + (row + r) * ROW + strip * QV * PIX + 2 * pr;
#pragma unroll
    for (int j = 0; j < QV + S - 1; ++j) {
      const u32 h = *reinterpret_cast<const u32*>(xr + j * PIX);
      const float x0 = lo2f(h), x1 = hi2f(h);
#pragma unroll
      for (int i = 0; i < QV; ++i) {
        const int s = j - i;  // the tap of output column qs + i that reads this column
        if (s >= 0 && s < S) { a0[i] = fmaf(x0, wr[s].x, a0[i]); a1[i] = fmaf(x1, wr[s].y, a1[i]); }
      }
    }
  }
  const float b0 = bias != nullptr ? bias[c] : 0.f, b1 = bias != nullptr ? bias[c + 1] : 0.f;
#pragma unroll
  for (int i = 0; i < QV; ++i) {
    if (qs + i >= Q) break;
    const size_t at = ((size_t)(n * P + p) * Q + qs + i) * Cp + c;
    float r0 = 0.f, r1 = 0.f;
    if (res != nullptr) { const u32 h = *reinterpret_cast<const u32*>(res + at); r0 = lo2f(h); r1 = hi2f(h); }
    float v0 = a0[i] + (b0 + r0), v1 = a1[i] + (b1 + r1);
    act_pair(v0, v1, act, alpha, beta);
    *reinterpret_cast<u32*>(y + at) = pack2(c < C ? v0 : 0.f, c + 1 < C ? v1 : 0.f);
  }
}

// Max (mode 0) or average (mode 1) pooling; a global pool is R = H, S = W.
// Windows may run past the padded input (ceil mode); the average divides by the positions inside
// the input, or with count_pad by those inside the padded extent [-ph, H + ph_end).
extern "C" __global__ void pool2d(const h16* __restrict__ x, h16* __restrict__ y,
    int N, int H, int W, int C, int P, int Q, int R, int S, int sh, int sw, int ph, int pw,
    int ph_end, int pw_end, int dh, int dw, int mode, int count_pad)
{
  const int Cp = (C + 7) & ~7, CC = Cp / 8;
  int id = blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= N * P * Q * CC) return;
  int c8 = id % CC, pix = id / CC;
  int q = pix % Q, t = pix / Q, p = t % P, n = t / P;
  int c0 = c8 * 8;
  float acc[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) acc[j] = mode == 0 ? __int_as_float(0xff800000) : 0.f;
  int inside = 0, padded = 0;
  for (int r = 0; r < R; ++r) {
    int ih = p * sh - ph + r * dh;
    bool hin = (unsigned)ih < (unsigned)H, hpad = ih >= -ph && ih < H + ph_end;
    for (int s = 0; s < S; ++s) {
      int iw = q * sw - pw + s * dw;
      bool win = (unsigned)iw < (unsigned)W, wpad = iw >= -pw && iw < W + pw_end;
      padded += hpad && wpad;
      if (!(hin && win)) continue;
      ++inside;
      float xv[8];
      unpack8(*reinterpret_cast<const uint4*>(x + ((size_t)(n * H + ih) * W + iw) * Cp + c0), xv);
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[j] = mode == 0 ? fmaxf(acc[j], xv[j]) : acc[j] + xv[j];
    }
  }
  if (mode == 1) {
    float inv = 1.f / (float)max(count_pad ? padded : inside, 1);
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[j] *= inv;
  }
  *reinterpret_cast<uint4*>(y + (size_t)pix * Cp + c0) = pack8(acc, c0, C);
}

// Global average (mode 1) or max (mode 0) over H*W of an NHWC tensor: the squeeze of a
// squeeze-excitation block. Block (n, channel-vector group): CV threads across 16-byte channel
// vectors times PS (a power of two) threads across pixels, each summing pixels ps, ps + PS, ...
// with four loads in flight, then a shared-memory tree over PS. One thread per (n, c) looping
// over all H*W (the general pooling kernel) is latency-bound: 12544 dependent loads at 112x112.
// y[n * ldy + c] for c < ldy, zeros for c >= C.
extern "C" __global__ void __launch_bounds__(1024) global_pool(const h16* __restrict__ x, h16* __restrict__ y,
    int HW, int C, int CV, int CCB, int ldy, int mode)
{
  extern __shared__ float red[];  // [PS][CV][8]
  const int Cp = (C + 7) & ~7, CC = Cp / 8;
  const int PS = blockDim.x / CV;
  const int n = blockIdx.x / CCB, cb = blockIdx.x - n * CCB;
  const int cv = threadIdx.x % CV, ps = threadIdx.x / CV;
  const int c8 = cb * CV + cv;
  const bool ok = c8 < CC;
  const float init = mode == 0 ? __int_as_float(0xff800000) : 0.f;
  float a0[8], a1[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) { a0[j] = init; a1[j] = init; }
  if (ok) {
    const uint4* base = reinterpret_cast<const uint4*>(x + (size_t)n * HW * Cp) + c8;
    int p = ps;
    for (; p + 3 * PS < HW; p += 4 * PS) {
      uint4 v0 = base[(size_t)p * CC], v1 = base[(size_t)(p + PS) * CC];
      uint4 v2 = base[(size_t)(p + 2 * PS) * CC], v3 = base[(size_t)(p + 3 * PS) * CC];
      float f0[8], f1[8], f2[8], f3[8];
      unpack8(v0, f0); unpack8(v1, f1); unpack8(v2, f2); unpack8(v3, f3);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        if (mode == 0) { a0[j] = fmaxf(a0[j], fmaxf(f0[j], f2[j])); a1[j] = fmaxf(a1[j], fmaxf(f1[j], f3[j])); }
        else { a0[j] += f0[j] + f2[j]; a1[j] += f1[j] + f3[j]; }
      }
    }
    for (; p < HW; p += PS) {
      float f0[8];
      unpack8(base[(size_t)p * CC], f0);
#pragma unroll
      for (int j = 0; j < 8; ++j) a0[j] = mode == 0 ? fmaxf(a0[j], f0[j]) : a0[j] + f0[j];
    }
  }
  float* mine = red + threadIdx.x * 8;
#pragma unroll
  for (int j = 0; j < 8; ++j) mine[j] = mode == 0 ? fmaxf(a0[j], a1[j]) : a0[j] + a1[j];
  __syncthreads();
  for (int s = PS / 2; s > 0; s >>= 1) {
    if (ps < s) {
      const float* other = red + (threadIdx.x + s * CV) * 8;
#pragma unroll
      for (int j = 0; j < 8; ++j) mine[j] = mode == 0 ? fmaxf(mine[j], other[j]) : mine[j] + other[j];
    }
    __syncthreads();
  }
  if (ps == 0 && ok) {
    const float inv = mode == 0 ? 1.f : 1.f / (float)HW;
    const int c0 = c8 * 8;
#pragma unroll
    for (int j = 0; j < 8; ++j)
      if (c0 + j < ldy) y[(size_t)n * ldy + c0 + j] = f2h(c0 + j < C ? mine[j] * inv : 0.f);
  }
}

// Partition-boundary conversions. x: NCHW fp32 -> y: NHWC fp16 (Cp, zero-padded). Threads walk
// pixels fastest so the fp32 reads coalesce.
extern "C" __global__ void nchw_f32_to_nhwc_f16(const float* __restrict__ x, h16* __restrict__ y,
                                                int N, int C, int HW)
{
  const int Cp = (C + 7) & ~7, CC = Cp / 8;
  int id = blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= N * HW * CC) return;
  int hw = id % HW, t = id / HW, c8 = t % CC, n = t / CC;
  int c0 = c8 * 8;
  float v[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) v[j] = c0 + j < C ? x[((size_t)n * C + c0 + j) * HW + hw] : 0.f;
  *reinterpret_cast<uint4*>(y + ((size_t)n * HW + hw) * Cp + c0) = pack8(v, c0, C);
}

// x: NCHW fp32 -> y: its 2x2 space-to-depth as NHWC fp16, OH x OW pixels of 4C channels padded to
// round_up(4C, 8): channel (v * 2 + u) * C + c of pixel (i, j) = x[n, c, 2i + v, 2j + u], 0 outside
// the image. A stride-2 convolution on C <= 4 channels then runs as a stride-1 one over 4C
// (space_to_depth.space_to_depth_conv). One thread per 8 channels of an output pixel.
// RGB (C = 3, so 16 channels of which 12 live) with an even width: a thread per output pixel loads
// x[n, c, 2i + v, 2j .. 2j + 1] as one float2 for each (v, c), so a warp reads 256 contiguous bytes a
// load instead of every other float; the stem's input is the largest tensor the network reads.
__device__ __forceinline__ bool s2d_rgb_pairs(int C, int W) { return C == 3 && (W & 1) == 0; }
__device__ __forceinline__ void s2d_rgb_pixel(const float* __restrict__ x, h16* __restrict__ y, int H, int W,
                                              int OH, int OW, int pix) {
  const int ow = pix % OW, oh = (pix / OW) % OH, n = pix / (OW * OH);
  float v[16];
#pragma unroll
  for (int j = 0; j < 16; ++j) v[j] = 0.f;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int ih = 2 * oh + r;
    if (ih >= H || 2 * ow >= W) break;  // W is even: 2j < W means 2j + 1 < W too
#pragma unroll
    for (int c = 0; c < 3; ++c) {
      const float2 p = *reinterpret_cast<const float2*>(x + ((size_t)(n * 3 + c) * H + ih) * W + 2 * ow);
      v[2 * r * 3 + c] = p.x;
      v[(2 * r + 1) * 3 + c] = p.y;
    }
  }
  uint4* out = reinterpret_cast<uint4*>(y + (size_t)pix * 16);
  out[0] = pack8(v, 0, 12);
  out[1] = pack8(v + 8, 8, 12);
}

extern "C" __global__ void nchw_f32_to_s2d_f16(const float* __restrict__ x, h16* __restrict__ y,
                                               int N, int C, int H, int W, int OH, int OW)
{
  const int CT = 4 * C, Cp = (CT + 7) & ~7, CC = Cp / 8;
  const int id = blockIdx.x * blockDim.x + threadIdx.x;
  if (s2d_rgb_pairs(C, W)) {  // the RGB stem: a thread per pixel, 8-byte loads (direct.nchw_to_s2d)
    if (id < N * OH * OW) s2d_rgb_pixel(x, y, H, W, OH, OW, id);
    return;
  }
  if (id >= N * OH * OW * CC) return;
  const int c0 = (id % CC) * 8, pix = id / CC;
  const int ow = pix % OW, oh = (pix / OW) % OH, n = pix / (OW * OH);
  float v[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int ch = c0 + j, g = ch / C, c = ch - g * C, ih = 2 * oh + (g >> 1), iw = 2 * ow + (g & 1);
    v[j] = ch < CT && ih < H && iw < W ? x[((size_t)(n * C + c) * H + ih) * W + iw] : 0.f;
  }
  *reinterpret_cast<uint4*>(y + (size_t)pix * Cp + c0) = pack8(v, c0, CT);
}

extern "C" __global__ void nhwc_f16_to_nchw_f32(const h16* __restrict__ x, float* __restrict__ y,
                                                int N, int C, int HW)
{
  const int Cp = (C + 7) & ~7;
  int id = blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= N * C * HW) return;
  int hw = id % HW, t = id / HW, c = t % C, n = t / C;
  y[id] = h2f(x[((size_t)n * HW + hw) * Cp + c]);
}

// y = act(a + b) over NHWC tensors with channel stride Cp (b may be null: y = act(a)).
extern "C" __global__ void add_act(const h16* __restrict__ a, const h16* __restrict__ b, h16* __restrict__ y,
                                   int pixels, int C, int act, float alpha, float beta)
{
  const int Cp = (C + 7) & ~7, CC = Cp / 8;
  int id = blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= pixels * CC) return;
  int c0 = (id % CC) * 8;
  float av[8], bv[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  unpack8(reinterpret_cast<const uint4*>(a)[id], av);
  if (b != nullptr) unpack8(reinterpret_cast<const uint4*>(b)[id], bv);
#pragma unroll
  for (int j = 0; j < 8; ++j) av[j] += bv[j];
  act8(av, act, alpha, beta);
  reinterpret_cast<uint4*>(y)[id] = pack8(av, c0, C);
}
"""
