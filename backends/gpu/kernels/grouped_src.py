"""CUDA source of the direct (CUDA-core) FP16 grouped convolution for small groups.

The tensor-core kernel needs groups of 8 channels and tiles at least 32 columns wide, so a group of
4 or 8 output channels leaves most of its MMAs empty. This kernel computes each group's few
outputs with fp32 FMAs instead, from a shared-memory tile. Tensors are NHWC fp16 with channels
padded to 8 (the backend's layout); weights are [G][R][S][Cg][Kg] fp16 (``grouped.pack_grouped_weights``).
"""

from backends.gpu.kernels.common import COMMON_SRC

GROUPED_SRC = COMMON_SRC + r"""
#define GD_ROWS 8    // output rows of a block; a warp's lanes 0-7 are its 8 rows
#define GD_STRIPS 4  // column strips of QV outputs: lane = row + 8 * strip

// Load CV fp16 channels (16 bytes for CV = 8, 8 bytes for CV = 4) as CV / 2 packed pairs.
template <int CV>
__device__ __forceinline__ void load_channels(const h16* p, u32* o) {
  if constexpr (CV == 8) {
    const uint4 v = *reinterpret_cast<const uint4*>(p);
    o[0] = v.x; o[1] = v.y; o[2] = v.z; o[3] = v.w;
  } else {
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    o[0] = v.x; o[1] = v.y;
  }
}

// KT output channels (KT = 4 or 8) as one 8- or 16-byte vector.
template <int KT>
__device__ __forceinline__ void load_out(const h16* p, float* f) {
  u32 h[KT / 2];
  load_channels<KT>(p, h);
#pragma unroll
  for (int j = 0; j < KT / 2; ++j) { f[2 * j] = lo2f(h[j]); f[2 * j + 1] = hi2f(h[j]); }
}
template <int KT>
__device__ __forceinline__ void store_out(h16* p, const float* f) {
  if constexpr (KT == 8) {
    *reinterpret_cast<uint4*>(p) = make_uint4(pack2(f[0], f[1]), pack2(f[2], f[3]), pack2(f[4], f[5]),
                                              pack2(f[6], f[7]));
  } else {
    *reinterpret_cast<uint2*>(p) = make_uint2(pack2(f[0], f[1]), pack2(f[2], f[3]));
  }
}

// The block's input window: IH rows x IW columns of its groups' NCH 16-byte channel chunks, zeros
// outside the image and past Cp, stored chunk-major ([chunk][row slot][IWP columns], a plane of
// PLANE pixels). With stride ST, input row i sits in slot (i % ST) * RH + i / ST, so the taps of
// output rows 0-7 (a quarter warp) read consecutive slots, IWP (odd) pixels apart: the eight
// 16-byte reads of a quarter warp fall in different banks at either stride.
template <int ST>
__device__ __forceinline__ void stage_input(const h16* __restrict__ x, uint4* tile, int n, int H, int W, int Cp,
                                            int ih0, int iw0, int c0, int IH, int IW, int IWP, int RH,
                                            int PLANE, int NCH) {
  for (int v = threadIdx.x; v < IH * IW * NCH; v += blockDim.x) {
    const int ch = v % NCH, px = v / NCH, ir = px / IW, ic = px - ir * IW;
    const int ih = ih0 + ir, iw = iw0 + ic, c = c0 + ch * 8;
    uint4 val = make_uint4(0u, 0u, 0u, 0u);
    if ((unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W && c < Cp)
      val = *reinterpret_cast<const uint4*>(x + ((size_t)(n * H + ih) * W + iw) * Cp + c);
    tile[ch * PLANE + ((ir % ST) * RH + ir / ST) * IWP + ic] = val;
  }
}

// The weights of the block's real groups (GBR of them) as fp32: [group][R][S][Cg][Kg].
__device__ __forceinline__ void stage_weights(const h16* __restrict__ w, float* wsm, int count) {
  for (int v = threadIdx.x; v < count / 8; v += blockDim.x) {
    const uint4 h = reinterpret_cast<const uint4*>(w)[v];
    reinterpret_cast<float4*>(wsm)[2 * v] = make_float4(lo2f(h.x), hi2f(h.x), lo2f(h.y), hi2f(h.y));
    reinterpret_cast<float4*>(wsm)[2 * v + 1] = make_float4(lo2f(h.z), hi2f(h.z), lo2f(h.w), hi2f(h.w));
  }
}

// Grouped convolution (groups of Cg -> Kg channels, Cg and Kg multiples of 4 up to 32), dilation 1,
// an R x S window (S a template constant) at stride ST both ways, fp32 accumulation. A block
// computes GD_ROWS output rows x GD_STRIPS * QV columns of GB whole groups: it stages the input
// window of the groups' GB * Cg channels (whole 16-byte vectors of the NHWC row, so two 4-channel
// groups share one) and their weights in shared memory, then each warp takes one group and KT of
// its output channels, each lane QV consecutive output columns of one row: per input channel it
// reads its row window's SPAN columns once (CV channels a load) and each weight once a tap (a
// broadcast: the warp's lanes share the group), and reuses every weight over its QV columns and
// every input over the taps and KT channels that read it. Warps of group slots past G (the
// padding channels K..Kp-1 of a layer whose K is not a multiple of 8) write zeros.
template <int CV, int KT, int S, int ST, int QV>
__global__ void __launch_bounds__(256) grouped_conv_tile(
    const h16* __restrict__ x, const h16* __restrict__ w, const float* __restrict__ bias,
    const h16* __restrict__ res, h16* __restrict__ y, int H, int W, int C, int K, int G, int Cg, int Kg,
    int P, int Q, int R, int ph, int pw, int tiles_q, int tiles_p, int GB, int act, float alpha, float beta)
{
  constexpr int TW = GD_STRIPS * QV, IW = (TW - 1) * ST + S, IWP = IW | 1, SPAN = (QV - 1) * ST + S;
  extern __shared__ __align__(16) uint4 gd_smem[];
  const int Cp = (C + 7) & ~7, Kp = (K + 7) & ~7, KS = Kg / KT, RSCK = R * S * Cg * Kg;
  const int IH = (GD_ROWS - 1) * ST + R, RH = (IH + ST - 1) / ST, PLANE = (ST * RH * IWP) | 1;
  float* wsm = reinterpret_cast<float*>(gd_smem);
  const h16* tile = reinterpret_cast<const h16*>(gd_smem + GB * RSCK / 4);
  const int tq = blockIdx.x % tiles_q, tp = (blockIdx.x / tiles_q) % tiles_p, n = blockIdx.x / (tiles_q * tiles_p);
  const int g0 = blockIdx.y * GB, p0 = tp * GD_ROWS, q0 = tq * TW;
  stage_input<ST>(x, gd_smem + GB * RSCK / 4, n, H, W, Cp, p0 * ST - ph, q0 * ST - pw, g0 * Cg, IH, IW, IWP, RH,
                  PLANE, GB * Cg / 8);
  if (g0 < G) stage_weights(w + (size_t)g0 * RSCK, wsm, min(GB, G - g0) * RSCK);
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, row = lane & 7, strip = lane >> 3;
  const int gl = warp / KS, k0 = (warp - gl * KS) * KT, g = g0 + gl, kc = g * Kg + k0;
  const int p = p0 + row, qs = q0 + strip * QV;
  float acc[QV][KT];
#pragma unroll
  for (int i = 0; i < QV; ++i)
#pragma unroll
    for (int k = 0; k < KT; ++k) acc[i][k] = 0.f;
  if (g < G) {
    for (int r = 0; r < R; ++r) {
      const int px = ((r % ST) * RH + row + r / ST) * IWP + strip * QV * ST;
      for (int cc = 0; cc < Cg; cc += CV) {
        const int cs = gl * Cg + cc;  // the chunk's first channel in the block's slab
        const h16* xp = tile + ((cs >> 3) * PLANE + px) * 8 + (cs & 7);
        u32 xv[SPAN][CV / 2];
#pragma unroll
        for (int j = 0; j < SPAN; ++j) load_channels<CV>(xp + j * 8, xv[j]);
        const float* wc = wsm + ((size_t)gl * R * S + r * S) * Cg * Kg + cc * Kg + k0;
#pragma unroll
        for (int c = 0; c < CV; ++c) {
          float xs[SPAN];
#pragma unroll
          for (int j = 0; j < SPAN; ++j) xs[j] = (c & 1) ? hi2f(xv[j][c >> 1]) : lo2f(xv[j][c >> 1]);
#pragma unroll
          for (int s = 0; s < S; ++s) {
            float wv[KT];
#pragma unroll
            for (int k = 0; k < KT; k += 4) {
              const float4 f = *reinterpret_cast<const float4*>(wc + (s * Cg + c) * Kg + k);
              wv[k] = f.x; wv[k + 1] = f.y; wv[k + 2] = f.z; wv[k + 3] = f.w;
            }
#pragma unroll
            for (int i = 0; i < QV; ++i)
#pragma unroll
              for (int k = 0; k < KT; ++k) acc[i][k] = fmaf(xs[i * ST + s], wv[k], acc[i][k]);
          }
        }
      }
    }
  } else if (kc >= Kp) {
    return;  // a group slot past the padded channels
  }
  if (p >= P) return;
  float b[KT];
#pragma unroll
  for (int k = 0; k < KT; ++k) b[k] = (g < G && bias != nullptr) ? bias[kc + k] : 0.f;
#pragma unroll
  for (int i = 0; i < QV; ++i) {
    if (qs + i >= Q) break;
    h16* out = y + ((size_t)(n * P + p) * Q + qs + i) * Kp + kc;
    float v[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, rv[KT];
    if (g < G) {
#pragma unroll
      for (int k = 0; k < KT; ++k) rv[k] = 0.f;
      if (res != nullptr) load_out<KT>(res + (out - y), rv);
#pragma unroll
      for (int k = 0; k < KT; ++k) v[k] = acc[i][k] + (b[k] + rv[k]);
      act8(v, act, alpha, beta);
    }
    store_out<KT>(out, v);
  }
}
"""
