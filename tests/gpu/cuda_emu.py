"""Run generated CUDA kernels on the CPU: a C++ shim, compiled by the host compiler, for tests without a GPU.

A block's threads (up to 1024, one-dimensional) are fibers (``ucontext``) on one OS thread: warp
shuffles and the warp-collective tensor-core operations (``cuda_emu_ptx``) are barriers of the
thread's warp and ``__syncthreads`` one of the block, at which a thread yields until every live
thread of its warp or block has arrived, so they keep their real meaning: warps may take different
paths between block barriers (a warp may skip products whose rows it does not own), and warps that
reach different sequences of barriers fail the launch as a deadlock. Blocks run one after another
(grid x fastest, then y, then z), so a ``__shared__`` array may be a static. Dynamic shared
memory (``extern __shared__``) is a fresh buffer per block, filled with fp16 NaNs so that a read of
a byte never written shows up in the results; a guard past its end catches overflowing writes.

Emulated: the fp16 conversions and packing, ``uint4``, ``uint2``, ``int4``, ``int2``, ``float2``, ``float4``,
``ulonglong2``, integer ``min``/``max``, ``__shfl_xor_sync``, ``__syncthreads``, ``__syncwarp``, ``__ldg``,
``__int_as_float``, ``__double2float_rn``, ``threadIdx``/``blockIdx``/``blockDim``/``gridDim``,
templates (launched by name expression, e.g. ``conv_igemm<64,64,2,2,4>``) and ``__launch_bounds__``.
Inline PTX does not compile here: ``#ifdef __CUDACC__`` keeps it from the host compiler, and the
PTX helpers of ``backends/gpu/kernels/common.py`` (cp.async, ldmatrix, mma.sync) are replaced by
``cuda_emu_ptx``'s emulations. The GPU tests run the same kernels through NVRTC.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from cuda_emu_ptx import PTX_SHIM, replace_ptx_helpers

SHIM = r"""
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>
#include <ucontext.h>
struct Dim3 { unsigned x = 1, y = 1, z = 1; };
static Dim3 threadIdx, blockIdx, blockDim, gridDim;  // set by the scheduler
#define __global__
#define __device__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
typedef unsigned short h16;
static inline float h2f(h16 h) { _Float16 f; std::memcpy(&f, &h, 2); return (float)f; }
static inline h16 f2h(float v) { _Float16 f = (_Float16)v; h16 h; std::memcpy(&h, &f, 2); return h; }
typedef unsigned int u32;
struct uint4 { u32 x, y, z, w; };
static inline uint4 make_uint4(u32 a, u32 b, u32 c, u32 d) { return uint4{a, b, c, d}; }
struct uint2 { u32 x, y; };
static inline uint2 make_uint2(u32 a, u32 b) { return uint2{a, b}; }
struct float2 { float x, y; };
static inline float2 make_float2(float a, float b) { return float2{a, b}; }
struct float4 { float x, y, z, w; };
static inline float4 make_float4(float a, float b, float c, float d) { return float4{a, b, c, d}; }
static inline u32 pack2(float a, float b) { return (u32)f2h(a) | ((u32)f2h(b) << 16); }
static inline float lo2f(u32 v) { return h2f((h16)(v & 0xffffu)); }
static inline float hi2f(u32 v) { return h2f((h16)(v >> 16)); }
static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline float sgnf(float v) { return v != v ? v : (float)((v > 0.f) - (v < 0.f)); }
template <class T> static inline T __ldg(const T* p) { return *p; }
// what the INT8 epilogue and depthwise kernels use besides
struct int4 { int x, y, z, w; };
struct int2 { int x, y; };
static inline int2 make_int2(int a, int b) { return int2{a, b}; }
static inline int4 make_int4(int a, int b, int c, int d) { return int4{a, b, c, d}; }
struct ulonglong2 { unsigned long long x, y; };
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline u32 min(u32 a, u32 b) { return a < b ? a : b; }
static inline float __double2float_rn(double d) { return (float)d; }
// The first error a launch meets (a bad shared-memory address, an overflow); read after the launch.
static char g_err[512];
static void emu_fail(const char* what, long long v) {
  if (!g_err[0]) std::snprintf(g_err, sizeof g_err, "%s (%lld) in block (%u,%u,%u) thread %u", what, v,
                               blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x);
}
// Threads are fibers; a barrier is a yield to the scheduler, which resumes every live thread of
// the block once per round, so no thread passes a barrier before all have reached it.
static const unsigned EMU_MAX_THREADS = 1024;
static ucontext_t g_sched, g_fib[EMU_MAX_THREADS];
static bool g_done[EMU_MAX_THREADS];
static unsigned g_cur;
static std::function<void()>* g_fn;
static float g_xchg[EMU_MAX_THREADS / 32][32];
static char* g_smem;  // this block's dynamic shared memory
static size_t g_smem_bytes;
// Barriers count arrivals: a thread that is not the last to arrive yields until its barrier's
// generation moves on. A warp-collective operation waits for the live lanes of its own warp only,
// so warps may take different paths between block barriers, as on the hardware. A round of the
// scheduler in which no thread arrived, passed a barrier or exited is a deadlock (warps that reach
// different sequences of barriers), reported as the launch's error.
static unsigned g_block_live, g_block_arrived, g_block_gen;
static unsigned g_warp_live[EMU_MAX_THREADS / 32], g_warp_arrived[EMU_MAX_THREADS / 32],
    g_warp_gen[EMU_MAX_THREADS / 32];
