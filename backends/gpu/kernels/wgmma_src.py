"""CUDA source of the warpgroup-MMA compute step (Hopper, ``sm_90a``) for the implicit-GEMM mainloop.

``igemm_src``'s 128-byte k-tile rows (KC = 8) are already the layout that ``wgmma`` reads with the
128-byte swizzle: each row of A (an output pixel) and of B (an output channel) is 128 bytes of the
reduction, 8 rows make a 1024-byte atom, and the 16-byte chunk ``c`` of row ``r`` sits at chunk
``c ^ (r % 8)``. The swizzle is a function of the shared-memory address bits, so the stages start on
1024-byte boundaries (``ALIGN``). A shared-memory matrix descriptor then names the tile: start
address, stride 1024 bytes between 8-row groups, swizzle mode 128 B; the k16 (fp16) step ``kk`` of a
row starts ``32 * kk`` bytes in.

Warps: a warpgroup (4 warps, 128 threads) issues one ``wgmma.mma_async.m64nNk16`` per k-step for
64 rows of A and all BN columns, so a tile of BM rows runs BM / 64 warpgroups (WM = BM / 16 warps
in the mainloop's terms, WN = 1). A warp's accumulators are those of the mma.sync m16n8 fragment
for its 16 rows, column block after column block (PTX ISA, "wgmma D matrix fragment"), which is the
mainloop's ``acc[0][ni][4]`` with WTM = 16: the kernels' epilogues run unchanged.

Ordering: the copies of a tile are cp.async (generic proxy) writes, which ``wgmma`` (async proxy)
reads only after a ``fence.proxy.async`` by each writing thread and the barrier (``landed``). After
issuing a k-tile's MMAs a thread waits until at most ``INFLIGHT`` groups are pending; the mainloop
then loads ``INFLIGHT`` k-tiles less far ahead, so a stage is refilled only once every thread has
retired the MMAs that read it. The accumulators are fenced as asm operands so the compiler keeps
them in registers and never reads them while MMAs are pending.
"""

# n: the instruction's N (columns of B and of the accumulator tile); 4 * n / 8 = n / 2 floats per thread.
WGMMA_N = (64, 128, 256)


# Per operand type (the helper's name suffix): its accumulator's C type and asm constraint, the
# instruction's k and type suffix, and its trailing operands (fp16 takes scale-a, scale-b and the two
# transposes).
_WGMMA_TYPES = {
    "f16": ("float", "f", "k16.f32.f16.f16", "p, 1, 1, 0, 0"),
    "s8": ("int", "r", "k32.s32.s8.s8", "p"),
}


def _wgmma(kind: str, n: int) -> str:
    """``wgmma_{kind}_n{n}(d, a_desc, b_desc)``: one m64n{n} warpgroup MMA accumulating into d."""
    ctype, reg, shape, tail = _WGMMA_TYPES[kind]
    regs = n // 2
    outs = ", ".join(f"%{i}" for i in range(regs))
    operands = ", ".join(f'"+{reg}"(d[{i}])' for i in range(regs))
    return (
        f"__device__ __forceinline__ void wgmma_{kind}_n{n}({ctype}* d, unsigned long long a, "
        f"unsigned long long b) {{\n"
        f'  asm volatile("{{\\n.reg .pred p;\\nsetp.ne.b32 p, %{regs + 2}, 0;\\n"\n'
        f'               "wgmma.mma_async.sync.aligned.m64n{n}{shape} {{{outs}}}, %{regs}, %{regs + 1}, '
        f'{tail};\\n}}\\n"\n'
        f"               : {operands}\n"
        f'               : "l"(a), "l"(b), "r"(1));\n'
        "}\n")


