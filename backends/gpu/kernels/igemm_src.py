"""CUDA source of the implicit-GEMM mainloop that the fp16 and the int8 convolution kernels share.

GEMM view (NHWC): M = N*P*Q output pixels, N = K output channels, and the reduction runs over
R*S*Cp with the channel fastest, so every 16-byte chunk of the reduction is one contiguous load
from both the input (an im2col gather done on the fly) and the KRSC weights.

A k-tile is one shared-memory row per output pixel (A) and per output channel (B) of ``KC``
chunks of 16 bytes: 64 bytes (KC = 4: 32 fp16 or 64 int8 channels) or 128 bytes (KC = 8), which
halves the barriers per reduction step. The chunk is XOR-swizzled by the row (a 128-byte line
holds two 64-byte rows or one 128-byte row), so the ``ldmatrix`` reads are free of bank conflicts.
One mainloop serves both types because an
m16n8k32 int8 fragment holds the same bytes of the same rows as an m16n8k16 fp16 fragment: the
loads, the swizzled addresses and the order of the mma operations are the same, and a traits type
(``Tr``) supplies only the element type, the accumulator type, the elements per chunk and the mma.

The kernel declares the accumulators and the dynamic shared memory (``As``: STAGES A tiles, then
STAGES B tiles) and keeps its own epilogue. A hook may rewrite the A chunks a thread loaded once
its cp.async group has landed, before the barrier that hands the tile to ``ldmatrix`` (the fp16
kernel's squeeze-excitation scale): while ``hook.active()``, each chunk at reduction index ``k``
that ``hook.takes(k)`` goes through ``hook(chunk, n * CS, k)``, n being its row's image.
``IgemmNoHook`` compiles the step away. The source follows ``COMMON_SRC`` (cp.async, ldmatrix).

Groups: ``C`` and ``K`` are one group's reduction channels and output channels, ``CS`` the element
stride between input pixels (all channels of the tensor; ``CS == C`` for one group). The caller
passes ``x`` and ``w`` already offset to its group and ``n0``, its first output channel within the
group, so the mainloop never reads blockIdx.y.

Split-K: block z reduces k-tiles [z*kps, (z+1)*kps). Offsets are 32-bit.

The compute step is a policy (``Step``): ``IgemmMmaSync`` (below: ldmatrix + mma.sync per warp, any
sm_80+) or ``wgmma_src``'s warpgroup MMA (sm_90a), which reads the same swizzled tiles straight from
shared memory. ``Step::INFLIGHT`` k-tiles of MMAs may still be reading their stage when the next
k-tile's loads are issued, so the loads run ``STAGES - 1 - INFLIGHT`` k-tiles ahead;
``Step::ALIGN`` is the byte alignment the tiles need (the 128-byte swizzle's 1024-byte atom).
"""

