"""CUDA source of the INT8 pointwise convolution on CUDA cores (1x1, stride 1, one group, few input
channels), bit for bit the tensor-core kernel's integers.

Why a second kernel for a layer the tiles already run: with 16-64 input channels a 1x1 layer is a
stream of bytes, not a GEMM. A tile CTA loads 128 pixels x Cp bytes (2-8 KB), runs one or two mma
steps, then its epilogue, and the loads of its next tile wait for that; at MobileNet / EfficientNet
widths the tiles reach a fifth of the memory bandwidth (``bench/gpu_int8_layers.py``). Here each
thread owns 4 output channels and keeps their weights (4 x Cp bytes) in registers for the whole
launch, issues the input loads of all its pixels before any arithmetic, and sums each pixel's
channels with ``__dp4a`` (4 products a word, exact in int32: |sum| <= Cp * 128 * 128). The threads
of one pixel read the same input row, which the L1 serves once a warp; a warp's stores cover
consecutive pixels, so they coalesce. The epilogue is the shared text (``int8_epi_src``), so the
outputs are the tiles' bit for bit.

Block: KG = Kp / 4 threads a pixel (one per 4-channel group) x PB = blockDim.x / KG pixel rows; a
block covers PB * PIX pixels, pixel ``blockIdx.x * PB * PIX + i * PB + row`` for i < PIX, so each of
the PIX load rounds of a warp reads consecutive pixels. CW = Cp / 4 words an input row is a
template argument (the unrolled dot products and the register arrays need it), PIX = 4 pixels a
thread where CW <= 8, else 2 (the register budget). NL, the second, picks the epilogue: the integer
one, or the float / non-linear one, so each instance holds only its own path's registers.

Layouts (Cp = C rounded up to 16, Kp = K rounded up to 16): x NHWC int8 with channel stride Cp; w the
tiles' K x 1 x 1 x Cp int8; res NHWC int8 with channel stride ldr (or null); y int8 with channel
stride ldy (channels K..Kp-1 written as zeros), or, with ``sacc`` set, a SiLU / hard-swish or float
output (``store_fnl4``).
"""

from backends.gpu.kernels.int8_epi_src import DP4_SRC, EPI8_SRC

PW8_WORDS = (4, 8, 12, 16)  # CW (Cp / 4) the kernel is compiled for: 16..64 input channels
PW8_THREADS = 256  # a block's thread budget (KG * PB <= PW8_THREADS)

PW8_SRC = r"""
typedef unsigned int u32;
""" + EPI8_SRC + DP4_SRC + r"""
template <int CW> struct PwPix { static constexpr int value = CW <= 8 ? 4 : 2; };

// Quantized store of one thread's pixels (template flags: each combination compiled on its own).
template <int CW, bool RELU, bool RES, bool GEN>
__device__ __forceinline__ void pw_store_q(const int (&acc)[PwPix<CW>::value][4], const Epi4& e, size_t p0, int PB,
                                           int M, int n, const i8* __restrict__ res, int ldr, int clipq,
                                           i8* __restrict__ y, int ldy) {
#pragma unroll
  for (int i = 0; i < PwPix<CW>::value; ++i) {
    const size_t p = p0 + (size_t)i * PB;
    if (p >= (size_t)M) break;
    const u32 rv = RES ? *reinterpret_cast<const u32*>(res + p * ldr + n) : 0u;
    int v[4];
    sum4<RES, GEN>(v, acc[i], e, rv);
    *reinterpret_cast<u32*>(y + p * ldy + n) = requant4<RELU, GEN>(v, e, clipq);
  }
}

// NL: the instance for a float output or a SiLU / hard-swish epilogue (``sacc`` set), else the
// integer epilogue's. Two instances because the float64 fallback of the non-linear path would
// otherwise set the register count of every layer (116-118 at CW <= 8, two blocks an SM); alone, the
// integer path fits 80 registers, three blocks an SM (nvcc 13, sm_90).
template <int CW, bool NL>
__global__ void __launch_bounds__(256, NL ? 2 : 3) pw_s8(const i8* __restrict__ x, const i8* __restrict__ w,
                                                        int M, int K, EPI_DECL) {
  constexpr int PIX = PwPix<CW>::value, CP = 4 * CW;
  const int Kp = (K + 15) & ~15, KG = Kp / 4, PB = blockDim.x / KG;
  const int tid = threadIdx.x, cg = tid % KG, row = tid / KG, n = cg * 4;
  if (row >= PB) return;
  const size_t p0 = (size_t)blockIdx.x * PB * PIX + row;

  u32 xw[PIX][CW];  // every input load first, so a thread has PIX * CW / 4 of them in flight
#pragma unroll
  for (int i = 0; i < PIX; ++i) {
    const size_t p = p0 + (size_t)i * PB;
#pragma unroll
    for (int q = 0; q < CW / 4; ++q) {
      const uint4 t = p < (size_t)M ? __ldg(reinterpret_cast<const uint4*>(x + p * CP) + q)
                                    : make_uint4(0u, 0u, 0u, 0u);
      xw[i][4 * q] = t.x; xw[i][4 * q + 1] = t.y; xw[i][4 * q + 2] = t.z; xw[i][4 * q + 3] = t.w;
    }
  }
  int acc[PIX][4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    u32 wr[CW];  // output channel n + j's weights (zero for a padded channel)
#pragma unroll
    for (int q = 0; q < CW / 4; ++q) {
      const uint4 t = n + j < K ? __ldg(reinterpret_cast<const uint4*>(w + (size_t)(n + j) * CP) + q)
                                : make_uint4(0u, 0u, 0u, 0u);
      wr[4 * q] = t.x; wr[4 * q + 1] = t.y; wr[4 * q + 2] = t.z; wr[4 * q + 3] = t.w;
    }
#pragma unroll
    for (int i = 0; i < PIX; ++i) {
      int a = 0;
#pragma unroll
      for (int c = 0; c < CW; ++c) a = dp4(xw[i][c], wr[c], a);
      acc[i][j] = a;
    }
  }
  if (n >= ldy) return;
  Epi4 e;
  load_epi4(e, ep, Kp, n, res != nullptr);
  if (NL) {
    Nl4 nl;
    load_nl4(nl, sacc, n, K, sout);
#pragma unroll
    for (int i = 0; i < PIX; ++i) {
      const size_t p = p0 + (size_t)i * PB;
      if (p >= (size_t)M) break;
      const u32* r4 = res != nullptr ? reinterpret_cast<const u32*>(res + p * ldr + n) : nullptr;
      store_fnl4(acc[i], e, r4, (int)p, n, K, nl, sacc, flags, has_clipf, clipf, y, ldy, sout);
    }
    return;
  }
  i8* yq = reinterpret_cast<i8*>(y);
#define PW_CASE(A, B, D) pw_store_q<CW, A, B, D>(acc, e, p0, PB, M, n, res, ldr, clipq, yq, ldy)
  EPI_DISPATCH(PW_CASE, flags & EPI_RELU, res != nullptr, flags & EPI_GEN);
#undef PW_CASE
}
"""
