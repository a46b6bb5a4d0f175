"""CUDA source of the INT8 depthwise convolution (groups == C == K, channel multiplier 1).

Bit for bit the reference's (``backends.reference.int8.convolution`` with ``groups == C``): per
channel, the int8 x int8 products of the R x S window summed in int32 (exact: |sum| <= R*S*128*128,
and the lowering keeps R*S*128*128 < 2**31, ``int8.MAX_KTOT``), then the tensor-core kernel's
epilogue (``int8_epi_src``, the same text, the same parameter rows from ``int8.device_params``).

One thread per 16 channels of one output pixel, the R x S taps in quads: per tap one 16-byte load of
the input (zero outside the image, which is the padding, and past the last tap), a byte transpose
(``__byte_perm``) that puts each channel's four taps in one word, and per channel one ``__dp4a``
against the weights, which are stored tap-quad-major for exactly that word; 16 int32 accumulators,
then four 4-channel epilogue groups and one 16-byte store (or 16 floats for a layer without an
output scale). Four multiply-adds per instruction instead of one, with two byte permutes per
channel instead of two byte extractions per product.

``dwconv_s8_tile`` takes stride-1 and stride-2, dilation-1 square windows of width 3, 5 or 7 (every depthwise
layers of MobileNet / EfficientNet-class networks): a block stages its input window with halo and
its weights in shared memory, and each thread sums QV output columns of one row for 4 channels,
so each input word is read from shared memory once per window row instead of from global memory
once per tap. Exact int32 sums make it bit-identical to ``dwconv_s8``.

Layouts (Cp = C rounded up to 16):
  x    NHWC int8, channel stride Cp, padded channels zero
  w    ceil(R*S / 4) x Cp x 4 int8: taps 4g..4g+3 of channel c as the 4 bytes at (g, c), tap
       index r * S + s; padded taps and channels zero (``int8_dw.pack_dw_weights8``)
  res  NHWC int8 (output grid), channel stride Cp (or null)
  y    int8 NHWC, channel stride Cp (channels C..Cp-1 written as zeros), or float32 NHWC with
       channel stride ldy (C <= ldy <= Cp) when ``sacc`` is not null (and, for a SiLU / hard-swish
       epilogue, which always has ``sacc``, when ``sout`` is 0)

No inline PTX here beyond the epilogue's; it and the two intrinsics have C++ fallbacks, so the same text also runs
on the CPU through ``tests/gpu/cuda_emu.py``.
"""

from backends.gpu.kernels.int8_epi_src import DP4_SRC, EPI8_SRC