WGMMA_SRC = "".join(_wgmma("f16", n) + _wgmma("s8", n) for n in WGMMA_N) + r"""
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" :: "n"(N) : "memory"); }
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Keeps a register's value where it is: no read or write of it moves across this point.
__device__ __forceinline__ void acc_fence(float& r) { asm volatile("" : "+f"(r) :: "memory"); }
__device__ __forceinline__ void acc_fence(int& r) { asm volatile("" : "+r"(r) :: "memory"); }

// Shared-memory matrix descriptor of a K-major tile in the 128-byte swizzle: start address >> 4
// (bits 0-13), leading byte offset 1 (unused by swizzled K-major layouts, bits 16-29), stride
// byte offset 1024 >> 4 between 8-row groups (bits 32-45), base offset 0, swizzle mode 1 = 128 B
// (bits 62-63).
__device__ __forceinline__ unsigned long long wgmma_desc_sw128(u32 addr) {
  return (unsigned long long)((addr & 0x3FFFFu) >> 4) | (1ull << 16) | (64ull << 32) | (1ull << 62);
}

// One k-step (32 bytes of every row) of the trait's type: fp16 m64nNk16 into f32, int8 m64nNk32
// into s32 (the traits are the kernels', each defined by its own module: WGMMA_F16_OP, WGMMA_S8_OP).
template <class Tr, int N> struct WgmmaOp;

// The warpgroup-MMA compute step (see igemm_src): INFL k-tiles of MMAs stay in flight.
template <int INFL>
struct IgemmWgmma {
  static constexpr int INFLIGHT = INFL, ALIGN = 1024;
  __device__ __forceinline__ static void landed() { fence_proxy_async(); }
  template <class IG>
  __device__ __forceinline__ static void run(typename IG::Acc (&acc)[IG::MI][IG::NI][4], const typename IG::T* as,
                                             const typename IG::T* bs) {
    static_assert(IG::CHUNKS == 8 && IG::WARPS_N == 1 && IG::WTM == 16 && IG::MI == 1 && IG::TILE_M % 64 == 0,
                  "a wgmma tile: 128-byte rows, one warp column, 16 rows per warp, 64 per warpgroup");
    typename IG::Acc* d = &acc[0][0][0];
    const u32 a0 = smem_addr(as) + (threadIdx.x >> 7) * 64 * 128, b0 = smem_addr(bs);
#pragma unroll
    for (int i = 0; i < IG::NI * 4; ++i) acc_fence(d[i]);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)  // four k16 steps of 32 bytes along the 128-byte rows
      WgmmaOp<typename IG::Trait, IG::TILE_N>::run(d, wgmma_desc_sw128(a0 + kk * 32), wgmma_desc_sw128(b0 + kk * 32));
    wgmma_commit();
    wgmma_wait<INFL>();
#pragma unroll
    for (int i = 0; i < IG::NI * 4; ++i) acc_fence(d[i]);
  }
  template <class IG> __device__ __forceinline__ static void drain(typename IG::Acc (&acc)[IG::MI][IG::NI][4]) {
    wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < IG::NI * 4; ++i) acc_fence((&acc[0][0][0])[i]);
  }
};
"""


def _wgmma_op(trait: str, kind: str) -> str:
    """``WgmmaOp<trait, N>``: the k-step of the kernels' trait type (appended after the kernel module
    that defines the trait)."""
    ctype = _WGMMA_TYPES[kind][0]
    return f"""
template <int N> struct WgmmaOp<{trait}, N> {{
  static_assert(N == 64 || N == 128 || N == 256, "wgmma tiles are 64, 128 or 256 columns wide");
  __device__ __forceinline__ static void run({ctype}* d, unsigned long long a, unsigned long long b) {{
    if constexpr (N == 256) wgmma_{kind}_n256(d, a, b);
    else if constexpr (N == 128) wgmma_{kind}_n128(d, a, b);
    else wgmma_{kind}_n64(d, a, b);
  }}
}};
"""


WGMMA_F16_OP = _wgmma_op("IgemmF16", "f16")
WGMMA_S8_OP = _wgmma_op("IgemmS8", "s8")
