"""The PTX helpers of ``backends/gpu/kernels/common.py`` (and the INT8 mma) emulated for ``cuda_emu``.

The kernel sources keep their inline PTX for NVRTC, byte for byte; ``replace_ptx_helpers`` cuts
the helpers' definitions out of the text the host compiler sees, and ``PTX_SHIM`` defines them:

* ``smem_addr``: a shared-memory address is ``EMU_SMEM_BASE`` (128- but not 1024-byte aligned) plus
  the byte offset into the block's dynamic shared memory;
  ``cp.async`` and ``ldmatrix`` check that their 16 bytes lie inside it and are 16-byte aligned.
* ``cp.async.cg`` 16-byte copies with zero fill past ``src_bytes``, and commit/wait groups: a
  copy is deferred to the ``cp.async.wait_group`` that retires its group (the latest moment the
  hardware may land it), so a tile read before its wait reads stale bytes or the NaN fill;
  ``EmulatedModule.land_copies_at_issue`` lands them at issue instead (the earliest moment), so
  a copy into a stage that an in-flight MMA still reads changes that MMA's operands.
* ``ldmatrix.sync.aligned.m8n8.x4.b16`` (and its ``.trans``) and ``mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32``
  / ``m16n8k32.row.col.s32.s8.s8.s32``: warp-collective, through an exchange array between
  barriers (every lane publishes its row address or fragments, a barrier, every lane assembles its
  registers from the PTX ISA fragment layouts). Exchanges alternate between two buffers, so one
  barrier per operation suffices: a lane can only overwrite a buffer after the next operation's
  barrier, which every lane reaches after reading it. fp16 products are exact in fp32 and summed
  in fp32; the int8 sums are exact (int32, wrapping).
* ``wgmma.mma_async.m64nNk16.f32.f16.f16`` and ``m64nNk32.s32.s8.s8`` (both operands from shared
  memory, K-major, 128-byte swizzle) with ``wgmma.fence`` / ``commit_group`` / ``wait_group``: an MMA is issued by every
  thread of a warpgroup and runs at the ``wait_group`` that retires its group (the latest moment
  the hardware may finish it), so accumulators read early are stale. Each thread computes its own
  fragment (PTX ISA "wgmma D matrix fragment": warp w of the group holds rows 16w..16w+15 as
  mma.sync's m16n8 fragment, one per 8 columns). The operands are decoded from the descriptors
  (start address, 1024-byte stride between 8-row groups, the swizzle XORing address bits 4-6 with
  bits 7-9) and read both at issue and at retirement: a tile changed while its MMA was in flight,
  an MMA without a ``wgmma.fence`` since the last commit, a descriptor other than this layout or a
  group never waited for is an error.
"""

from __future__ import annotations

import re

# Helpers of COMMON_SRC / INT8_SRC the shim defines (the fp16 ones in cuda_emu.SHIM, the PTX ones here).
HELPERS = ("h2f", "f2h", "pack2", "lo2f", "hi2f", "smem_addr", "cp_async16", "cp_async_commit", "cp_async_wait",
           "ldmatrix_x4", "ldmatrix_x4_trans", "mma_16816", "mma_s8_16832",
           "wgmma_f16_n64", "wgmma_f16_n128", "wgmma_f16_n256",
           "wgmma_s8_n64", "wgmma_s8_n128", "wgmma_s8_n256", "wgmma_fence", "wgmma_commit", "wgmma_wait",
           "fence_proxy_async", "acc_fence")