static unsigned long long g_progress;
static inline void emu_wait(unsigned* arrived, unsigned* gen, unsigned live) {
  const unsigned mine = *gen;
  ++g_progress;
  if (++*arrived == live) { *arrived = 0; ++*gen; return; }
  while (*gen == mine) swapcontext(&g_fib[g_cur], &g_sched);
}
static inline void emu_barrier() {  // a warp-collective operation: every live lane of this warp
  const unsigned w = threadIdx.x >> 5;
  emu_wait(&g_warp_arrived[w], &g_warp_gen[w], g_warp_live[w]);
}
static inline float __shfl_xor_sync(unsigned, float v, int sh) {
  const unsigned w = threadIdx.x >> 5, l = threadIdx.x & 31u;
  g_xchg[w][l] = v;
  emu_barrier();  // every lane has written
  const float r = g_xchg[w][l ^ (unsigned)sh];
  emu_barrier();  // every lane has read
  return r;
}
static inline void __syncthreads() { emu_wait(&g_block_arrived, &g_block_gen, g_block_live); }
static inline void __syncwarp(unsigned = 0xffffffffu) { emu_barrier(); }  // every live lane of the warp
static void emu_thread_start();  // per-thread state of the PTX emulation (cuda_emu_ptx)
static void emu_thread_end();
static void emu_thread() {
  emu_thread_start(); (*g_fn)(); emu_thread_end();
  g_done[g_cur] = true;
  ++g_progress;
  // an exited thread no longer counts: release a barrier that every remaining thread has reached
  const unsigned w = g_cur >> 5;
  if (--g_warp_live[w] > 0 && g_warp_arrived[w] == g_warp_live[w]) { g_warp_arrived[w] = 0; ++g_warp_gen[w]; }
  if (--g_block_live > 0 && g_block_arrived == g_block_live) { g_block_arrived = 0; ++g_block_gen; }
  swapcontext(&g_fib[g_cur], &g_sched);
}
static const size_t EMU_GUARD = 256;  // bytes past the dynamic shared memory that must stay untouched
static void emu_launch(Dim3 grid, unsigned threads, size_t smem, std::function<void()> fn) {
  g_err[0] = 0;
  if (threads == 0 || threads > EMU_MAX_THREADS) { emu_fail("bad block size", threads); return; }
  g_fn = &fn;
  blockDim = Dim3{threads, 1, 1};
  gridDim = grid;
  const size_t stack = 1 << 17;
  std::vector<char> stacks(threads * stack);
  std::vector<char> shared(smem + EMU_GUARD + 128);
  g_smem = shared.data() + (128 - (uintptr_t)shared.data() % 128) % 128;
  g_smem_bytes = smem;
  for (unsigned bz = 0; bz < grid.z; ++bz)
  for (unsigned by = 0; by < grid.y; ++by)
  for (unsigned bx = 0; bx < grid.x; ++bx) {
    blockIdx = Dim3{bx, by, bz};
    std::memset(g_smem, 0x7e, smem + EMU_GUARD);  // 0x7e7e: an fp16 NaN
    for (unsigned t = 0; t < threads; ++t) {
      getcontext(&g_fib[t]);
      g_fib[t].uc_stack.ss_sp = &stacks[t * stack];
      g_fib[t].uc_stack.ss_size = stack;
      g_fib[t].uc_link = nullptr;
      makecontext(&g_fib[t], emu_thread, 0);
      g_done[t] = false;
    }
    g_block_live = threads; g_block_arrived = 0;
    for (unsigned w = 0; w < (threads + 31) / 32; ++w) {
      g_warp_live[w] = threads - w * 32 < 32 ? threads - w * 32 : 32; g_warp_arrived[w] = 0;
    }
    for (bool live = true; live;) {
      const unsigned long long before = g_progress;
      live = false;
      for (unsigned t = 0; t < threads; ++t) {
        if (g_done[t]) continue;
        g_cur = t; threadIdx = Dim3{t, 0, 0};
        swapcontext(&g_sched, &g_fib[t]);
        live = live || !g_done[t];
      }
      if (live && g_progress == before) {
        emu_fail("deadlock: threads wait at barriers no other thread reaches", 0);
        return;
      }
    }
    for (size_t i = smem; i < smem + EMU_GUARD; ++i)
      if (g_smem[i] != 0x7e) { emu_fail("write past the dynamic shared memory, at byte", (long long)i); break; }
    if (g_err[0]) return;
  }
}
// A kernel called with its parameters read from ``args``: a pointer parameter is the pointer
// itself, a scalar one is read from the one-element array it points to.
template <class T> static T emu_arg(void* p) {
  if constexpr (std::is_pointer_v<T>) return (T)p; else return *(T*)p;
}
template <class... P, size_t... I> static void emu_call(void (*f)(P...), void** a, std::index_sequence<I...>) {
  f(emu_arg<P>(a[I])...);
}
template <class... P> static void emu_call(void (*f)(P...), void** a) {
  emu_call(f, a, std::index_sequence_for<P...>{});
}
// The parameter kinds of a kernel: p pointer, i int, I unsigned, q long long, f float, d double.
template <class T> static char emu_kind() {
  if constexpr (std::is_pointer_v<T>) return 'p';
  else if constexpr (std::is_same_v<T, int>) return 'i';
  else if constexpr (std::is_same_v<T, unsigned>) return 'I';
  else if constexpr (std::is_same_v<T, long long>) return 'q';
  else if constexpr (std::is_same_v<T, float>) return 'f';
  else if constexpr (std::is_same_v<T, double>) return 'd';
  else return '?';
}
template <class... P> static std::string emu_sig(void (*)(P...)) { return std::string{emu_kind<P>()...}; }
"""

_KERNEL = re.compile(r'extern "C" __global__ void (?:__launch_bounds__\([^)]*\) )?(\w+)\(')
# ``extern __shared__ T name[];``: the dynamic shared memory, which the host compiler cannot declare.
_DYNAMIC_SHARED = re.compile(r"extern __shared__ (?:__align__\(\d+\) )?([\w ]+?) (\w+)\[\];")
_SCALAR_KINDS = {np.dtype(np.int32): "i", np.dtype(np.uint32): "I", np.dtype(np.int64): "q",
                 np.dtype(np.float32): "f", np.dtype(np.float64): "d"}


@functools.cache
def compiler() -> str | None:
    """The host C++ compiler the emulator uses: g++ if it builds the shim (C++20, ``_Float16``,
    ``ucontext``), else None."""
    cxx = shutil.which("g++")
    if cxx is None:
        return None
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "probe.cpp"
        src.write_text(SHIM + PTX_SHIM + "int main() { return (int)h2f(f2h(1.f)) - 1; }\n")
        done = subprocess.run([cxx, "-std=c++20", "-fsyntax-only", str(src)], capture_output=True)
    return cxx if done.returncode == 0 else None


def _table(names: Sequence[str]) -> str:
    """The launch entry points: ``emu_run(i, ...)`` runs kernel ``names[i]``, ``emu_sig(i)`` gives
    its parameter kinds."""
    calls = "".join(f"  [](void** a) {{ emu_call(&{n}, a); }},\n" for n in names)
    sigs = "".join(f"  emu_sig(&{n}),\n" for n in names)
    return (f"static void (*const emu_kernels[])(void**) = {{\n{calls}}};\n"
            f'extern "C" const char* emu_sig(int i) {{\n  static const std::string s[] = {{\n{sigs}  }};\n'
            "  return s[i].c_str();\n}\n"
            'extern "C" const char* emu_run(int i, unsigned gx, unsigned gy, unsigned gz, unsigned threads,\n'
            "                               unsigned smem, void** args) {\n"
            "  emu_launch(Dim3{gx, gy, gz}, threads, smem, [=] { emu_kernels[i](args); });\n"
            "  return g_err;\n}\n")


class EmulatedModule:
    """The kernels of ``source`` compiled for the CPU: every ``extern "C"`` kernel, plus the
    template instances named in ``name_expressions`` (as NVRTC's, e.g. ``conv_igemm<64,64,2,2,4>``).
    ``launch`` runs the 1-D grids of the generated kernels, ``run`` any grid with CUDA's calling
    convention (what a CuPy launcher passes)."""

    def __init__(self, source: str, workdir: Path | None = None, name_expressions: Sequence[str] = (),
                 opt: str = "-O0") -> None:
        cxx = compiler()
        if cxx is None:
            raise RuntimeError("no host C++ compiler (g++ with C++20, _Float16, ucontext) for the CUDA emulator")
        self.names = _KERNEL.findall(source) + [n for n in name_expressions if n not in _KERNEL.findall(source)]
        body = _DYNAMIC_SHARED.sub(r"\1* const \2 = reinterpret_cast<\1*>(g_smem);", replace_ptx_helpers(source))
        code = SHIM + PTX_SHIM + body + _table(self.names)
        tag = hashlib.sha256((code + opt).encode()).hexdigest()[:16]
        root = workdir or Path(tempfile.mkdtemp(prefix="cuda_emu_"))
        src, lib = root / f"k{tag}.cpp", root / f"k{tag}.so"
        src.write_text(code)
        done = subprocess.run([cxx, "-std=c++20", opt, "-shared", "-fPIC", "-Wno-unknown-pragmas",
                               "-o", str(lib), str(src)], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"the emulated kernels do not compile ({src}):\n{done.stderr[-4000:]}")
        self._lib = ctypes.CDLL(str(lib))
        self._lib.emu_sig.restype = ctypes.c_char_p
        self._lib.emu_sig.argtypes = [ctypes.c_int]
        self._lib.emu_run.restype = ctypes.c_char_p
        self._lib.emu_run.argtypes = [ctypes.c_int, *[ctypes.c_uint] * 5, ctypes.POINTER(ctypes.c_void_p)]
        self._lib.emu_land_copies_at_issue.argtypes = [ctypes.c_int]

    def land_copies_at_issue(self, on: bool) -> None:
        """Land cp.async copies when issued (the earliest moment) instead of at their wait (the latest)."""
        self._lib.emu_land_copies_at_issue(int(on))

    def signature(self, name: str) -> str:
        """Kernel ``name``'s parameter kinds: p pointer, i int, I unsigned, q long long, f float, d double."""
        return self._lib.emu_sig(self.names.index(name)).decode()

    def _run(self, name: str, grid: tuple[int, int, int], threads: int, smem: int, arrays: list[Any]) -> None:
        if name not in self.names:
            raise KeyError(f"no kernel {name!r} in the module (name expressions: {self.names})")
        for a in arrays:
            assert a is None or a.flags.c_contiguous, "the emulator passes raw pointers of C-contiguous arrays"
        ptrs = (ctypes.c_void_p * max(1, len(arrays)))(*[None if a is None else a.ctypes.data for a in arrays])
        err = self._lib.emu_run(self.names.index(name), *map(int, grid), int(threads), int(smem), ptrs)
        if err:
            raise RuntimeError(f"emulated kernel {name}: {err.decode()}")

    def launch(self, name: str, threads: int, arrays: list[np.ndarray]) -> None:
        """Run kernel ``name`` on ceil(threads / 256) blocks of 256 over C-contiguous ``arrays`` (a
        scalar parameter as a one-element array of its type, a null pointer as None)."""
        self._run(name, (max(1, -(-threads // 256)), 1, 1), 256, 0, arrays)

    def run(self, name: str, grid: Sequence[int], block: int, args: Sequence[Any], shared_mem: int = 0) -> None:
        """Launch as CuPy would: ``args`` are arrays (pointers), NumPy scalars of the parameters'
        exact types and ``np.uint64(0)`` for a null pointer; a scalar of the wrong type is an error,
        not a misread."""
        if name not in self.names:
            raise KeyError(f"no kernel {name!r} in the module (name expressions: {self.names})")
        sig = self.signature(name)
        if len(sig) != len(args):
            raise TypeError(f"{name} takes {len(sig)} parameters, got {len(args)}")
        arrays: list[Any] = []
        for i, (kind, a) in enumerate(zip(sig, args)):
            if kind == "p":
                if isinstance(a, np.ndarray):
                    if not a.flags.c_contiguous:
                        raise TypeError(f"{name} parameter {i}: the emulator needs C-contiguous arrays")
                    arrays.append(a)
                elif isinstance(a, np.uint64) and a == 0:
                    arrays.append(None)
                else:
                    raise TypeError(f"{name} parameter {i} is a pointer, got {type(a).__name__}")
            elif isinstance(a, np.generic) and _SCALAR_KINDS.get(a.dtype) == kind:
                arrays.append(np.array([a]))
            else:
                raise TypeError(f"{name} parameter {i} has kind {kind!r}, got {type(a).__name__}")
        g = (tuple(grid) + (1, 1))[:3]
        self._run(name, g, block, shared_mem, arrays)

