"""CUDA source of the streaming INT8 1x1 convolution: a persistent kernel for short reductions.

Why: a 1x1 convolution on 64-512 input channels is one to eight 64-byte k-tiles deep. The tile
kernel (``int8_src.conv_igemm_s8``) gives each CTA one output tile: it loads its A and B tiles,
multiplies, stages the int32 tile in shared memory and runs the epilogue, with nothing of its own
to overlap. The loads of one tile and the stores of another then overlap only across CTAs, and
every CTA loads its weights again. ResNet-50's stage-1 expansions ran at about a third of the
memory bandwidth that way. Measured on an H100, that was not what bound them: this kernel is
slower than the best tile on ResNet-50's 1x1 layers and faster on MobileNetV2's 24 -> 144
expansion (``bench/results/gpu_int8_stream_h100.json``); both write about the same int8 outputs
a second, so the per-output epilogue is the limit (GPU README, next steps for INT8).

Here a CTA keeps one column block of the weights (BN output channels x all Cp input channels)
resident in shared memory and walks the output tiles ``blockIdx.x, blockIdx.x + gridDim.x, ...``
(the grid fills the GPU once). The A tiles (BM pixels x Cp channels) go through a ring of
``STAGES`` buffers by ``cp.async``, issued ``STAGES - 1`` tiles ahead, so the next tiles' loads
are in flight while a tile is multiplied and its epilogue stores. Each warp runs the epilogue of
its own rows without a block barrier: its int32 accumulators go to a private scratch in shared
memory, where each lane takes 4 channels (their ``Epi4`` parameters in registers) and stores 4
int8 bytes a row, so a warp's stores and residual loads are contiguous. The accumulators are
staged whole before the parameters load, so the two never hold registers together (with both
live, ptxas took 210-230 registers a thread; staged, about 165, and 128 under the launch bound).

The arithmetic is the tile kernel's: the same k-tile layout and swizzle (``Igemm::swz``, 64-byte
rows), the same ``ldmatrix`` + ``mma.sync.m16n8k32`` step (``IgemmMmaSync``), exact int32 sums, and
the same epilogue functions (``sum4``, ``requant4``; a float or non-linear epilogue through
``epilogue_rows``), so every tactic gives the same integers.

Layouts as ``int8_src``: x NHWC int8 with channel stride Cp (a multiple of 16), w K x Cp int8,
res NHWC int8 with stride ldr, y int8 with stride ldy = Kp or float32 with stride ldy. 1x1, no
padding, any stride (the pixel of output row m is ``(n, p * sh, q * sw)``).
"""

from backends.gpu.kernels.int8_src import INT8_SRC