IGEMM_SRC = r"""
struct IgemmGeo { int N, H, W, C, K, P, Q, R, S, sh, sw, ph, pw, dh, dw, CS; };

// The default hook: the tiles are used as loaded.
struct IgemmNoHook {
  __device__ __forceinline__ static constexpr bool active() { return false; }
  __device__ __forceinline__ static constexpr bool takes(int) { return false; }
  template <class T> __device__ __forceinline__ void operator()(T*, int, int) const {}
};

// The portable compute step: each warp loads its fragments with ldmatrix and issues mma.sync.
struct IgemmMmaSync {
  static constexpr int INFLIGHT = 0, ALIGN = 16;  // the swizzle is relative to the tile: chunks align
  __device__ __forceinline__ static void landed() {}
  template <class IG>
  __device__ __forceinline__ static void run(typename IG::Acc (&acc)[IG::MI][IG::NI][4], const typename IG::T* as,
                                             const typename IG::T* bs) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wm = warp / IG::WARPS_N, wn = warp % IG::WARPS_N;
#pragma unroll
    for (int kk = 0; kk < IG::CHUNKS / 2; ++kk) {  // one mma k-step = 2 chunks = 32 bytes of a row
      u32 af[IG::MI][4], bf[IG::NI][2];
#pragma unroll
      for (int mi = 0; mi < IG::MI; ++mi) {
        int row = wm * IG::WTM + mi * 16 + (lane & 15);
        ldmatrix_x4(af[mi], smem_addr(as + IG::swz(row, kk * 2 + (lane >> 4))));
      }
#pragma unroll
      for (int nj = 0; nj < IG::NI / 2; ++nj) {
        int row = wn * IG::WTN + nj * 16 + (lane & 7) + ((lane >> 4) << 3);
        u32 t[4];
        ldmatrix_x4(t, smem_addr(bs + IG::swz(row, kk * 2 + ((lane >> 3) & 1))));
        bf[2 * nj][0] = t[0]; bf[2 * nj][1] = t[1]; bf[2 * nj + 1][0] = t[2]; bf[2 * nj + 1][1] = t[3];
      }
#pragma unroll
      for (int mi = 0; mi < IG::MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < IG::NI; ++ni) IG::Trait::mma(acc[mi][ni], af[mi], bf[ni]);
    }
  }
  template <class IG> __device__ __forceinline__ static void drain(typename IG::Acc (&)[IG::MI][IG::NI][4]) {}
};

template <class Tr, int BM, int BN, int WM, int WN, int STAGES, int KC = 4, class Step = IgemmMmaSync>
struct Igemm {
  typedef Tr Trait;
  static constexpr int TILE_M = BM, TILE_N = BN, WARPS_M = WM, WARPS_N = WN, CHUNKS = KC;  // for the Step
  typedef typename Tr::elem T;
  typedef typename Tr::acc Acc;
  static constexpr int THREADS = WM * WN * 32;
  static constexpr int WTM = BM / WM, WTN = BN / WN;
  static constexpr int MI = WTM / 16, NI = WTN / 8;
  static_assert(WTM % 16 == 0 && WTN % 16 == 0, "warp tile must be a multiple of 16x16");
  static_assert(KC == 4 || KC == 8, "a k-tile row is 4 or 8 chunks of 16 bytes");
  static constexpr int CH = Tr::CHUNK, BK = KC * CH;  // elements per 16-byte chunk and per row
  static constexpr int KC_SHIFT = KC == 8 ? 3 : 2;
  static constexpr int A_CH = BM * KC, B_CH = BN * KC;
  static constexpr int A_IT = (A_CH + THREADS - 1) / THREADS, B_IT = (B_CH + THREADS - 1) / THREADS;
  static constexpr int AHEAD = STAGES - 1 - Step::INFLIGHT;  // k-tiles loaded ahead of the one computed
  static_assert(AHEAD >= 1, "too few stages for the MMAs kept in flight");

  // Element offset of a chunk in smem: its column XOR-swizzled by the row, so ldmatrix is conflict-free.
  static __device__ __forceinline__ int swz(int row, int chunk) {
    return row * BK + (chunk ^ (KC == 8 ? (row & 7) : ((row >> 1) & 3))) * CH;
  }

  template <class Hook>
  static __device__ __forceinline__ void mainloop(Acc (&acc)[MI][NI][4], const T* x, const T* w, T* smem,
                                                  const IgemmGeo& g, int n0, int kps, const Hook& hook) {
    // The tiles start at the first Step::ALIGN-byte boundary of the dynamic shared memory.
    T* As = smem + ((Step::ALIGN - smem_addr(smem) % Step::ALIGN) % Step::ALIGN) / sizeof(T);
    T* Bs = As + STAGES * BM * BK;
    const int tid = threadIdx.x;
    const int PQ = g.P * g.Q, M = g.N * PQ;
    const int Ktot = g.R * g.S * g.C, KT = (Ktot + BK - 1) / BK;
    const int m0 = blockIdx.x * BM;
    const int kt0 = blockIdx.z * kps;
    const int nkt = max(min(KT, kt0 + kps) - kt0, 0);
    const int kc = tid & (KC - 1);  // this thread's 16-byte chunk column in every tile it loads

    // Per-row state: offset of pixel (n, ih0, iw0) and the window origin. Rows past M get an origin
    // far outside the image, so the per-tile bounds check rejects them without a separate flag.
    int a_off[A_IT], a_ih[A_IT], a_iw[A_IT], a_img[A_IT];
#pragma unroll
    for (int i = 0; i < A_IT; ++i) {
      int id = tid + i * THREADS, m = m0 + (id >> KC_SHIFT);
      bool ok = id < A_CH && m < M;
      int mm = ok ? m : 0;
      int n = mm / PQ, rem = mm - n * PQ, p = rem / g.Q, q = rem - p * g.Q;
      a_img[i] = n * g.CS;
      a_ih[i] = ok ? p * g.sh - g.ph : -(1 << 24);
      a_iw[i] = q * g.sw - g.pw;
      a_off[i] = ((n * g.H + a_ih[i]) * g.W + a_iw[i]) * g.CS;
    }
    int b_off[B_IT];
    bool b_ok[B_IT];
#pragma unroll
    for (int i = 0; i < B_IT; ++i) {
      int id = tid + i * THREADS, n = n0 + (id >> KC_SHIFT);
      b_ok[i] = id < B_CH && n < g.K;
      b_off[i] = b_ok[i] ? n * Ktot : 0;
    }
    // (r, s, c) of this thread's chunk in the next tile to load, advanced without divisions.
    int ld_k = kt0 * BK + kc * CH, ld_r, ld_s, ld_c;
    { int rs = ld_k / g.C; ld_c = ld_k - rs * g.C; ld_r = rs / g.S; ld_s = rs - ld_r * g.S; }

    auto load_tile = [&](int stage) {
      const bool kok = ld_k < Ktot;
      const int dr = ld_r * g.dh, ds = ld_s * g.dw, koff = (dr * g.W + ds) * g.CS + ld_c;
      T* as = As + stage * BM * BK;
      T* bs = Bs + stage * BN * BK;
#pragma unroll
      for (int i = 0; i < A_IT; ++i) {
        int id = tid + i * THREADS;
        if (A_CH % THREADS == 0 || id < A_CH) {
          int ih = a_ih[i] + dr, iw = a_iw[i] + ds;
          bool v = kok && (unsigned)ih < (unsigned)g.H && (unsigned)iw < (unsigned)g.W;
          cp_async16(smem_addr(as + swz(id >> KC_SHIFT, kc)), x + (v ? a_off[i] + koff : 0), v ? 16 : 0);
        }
      }
#pragma unroll
      for (int i = 0; i < B_IT; ++i) {
        int id = tid + i * THREADS;
        if (B_CH % THREADS == 0 || id < B_CH) {
          bool v = b_ok[i] && kok;
          cp_async16(smem_addr(bs + swz(id >> KC_SHIFT, kc)), w + (v ? b_off[i] + ld_k : 0), v ? 16 : 0);
        }
      }
      ld_k += BK;
      ld_c += BK;
      while (ld_c >= g.C) { ld_c -= g.C; if (++ld_s == g.S) { ld_s = 0; ++ld_r; } }
    };

#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NI; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] = Acc(0);

#pragma unroll
    for (int st = 0; st < AHEAD; ++st) {
      if (st < nkt) load_tile(st);
      cp_async_commit();
    }

    for (int it = 0; it < nkt; ++it) {
      cp_async_wait<AHEAD - 1>();
      if (hook.active()) {  // the A chunks this thread loaded into the tile that just landed
        const int k = (kt0 + it) * BK + kc * CH;  // their reduction index
        T* as = As + (it % STAGES) * BM * BK;
#pragma unroll
        for (int i = 0; i < A_IT; ++i) {
          int id = tid + i * THREADS;
          if ((A_CH % THREADS == 0 || id < A_CH) && hook.takes(k)) hook(as + swz(id >> KC_SHIFT, kc), a_img[i], k);
        }
      }
      Step::landed();
      __syncthreads();
      // The stage this load fills was last read by k-tile it + AHEAD - STAGES = it - 1 - INFLIGHT,
      // whose MMAs every thread retired before the barrier.
      int nxt = it + AHEAD;
      if (nxt < nkt) load_tile(nxt % STAGES);
      cp_async_commit();
      Step::template run<Igemm>(acc, As + (it % STAGES) * BM * BK, Bs + (it % STAGES) * BN * BK);
    }
    Step::template drain<Igemm>(acc);
    cp_async_wait<0>();
    __syncthreads();
  }
};
"""