DW8_SRC = r"""
typedef unsigned int u32;
""" + EPI8_SRC + DP4_SRC + r"""
// One 4-channel group of the epilogue: integer output (template flags) into 4 bytes.
template <bool RELU, bool RES, bool GEN>
__device__ __forceinline__ u32 dw_epi4(const int* a, const int* __restrict__ ep, int Kp, int n,
                                       const i8* __restrict__ res, size_t pix, int clipq) {
  Epi4 e;
  load_epi4(e, ep, Kp, n, RES);
  const u32 rv = RES ? *reinterpret_cast<const u32*>(res + pix * Kp + n) : 0u;
  int v[4];
  sum4<RES, GEN>(v, a, e, rv);
  return requant4<RELU, GEN>(v, e, clipq);
}

template <bool RELU, bool RES, bool GEN>
__device__ __forceinline__ void dw_store_q(const int* acc, const int* __restrict__ ep, int Kp, int c0,
                                           const i8* __restrict__ res, size_t pix, int clipq, i8* __restrict__ y) {
  u32 o[4];
#pragma unroll
  for (int g = 0; g < 4; ++g) o[g] = dw_epi4<RELU, RES, GEN>(acc + 4 * g, ep, Kp, c0 + 4 * g, res, pix, clipq);
  *reinterpret_cast<uint4*>(y + pix * Kp + c0) = make_uint4(o[0], o[1], o[2], o[3]);
}

extern "C" __global__ void __launch_bounds__(256) dwconv_s8(
    const i8* __restrict__ x, const i8* __restrict__ w, const int* __restrict__ ep, const i8* __restrict__ res,
    const double* __restrict__ sacc, void* __restrict__ y, int N, int H, int W, int C, int P, int Q, int R, int S,
    int sh, int sw, int ph, int pw, int dh, int dw, int ldy, int flags, int clipq, int has_clipf, float clipf,
    double sout) {
  const int Kp = (C + 15) & ~15, CC = Kp / 16;
  const int id = blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= N * P * Q * CC) return;
  const int c16 = id % CC, pix = id / CC;
  const int q = pix % Q, t = pix / Q, p = t % P, n = t / P;
  const int c0 = c16 * 16;
  int acc[16];
#pragma unroll
  for (int j = 0; j < 16; ++j) acc[j] = 0;
  const int taps = R * S;
  for (int t0 = 0; t0 < taps; t0 += 4) {
    u32 xs[4][4];  // [tap of the quad][4-channel word]; zero for a tap past R*S or outside the image
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int t = t0 + k, r = t / S, s = t - r * S;
      const int ih = p * sh - ph + r * dh, iw = q * sw - pw + s * dw;
      uint4 v = make_uint4(0u, 0u, 0u, 0u);
      if (t < taps && (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W)
        v = *reinterpret_cast<const uint4*>(x + ((size_t)(n * H + ih) * W + iw) * Kp + c0);
      xs[k][0] = v.x; xs[k][1] = v.y; xs[k][2] = v.z; xs[k][3] = v.w;
    }
    const uint4* wq = reinterpret_cast<const uint4*>(w + ((size_t)(t0 / 4) * Kp + c0) * 4);
#pragma unroll
    for (int i = 0; i < 4; ++i) {  // channels 4i..4i+3: transpose the 4 taps x 4 channels bytes
      const uint4 wv = wq[i];
      const u32 lo01 = bperm(xs[0][i], xs[1][i], 0x5140), lo23 = bperm(xs[2][i], xs[3][i], 0x5140);
      const u32 hi01 = bperm(xs[0][i], xs[1][i], 0x7362), hi23 = bperm(xs[2][i], xs[3][i], 0x7362);
      acc[4 * i + 0] = dp4(bperm(lo01, lo23, 0x5410), wv.x, acc[4 * i + 0]);
      acc[4 * i + 1] = dp4(bperm(lo01, lo23, 0x7632), wv.y, acc[4 * i + 1]);
      acc[4 * i + 2] = dp4(bperm(hi01, hi23, 0x5410), wv.z, acc[4 * i + 2]);
      acc[4 * i + 3] = dp4(bperm(hi01, hi23, 0x7632), wv.w, acc[4 * i + 3]);
    }
  }
  if (sacc != nullptr) {  // float output (no output scale) or a SiLU / hard-swish epilogue (flags & EPI_NL)
#pragma unroll
    for (int g = 0; g < 4; ++g) {
      const int nc = c0 + 4 * g;
      if (nc >= ldy) break;
      Epi4 e;
      load_epi4(e, ep, Kp, nc, res != nullptr);
      Nl4 nl;
      load_nl4(nl, sacc, nc, C, sout);
      const u32* r4 = res != nullptr ? reinterpret_cast<const u32*>(res + (size_t)pix * Kp + nc) : nullptr;
      store_fnl4(acc + 4 * g, e, r4, pix, nc, C, nl, sacc, flags, has_clipf, clipf, y, ldy, sout);
    }
    return;
  }
  i8* yq = reinterpret_cast<i8*>(y);
#define DW_CASE(A, B, D) dw_store_q<A, B, D>(acc, ep, Kp, c0, res, (size_t)pix, clipq, yq)
  EPI_DISPATCH(DW_CASE, flags & EPI_RELU, res != nullptr, flags & EPI_GEN);
#undef DW_CASE
}
// The tiled depthwise kernel for stride ST (1 or 2) in both directions, dilation 1 and a square
// S x S window (template arguments): a block covers ROWS output rows x DT8_STRIPS strips of QV
// columns x 32 channels of one image. It loads its input window with halo (zero outside the image:
// the padding) and the window's weights, sign-extended to int32, into shared memory once; each
// thread then sums QV output columns of one row for 4 channels, reading every input word of its
// rows once ((QV - 1) * ST + S words a window row instead of QV * S). The sums are exact int32, so
// their order does not matter: the result is ``dwconv_s8``'s bit for bit, with the same epilogue.
#define DT8_STRIPS 2
#define DT8_QUADS 8  // 4-channel words a block covers (32 channels)
__device__ __forceinline__ int sx8(u32 v, int k) { return (int)(signed char)(v >> (8 * k)); }

template <bool RELU, bool RES, bool GEN, int QV>
__device__ __forceinline__ void dwt_store_q(const int (*a)[4], const int* __restrict__ ep, int Kp, int c,
                                            const i8* __restrict__ res, size_t pix0, int cols, int clipq,
                                            i8* __restrict__ y) {
  Epi4 e;
  load_epi4(e, ep, Kp, c, RES);
  u32 rv[QV];
#pragma unroll
  for (int i = 0; i < QV; ++i)
    rv[i] = RES && i < cols ? *reinterpret_cast<const u32*>(res + (pix0 + i) * Kp + c) : 0u;
#pragma unroll
  for (int i = 0; i < QV; ++i) {
    if (i >= cols) break;
    int v[4];
    sum4<RES, GEN>(v, a[i], e, rv[i]);
    *reinterpret_cast<u32*>(y + (pix0 + i) * Kp + c) = requant4<RELU, GEN>(v, e, clipq);
  }
}

// NL: the instance for a float output or a SiLU / hard-swish epilogue (``sacc`` set), else the
// integer epilogue's; apart, the integer instance needs 96 registers at QV = 8 instead of 108, which
// fits five 128-thread blocks an SM instead of four (nvcc 13, sm_90).
template <int S, int ST, int QV, int ROWS, bool NL>
__global__ void __launch_bounds__(DT8_QUADS * DT8_STRIPS * ROWS) dwconv_s8_tile(
    const i8* __restrict__ x, const i8* __restrict__ w, const int* __restrict__ ep, const i8* __restrict__ res,
    const double* __restrict__ sacc, void* __restrict__ y, int H, int W, int C, int P, int Q, int ph, int pw,
    int tiles_q, int tiles_p, int ldy, int flags, int clipq, int has_clipf, float clipf, double sout) {
  constexpr int TW = DT8_STRIPS * QV, IW = (TW - 1) * ST + S, IH = (ROWS - 1) * ST + S;
  // u32 words a tile row, padded so that the four rows a warp reads (ST rows apart) fall in distinct
  // banks: ST * ROWW is an odd multiple of 8 words modulo 32
  constexpr int ROWW = ST == 1 ? (IW % 2 ? IW : IW + 1) * DT8_QUADS : IW * DT8_QUADS + 4;
  __shared__ __align__(16) u32 tile[IH * ROWW];
  __shared__ int4 wt[S * S][DT8_QUADS];
  const int Kp = (C + 15) & ~15, c0 = blockIdx.y * (4 * DT8_QUADS);
  const int tq = blockIdx.x % tiles_q, tp = (blockIdx.x / tiles_q) % tiles_p, n = blockIdx.x / (tiles_q * tiles_p);
  const int p0 = tp * ROWS, q0 = tq * TW, ih0 = p0 * ST - ph, iw0 = q0 * ST - pw;
  for (int v = threadIdx.x; v < IH * IW * 2; v += blockDim.x) {  // 2 vectors of 16 channels a pixel
    const int cv = v & 1, px = v >> 1, r = px / IW, col = px - r * IW;
    const int ih = ih0 + r, iw = iw0 + col, c = c0 + cv * 16;
    uint4 val = make_uint4(0u, 0u, 0u, 0u);
    if ((unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W && c < Kp)
      val = *reinterpret_cast<const uint4*>(x + ((size_t)(n * H + ih) * W + iw) * Kp + c);
    *reinterpret_cast<uint4*>(tile + r * ROWW + col * DT8_QUADS + cv * 4) = val;
  }
  for (int v = threadIdx.x; v < S * S * DT8_QUADS; v += blockDim.x) {  // tap-quad-major bytes -> int4
    const int qd = v % DT8_QUADS, tap = v / DT8_QUADS, c = c0 + 4 * qd;
    int4 f = make_int4(0, 0, 0, 0);
    if (c < Kp) {
      const i8* wp = w + ((size_t)(tap / 4) * Kp + c) * 4 + (tap & 3);
      f = make_int4(wp[0], wp[4], wp[8], wp[12]);
    }
    wt[tap][qd] = f;
  }
  __syncthreads();
  const int qd = threadIdx.x % DT8_QUADS, t = threadIdx.x / DT8_QUADS, row = t % ROWS, strip = t / ROWS;
  const int c = c0 + 4 * qd, p = p0 + row, qs = q0 + strip * QV;
  if (c >= Kp || p >= P || qs >= Q) return;
  int a[QV][4];
#pragma unroll
  for (int i = 0; i < QV; ++i) a[i][0] = a[i][1] = a[i][2] = a[i][3] = 0;
  for (int r = 0; r < S; ++r) {
    int4 wr[S];
#pragma unroll
    for (int s = 0; s < S; ++s) wr[s] = wt[r * S + s][qd];
    const u32* xr = tile + (row * ST + r) * ROWW + strip * QV * ST * DT8_QUADS + qd;
#pragma unroll
    for (int j = 0; j < (QV - 1) * ST + S; ++j) {
      const u32 xw = xr[j * DT8_QUADS];
      const int x0 = sx8(xw, 0), x1 = sx8(xw, 1), x2 = sx8(xw, 2), x3 = sx8(xw, 3);
#pragma unroll
      for (int i = 0; i < QV; ++i) {
        const int s = j - ST * i;  // the tap of output column qs + i that reads this column
        if (s >= 0 && s < S) {
          a[i][0] += x0 * wr[s].x; a[i][1] += x1 * wr[s].y; a[i][2] += x2 * wr[s].z; a[i][3] += x3 * wr[s].w;
        }
      }
    }
  }
  const int cols = min(QV, Q - qs);
  const size_t pix0 = ((size_t)n * P + p) * Q + qs;
  if (NL) {  // float output (no output scale) or a SiLU / hard-swish epilogue (flags & EPI_NL)
    if (c >= ldy) return;
    Epi4 e;
    load_epi4(e, ep, Kp, c, res != nullptr);
    Nl4 nl;
    load_nl4(nl, sacc, c, C, sout);
    // unrolled with a constant index: a runtime a[i] would put all QV x 4 sums in local memory, which
    // the compiler then writes after the mainloop on every path (128 bytes a thread at QV = 8)
#pragma unroll
    for (int i = 0; i < QV; ++i) {
      if (i >= cols) break;
      const u32* r4 = res != nullptr ? reinterpret_cast<const u32*>(res + (pix0 + i) * Kp + c) : nullptr;
      store_fnl4(a[i], e, r4, (int)(pix0 + i), c, C, nl, sacc, flags, has_clipf, clipf, y, ldy, sout);
    }
    return;
  }
  i8* yq = reinterpret_cast<i8*>(y);
#define DWT_CASE(A, B, D) dwt_store_q<A, B, D, QV>(a, ep, Kp, c, res, pix0, cols, clipq, yq)
  EPI_DISPATCH(DWT_CASE, flags & EPI_RELU, res != nullptr, flags & EPI_GEN);
#undef DWT_CASE
}
"""