STREAM8_BODY = r"""
// A lane's integer epilogue: ROWS rows of its warp's scratch (row stride SCR), r0, r0 + rstep, ...,
// 4 channels at column n of each. Rows go in groups of 8 whose loads are all issued before the
// arithmetic, so a lane has 8 residual loads in flight rather than one.
template <bool RELU, bool RES, bool GEN, int ROWS>
__device__ __forceinline__ void stream_rows8(const int* scr, int SCR, int r0, int rstep, int m0, int M, int n,
                                             const Epi4& e, const i8* __restrict__ res, int ldr,
                                             i8* __restrict__ y, int ldy, int clipq) {
  constexpr int GROUP = ROWS < 8 ? ROWS : 8;
  static_assert(ROWS % GROUP == 0, "rows come in whole groups");
#pragma unroll 1
  for (int g = 0; g < ROWS; g += GROUP) {
    int4 t[GROUP];
    u32 rv[GROUP];
#pragma unroll
    for (int u = 0; u < GROUP; ++u) {
      const int r = r0 + (g + u) * rstep, m = m0 + r;
      t[u] = *reinterpret_cast<const int4*>(scr + r * SCR);
      rv[u] = RES && m < M ? __ldg(reinterpret_cast<const unsigned int*>(res + (size_t)m * ldr + n)) : 0u;
    }
#pragma unroll
    for (int u = 0; u < GROUP; ++u) {
      const int m = m0 + r0 + (g + u) * rstep;
      if (m >= M) break;
      const int a[4] = {t[u].x, t[u].y, t[u].z, t[u].w};
      int v[4];
      sum4<RES, GEN>(v, a, e, rv[u]);
      *reinterpret_cast<u32*>(y + (size_t)m * ldy + n) = requant4<RELU, GEN>(v, e, clipq);
    }
  }
}

template <int BM, int BN, int WM, int WN, int STAGES>
__global__ void __launch_bounds__(WM * WN * 32, 512 / (WM * WN * 32))
conv1x1_stream_s8(const i8* __restrict__ x, const i8* __restrict__ w, int N, int H, int W, int Cp, int K,
                  int P, int Q, int sh, int sw, int KT, EPI_DECL)
{
  typedef Igemm<IgemmS8, BM, BN, WM, WN, 2, 4> IG;  // the k-tile layout and the mma step (64-byte rows)
  constexpr int THREADS = IG::THREADS, WTM = IG::WTM, WTN = IG::WTN, MI = IG::MI, NI = IG::NI;
  constexpr int SCR = WTN + 4;  // scratch row (int32), padded against bank conflicts
  constexpr int RCH = WTN / 4, RPP = 32 / RCH;  // lanes per scratch row, rows per pass
  static_assert(STAGES >= 2, "the ring needs a buffer being filled and one being read");
  static_assert(32 % RCH == 0 && WTM % RPP == 0, "a warp's lanes must tile its scratch");
  extern __shared__ __align__(16) unsigned char smem_st8[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wm = warp / WN, wn = warp % WN;
  const int KB = KT * 64;  // bytes of a pixel's k-tiles
  i8* Bs = reinterpret_cast<i8*>(smem_st8);
  i8* As = Bs + BN * KB;
  int* scr = reinterpret_cast<int*>(As + STAGES * BM * KB) + warp * WTM * SCR;
  const int PQ = P * Q, M = N * PQ, MT = (M + BM - 1) / BM;
  const int n0 = blockIdx.y * BN, CH = KT * 4, cpc = Cp >> 4;  // chunks of a row, of them with data
  const bool dense = sh == 1 && sw == 1;

  // The weights of this column block, once (committed with the first A tile).
  for (int id = tid; id < BN * CH; id += THREADS) {
    const int row = id / CH, c = id - row * CH;
    const bool v = n0 + row < K && c < cpc;
    cp_async16(smem_addr(Bs + (c >> 2) * BN * 64 + IG::swz(row, c & 3)), w + (v ? (size_t)(n0 + row) * Cp + c * 16 : 0),
               v ? 16 : 0);
  }
  auto load_a = [&](int tile, int stage) {
    i8* as = As + stage * BM * KB;
    for (int id = tid; id < BM * CH; id += THREADS) {
      const int row = id / CH, c = id - row * CH, m = tile * BM + row;
      const bool v = m < M && c < cpc;
      size_t off = 0;
      if (v) {
        if (dense) {
          off = (size_t)m * Cp;
        } else {
          const int n = m / PQ, rem = m - n * PQ, p = rem / Q, q = rem - p * Q;
          off = ((size_t)(n * H + p * sh) * W + q * sw) * Cp;
        }
        off += c * 16;
      }
      cp_async16(smem_addr(as + (c >> 2) * BM * 64 + IG::swz(row, c & 3)), x + off, v ? 16 : 0);
    }
  };
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    const int tile = blockIdx.x + s * gridDim.x;
    if (tile < MT) load_a(tile, s);
    cp_async_commit();
  }

  // This lane's 4 channels of every tile (its parameters are loaded per tile, after the
  // accumulators are staged, so the two are never live together).
  const int nl = (lane % RCH) * 4, rl = lane / RCH;
  const int n = n0 + wn * WTN + nl;
  const bool live = n < ldy;
  i8* yq = reinterpret_cast<i8*>(y);

  for (int i = 0;; ++i) {
    const int tile = blockIdx.x + i * gridDim.x;
    if (tile >= MT) break;
    cp_async_wait<STAGES - 2>();  // this tile's group (and the weights') has landed
    __syncthreads();              // ... for every thread; and the buffer refilled next was read at i - 1
    {
      const int ahead = blockIdx.x + (i + STAGES - 1) * gridDim.x;
      if (ahead < MT) load_a(ahead, (i + STAGES - 1) % STAGES);
      cp_async_commit();
    }
    int acc[MI][NI][4];
#pragma unroll
    for (int a = 0; a < MI; ++a)
#pragma unroll
      for (int b = 0; b < NI; ++b)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[a][b][c] = 0;
    const i8* as = As + (i % STAGES) * BM * KB;
    for (int kt = 0; kt < KT; ++kt) IgemmMmaSync::run<IG>(acc, as + kt * BM * 64, Bs + kt * BN * 64);

    __syncwarp();  // the lanes have read the previous tile's scratch
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < NI; ++ni)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          *reinterpret_cast<int2*>(scr + (mi * 16 + (lane >> 2) + h * 8) * SCR + ni * 8 + (lane & 3) * 2) =
              make_int2(acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1]);
    __syncwarp();
    if (!live) continue;
    const int m0 = tile * BM + wm * WTM;  // this warp's first row
    if (sacc == nullptr) {
      Epi4 e;
      load_epi4(e, ep, (K + 15) & ~15, n, res != nullptr);
#define STREAM_CASE(R, S, T) \
  stream_rows8<R, S, T, WTM / RPP>(scr + nl, SCR, rl, RPP, m0, M, n, e, res, ldr, yq, ldy, clipq)
      EPI_DISPATCH(STREAM_CASE, flags & EPI_RELU, res != nullptr, flags & EPI_GEN);
#undef STREAM_CASE
    } else {  // a float output or a non-linear epilogue: this lane's WTM / RPP consecutive rows
      constexpr int ROWS = WTM / RPP;
      const int r0 = rl * ROWS;
      epilogue_rows(scr + r0 * SCR + nl, SCR, 0, 1, ROWS, m0 + r0, M, n, K, EPI_ARGS);
    }
  }
  cp_async_wait<0>();
}
"""

STREAM8_SRC = INT8_SRC + STREAM8_BODY