PTX_SHIM = r"""
// The shared-memory address of the dynamic shared memory's first byte: 128-byte aligned as on the
// hardware, but not 1024-byte aligned, so a kernel that needs a larger alignment must make it.
static const u32 EMU_SMEM_BASE = 0x480;
static inline u32 smem_addr(const void* p) {
  const long long off = (const char*)p - g_smem;
  if (off < 0 || off >= (long long)g_smem_bytes) emu_fail("smem_addr: not in the dynamic shared memory, offset", off);
  return (u32)off + EMU_SMEM_BASE;
}
// 16 bytes of shared memory at ``a``, or null (and an error) if they are not inside it or misaligned.
static inline char* smem16(u32 a, const char* op) {
  if (a < EMU_SMEM_BASE || (size_t)(a - EMU_SMEM_BASE) + 16 > g_smem_bytes) { emu_fail(op, a); return nullptr; }
  if (a % 16) { emu_fail(op, a); return nullptr; }
  return g_smem + (a - EMU_SMEM_BASE);
}
struct EmuCopy { u32 dst; const char* src; int bytes; unsigned group; };
static std::vector<EmuCopy> g_copies[EMU_MAX_THREADS];  // each thread's copies not yet landed
static unsigned g_groups[EMU_MAX_THREADS];  // groups each thread has committed
static unsigned g_parity[EMU_MAX_THREADS];  // which exchange buffer a thread's next collective uses
struct EmuWgmma { void* d; bool s8; unsigned long long a, b; unsigned n, group; std::vector<unsigned char> ops; };
static std::vector<EmuWgmma> g_wgmma[EMU_MAX_THREADS];  // each thread's MMAs not yet retired
static unsigned g_wg_groups[EMU_MAX_THREADS];
static bool g_wg_fenced[EMU_MAX_THREADS];
static void emu_thread_start() {
  g_copies[threadIdx.x].clear(); g_groups[threadIdx.x] = 0; g_parity[threadIdx.x] = 0;
  g_wgmma[threadIdx.x].clear(); g_wg_groups[threadIdx.x] = 0; g_wg_fenced[threadIdx.x] = false;
}
static void emu_thread_end() {
  if (!g_wgmma[threadIdx.x].empty()) emu_fail("wgmma: an MMA was never retired by wgmma.wait_group", 0);
  g_copies[threadIdx.x].clear(); g_wgmma[threadIdx.x].clear();
}
// Where copies land: at the wait that retires their group (the default: catches reads before the
// wait), or at issue (catches a copy into a tile that an in-flight MMA still reads).
static bool g_land_at_issue = false;
extern "C" void emu_land_copies_at_issue(int on) { g_land_at_issue = on != 0; }
static void emu_copy(const EmuCopy& c) {
  char* d = smem16(c.dst, "cp.async: shared address outside the dynamic shared memory or misaligned");
  if (d == nullptr) return;
  std::memcpy(d, c.src, c.bytes);
  std::memset(d + c.bytes, 0, 16 - c.bytes);
}
static inline void cp_async16(u32 dst, const void* src, int src_bytes) {
  if (src_bytes < 0 || src_bytes > 16) emu_fail("cp.async src-size outside 0..16", src_bytes);
  else if (src_bytes > 0 && (uintptr_t)src % 16)
    emu_fail("cp.async: misaligned global address", (long long)((uintptr_t)src % 16));
  else if (g_land_at_issue) emu_copy(EmuCopy{dst, (const char*)src, src_bytes, 0});
  else g_copies[threadIdx.x].push_back(EmuCopy{dst, (const char*)src, src_bytes, g_groups[threadIdx.x]});
}
static inline void cp_async_commit() { ++g_groups[threadIdx.x]; }
// Lands every copy of the groups older than the newest ``pending`` committed ones, in issue order.
static void emu_land(unsigned pending) {
  std::vector<EmuCopy>& q = g_copies[threadIdx.x];
  const unsigned done = g_groups[threadIdx.x] > pending ? g_groups[threadIdx.x] - pending : 0;
  size_t k = 0;
  for (const EmuCopy& c : q) {
    if (c.group >= done) { q[k++] = c; continue; }
    emu_copy(c);
  }
  q.resize(k);
}
template <int N> static inline void cp_async_wait() { emu_land(N); }

static inline unsigned emu_collective() {  // this thread's exchange buffer for the next collective op
  const unsigned b = g_parity[threadIdx.x];
  g_parity[threadIdx.x] = b ^ 1u;
  return b;
}
static u32 g_ldm[2][EMU_MAX_THREADS];  // ldmatrix: each lane's row address
// ldmatrix .x4 (no .trans): lanes 8i..8i+7 address the 8 rows of matrix i; register i of lane l
// holds row l/4 of matrix i, columns 2(l%4) and 2(l%4)+1 (the lower column in the low half).
static inline void ldmatrix_x4(u32* r, u32 addr) {
  const unsigned b = emu_collective(), t = threadIdx.x, w = t & ~31u, l = t & 31u;
  g_ldm[b][t] = addr;
  emu_barrier();
  for (unsigned i = 0; i < 4; ++i) {
    const char* row = smem16(g_ldm[b][w + i * 8 + (l >> 2)],
                             "ldmatrix: row address outside the dynamic shared memory or misaligned");
    if (row != nullptr) std::memcpy(&r[i], row + (l & 3) * 4, 4); else r[i] = 0;
  }
}
// .trans: register i of lane l holds column l/4 of matrix i, rows 2(l%4) (low half) and 2(l%4)+1.
static inline void ldmatrix_x4_trans(u32* r, u32 addr) {
  const unsigned b = emu_collective(), t = threadIdx.x, w = t & ~31u, l = t & 31u;
  g_ldm[b][t] = addr;
  emu_barrier();
  for (unsigned i = 0; i < 4; ++i) {
    r[i] = 0;
    for (unsigned e = 0; e < 2; ++e) {
      const char* row = smem16(g_ldm[b][w + i * 8 + 2 * (l & 3) + e],
                               "ldmatrix: row address outside the dynamic shared memory or misaligned");
      h16 v = 0;
      if (row != nullptr) std::memcpy(&v, row + (l >> 2) * 2, 2);
      r[i] |= (u32)v << (16 * e);
    }
  }
}
static u32 g_fa[2][EMU_MAX_THREADS][4], g_fb[2][EMU_MAX_THREADS][2];  // mma: each lane's A and B registers
static inline unsigned emu_mma_exchange(const u32* a, const u32* b) {
  const unsigned p = emu_collective(), t = threadIdx.x;
  for (int i = 0; i < 4; ++i) g_fa[p][t][i] = a[i];
  for (int i = 0; i < 2; ++i) g_fb[p][t][i] = b[i];
  emu_barrier();
  return p;
}
// m16n8k16 fp16 (g = lane/4, q = lane%4; two halves per register, the lower index low):
//   A 16x16 row-major: a0 (g, 2q..2q+1), a1 (g+8, 2q..), a2 (g, 2q+8..), a3 (g+8, 2q+8..)
//   B 16x8 (k x n):    b0 (2q..2q+1, g), b1 (2q+8.., g)
//   C 16x8:            c0 c1 (g, 2q..2q+1), c2 c3 (g+8, 2q..2q+1)
static inline void mma_16816(float* c, const u32* a, const u32* b) {
  const unsigned p = emu_mma_exchange(a, b), w = threadIdx.x & ~31u, l = threadIdx.x & 31u;
  const unsigned g = l >> 2, q = l & 3;
  for (unsigned e = 0; e < 4; ++e) {
    const unsigned row = g + (e >> 1) * 8, col = 2 * q + (e & 1);
    float s = c[e];
    for (unsigned k = 0; k < 16; ++k) {
      const unsigned ka = (k & 7) >> 1, hi = k & 1;
      const u32 ra = g_fa[p][w + (row & 7) * 4 + ka][(k >> 3) * 2 + (row >> 3)];
      const u32 rb = g_fb[p][w + col * 4 + ka][k >> 3];
      s += (hi ? hi2f(ra) : lo2f(ra)) * (hi ? hi2f(rb) : lo2f(rb));
    }
    c[e] = s;
  }
}
// m16n8k32 int8: four int8 per register (the lowest index in the low byte), g and q as above:
//   A 16x32: a0 (g, 4q..4q+3), a1 (g+8, 4q..), a2 (g, 4q+16..), a3 (g+8, 4q+16..)
//   B 32x8:  b0 (4q..4q+3, g), b1 (4q+16.., g);  C as m16n8k16's, int32
static inline int emu_s8(u32 v, unsigned i) { return (int)(signed char)(v >> (8 * i)); }
static inline void mma_s8_16832(int* c, const u32* a, const u32* b) {
  const unsigned p = emu_mma_exchange(a, b), w = threadIdx.x & ~31u, l = threadIdx.x & 31u;
  const unsigned g = l >> 2, q = l & 3;
  for (unsigned e = 0; e < 4; ++e) {
    const unsigned row = g + (e >> 1) * 8, col = 2 * q + (e & 1);
    u32 s = (u32)c[e];  // int32 wraps
    for (unsigned k = 0; k < 32; ++k) {
      const unsigned ka = (k & 15) >> 2, byte = k & 3;
      const u32 ra = g_fa[p][w + (row & 7) * 4 + ka][(k >> 4) * 2 + (row >> 3)];
      const u32 rb = g_fb[p][w + col * 4 + ka][k >> 4];
      s += (u32)(emu_s8(ra, byte) * emu_s8(rb, byte));
    }
    c[e] = (int)s;
  }
}

// --- wgmma (sm_90a), see the module docstring.
static inline void wgmma_fence() { g_wg_fenced[threadIdx.x] = true; }
static inline void fence_proxy_async() {}
static inline void acc_fence(float&) {}
static inline void acc_fence(int&) {}
// The operand bytes this thread's fragment needs, read through the descriptors now: the 32 bytes
// of the k-step in each of its two rows of A, then in each of the n rows of B (K-major).
static bool emu_wgmma_operands(unsigned long long da, unsigned long long db, unsigned n,
                               std::vector<unsigned char>& out) {
  out.clear();
  const unsigned t = threadIdx.x, l = t & 31u, w4 = (t >> 5) & 3u;
  for (unsigned long long desc : {da, db}) {
    if ((desc >> 62) != 1 || ((desc >> 49) & 7) != 0 || ((desc >> 32) & 0x3FFF) != 64) {
      emu_fail("wgmma: descriptor is not K-major, 128-byte swizzle, 1024-byte stride, base offset 0",
               (long long)(desc >> 32));
      return false;
    }
  }
  auto row = [&](unsigned long long desc, unsigned r) {
    const u32 start = (u32)(desc & 0x3FFF) << 4;
    for (unsigned half = 0; half < 2; ++half) {  // two 16-byte chunks, each swizzled by address bits 7-9
      const u32 addr = start + (r >> 3) * 1024 + (r & 7) * 128 + half * 16;
      const u32 phys = addr ^ (((addr >> 7) & 7u) << 4);
      const char* chunk = smem16(phys, "wgmma: operand outside the dynamic shared memory or misaligned");
      for (unsigned i = 0; i < 16; ++i) out.push_back(chunk != nullptr ? (unsigned char)chunk[i] : 0);
    }
  };
  row(da, w4 * 16 + (l >> 2));
  row(da, w4 * 16 + (l >> 2) + 8);
  for (unsigned c = 0; c < n; ++c) row(db, c);
  return true;
}
static void emu_wgmma(void* d, bool s8, unsigned long long a, unsigned long long b, unsigned n) {
  const unsigned t = threadIdx.x;
  if (blockDim.x % 128) { emu_fail("wgmma: the block is not whole warpgroups", blockDim.x); return; }
  if (!g_wg_fenced[t]) { emu_fail("wgmma: no wgmma.fence before the MMA", 0); return; }
  EmuWgmma op{d, s8, a, b, n, g_wg_groups[t], {}};
  if (emu_wgmma_operands(a, b, n, op.ops)) g_wgmma[t].push_back(std::move(op));
}
#define EMU_WGMMA(NAME, T, S8, N) \
  static inline void NAME(T* d, unsigned long long a, unsigned long long b) { emu_wgmma(d, S8, a, b, N); }
EMU_WGMMA(wgmma_f16_n64, float, false, 64)
EMU_WGMMA(wgmma_f16_n128, float, false, 128)
EMU_WGMMA(wgmma_f16_n256, float, false, 256)
EMU_WGMMA(wgmma_s8_n64, int, true, 64)
EMU_WGMMA(wgmma_s8_n128, int, true, 128)
EMU_WGMMA(wgmma_s8_n256, int, true, 256)
static inline void wgmma_commit() { ++g_wg_groups[threadIdx.x]; g_wg_fenced[threadIdx.x] = false; }
// One accumulator of a retired MMA: row (e / 2) of this thread's two, column c; fp16 products are
// exact in fp32 and summed in fp32, int8 ones summed in wrapping int32.
static void emu_wgmma_dot(const EmuWgmma& op, const std::vector<unsigned char>& v, unsigned e, unsigned c) {
  const unsigned char* ar = &v[(e >> 1) * 32];
  const unsigned char* bc = &v[64 + c * 32];
  const unsigned slot = 4 * (c >> 3) + e;
  if (op.s8) {
    int* d = (int*)op.d;
    u32 s = (u32)d[slot];
    for (unsigned k = 0; k < 32; ++k) s += (u32)((int)(signed char)ar[k] * (int)(signed char)bc[k]);
    d[slot] = (int)s;
  } else {
    float* d = (float*)op.d;
    float s = d[slot];
    for (unsigned k = 0; k < 16; ++k) {
      h16 x, y; std::memcpy(&x, ar + 2 * k, 2); std::memcpy(&y, bc + 2 * k, 2);
      s += h2f(x) * h2f(y);
    }
    d[slot] = s;
  }
}
// Retires (runs, in issue order) the MMAs of every group but the newest ``pending``.
template <int N> static inline void wgmma_wait() {
  const unsigned t = threadIdx.x, q = threadIdx.x & 3u;
  const unsigned done = g_wg_groups[t] > (unsigned)N ? g_wg_groups[t] - N : 0;
  std::vector<EmuWgmma> ops, later;
  ops.swap(g_wgmma[t]);
  std::vector<unsigned char> now;
  for (EmuWgmma& op : ops) {
    if (op.group >= done) { later.push_back(std::move(op)); continue; }
    if (!emu_wgmma_operands(op.a, op.b, op.n, now)) continue;
    if (now != op.ops) {
      emu_fail("wgmma: a shared-memory operand changed while its MMA was in flight", op.group);
      continue;
    }
    for (unsigned j = 0; j < op.n / 8; ++j)
      for (unsigned e = 0; e < 4; ++e) emu_wgmma_dot(op, now, e, 8 * j + 2 * q + (e & 1));
  }
  g_wgmma[t].swap(later);
}
"""

_STRING = re.compile(r'"(?:\\.|[^"\\])*"')


def _definition_end(source: str, start: int) -> int:
    """The index just past the body (and its line end) of the function whose definition begins at
    ``start``; braces inside string literals (PTX operand lists) do not count."""
    depth, i = 0, start
    while i < len(source):
        ch = source[i]
        if ch == '"':
            i = _STRING.match(source, i).end()
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                end = source.find("\n", i)
                return len(source) if end < 0 else end + 1
        i += 1
    raise ValueError(f"unbalanced braces in the definition at offset {start}")


def replace_ptx_helpers(source: str) -> str:
    """``source`` without the definitions of ``HELPERS`` (the shim's own stand in for them)."""
    for name in HELPERS:
        pat = re.compile(rf"^(?:template <[^>\n]*> *)?__device__ __forceinline__ [\w \*]*\b{name}\(", re.M)
        while (m := pat.search(source)) is not None:
            source = source[:m.start()] + source[_definition_end(source, m.start()):]
    return source
