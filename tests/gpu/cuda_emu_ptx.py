"""The PTX helpers of ``backends/gpu/kernels/common.py`` (and the INT8 mma) emulated for ``cuda_emu``.

The kernel sources keep their inline PTX for NVRTC, byte for byte; ``replace_ptx_helpers`` cuts
the helpers' definitions out of the text the host compiler sees, and ``PTX_SHIM`` defines them:

* ``smem_addr``: a shared-memory address is the byte offset into the block's dynamic shared memory;
  ``cp.async`` and ``ldmatrix`` check that their 16 bytes lie inside it and are 16-byte aligned.
* ``cp.async.cg`` 16-byte copies with zero fill past ``src_bytes``, and commit/wait groups: a
  copy is deferred to the ``cp.async.wait_group`` that retires its group (the latest moment the
  hardware may land it), so a tile read before its wait reads stale bytes or the NaN fill.
* ``ldmatrix.sync.aligned.m8n8.x4.b16`` and ``mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32``
  / ``m16n8k32.row.col.s32.s8.s8.s32``: warp-collective, through an exchange array between
  barriers (every lane publishes its row address or fragments, a barrier, every lane assembles its
  registers from the PTX ISA fragment layouts). Exchanges alternate between two buffers, so one
  barrier per operation suffices: a lane can only overwrite a buffer after the next operation's
  barrier, which every lane reaches after reading it. fp16 products are exact in fp32 and summed
  in fp32; the int8 sums are exact (int32, wrapping).
"""

from __future__ import annotations

import re

# Helpers of COMMON_SRC / INT8_SRC the shim defines (the fp16 ones in cuda_emu.SHIM, the PTX ones here).
HELPERS = ("h2f", "f2h", "pack2", "lo2f", "hi2f", "smem_addr", "cp_async16", "cp_async_commit", "cp_async_wait",
           "ldmatrix_x4", "mma_16816", "mma_s8_16832")

PTX_SHIM = r"""
static inline u32 smem_addr(const void* p) {
  const long long off = (const char*)p - g_smem;
  if (off < 0 || off >= (long long)g_smem_bytes) emu_fail("smem_addr: not in the dynamic shared memory, offset", off);
  return (u32)off;
}
// 16 bytes of shared memory at ``a``, or null (and an error) if they are not inside it or misaligned.
static inline char* smem16(u32 a, const char* op) {
  if ((size_t)a + 16 > g_smem_bytes) { emu_fail(op, a); return nullptr; }
  if (a % 16) { emu_fail(op, a); return nullptr; }
  return g_smem + a;
}
struct EmuCopy { u32 dst; const char* src; int bytes; unsigned group; };
static std::vector<EmuCopy> g_copies[EMU_MAX_THREADS];  // each thread's copies not yet landed
static unsigned g_groups[EMU_MAX_THREADS];  // groups each thread has committed
static unsigned g_parity[EMU_MAX_THREADS];  // which exchange buffer a thread's next collective uses
static void emu_thread_start() {
  g_copies[threadIdx.x].clear(); g_groups[threadIdx.x] = 0; g_parity[threadIdx.x] = 0;
}
static void emu_thread_end() { g_copies[threadIdx.x].clear(); }
static inline void cp_async16(u32 dst, const void* src, int src_bytes) {
  if (src_bytes < 0 || src_bytes > 16) emu_fail("cp.async src-size outside 0..16", src_bytes);
  else if (src_bytes > 0 && (uintptr_t)src % 16)
    emu_fail("cp.async: misaligned global address", (long long)((uintptr_t)src % 16));
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
    char* d = smem16(c.dst, "cp.async: shared address outside the dynamic shared memory or misaligned");
    if (d == nullptr) continue;
    std::memcpy(d, c.src, c.bytes);
    std::memset(d + c.bytes, 0, 16 - c.bytes);
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
