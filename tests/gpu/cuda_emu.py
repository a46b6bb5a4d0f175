"""Run generated CUDA kernels on the CPU: a C++ shim, compiled by the host compiler, for tests without a GPU.

A block's 256 threads are 256 fibers (``ucontext``) on one OS thread: warp shuffles (an exchange
array between two barriers) and ``__syncthreads`` are barriers at which every live thread of the
block yields, so they keep their real meaning; blocks run one after another, so a ``__shared__``
array may be a static. (A barrier spans the block, not the warp: a warp that leaves early must
leave whole, as the generated kernels' warps do.) Only what the generated group kernels and the
INT8 depthwise kernel use is emulated (the fp16 conversions and packing, ``uint4``, ``int4``,
``ulonglong2``, integer ``min``/``max``, ``__shfl_xor_sync``, ``__syncthreads``, ``__int_as_float``,
``__double2float_rn``, ``blockDim``), and only sources without inline PTX compile here
(``#ifdef __CUDACC__`` keeps PTX from the host compiler). Scalar kernel parameters are passed as
one-element arrays. The GPU tests run the same kernels through NVRTC.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SHIM = r"""
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>
#include <ucontext.h>
struct Dim3 { unsigned x = 0, y = 0, z = 0; };
static Dim3 threadIdx, blockIdx;  // set by the scheduler before it resumes a thread
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static
typedef unsigned short h16;
static inline float h2f(h16 h) { _Float16 f; std::memcpy(&f, &h, 2); return (float)f; }
static inline h16 f2h(float v) { _Float16 f = (_Float16)v; h16 h; std::memcpy(&h, &f, 2); return h; }
typedef unsigned int u32;
struct uint4 { u32 x, y, z, w; };
static inline uint4 make_uint4(u32 a, u32 b, u32 c, u32 d) { return uint4{a, b, c, d}; }
static inline u32 pack2(float a, float b) { return (u32)f2h(a) | ((u32)f2h(b) << 16); }
static inline float lo2f(u32 v) { return h2f((h16)(v & 0xffffu)); }
static inline float hi2f(u32 v) { return h2f((h16)(v >> 16)); }
static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline float sgnf(float v) { return v != v ? v : (float)((v > 0.f) - (v < 0.f)); }
// what the INT8 epilogue and depthwise kernels use besides
struct int4 { int x, y, z, w; };
static inline int4 make_int4(int a, int b, int c, int d) { return int4{a, b, c, d}; }
struct ulonglong2 { unsigned long long x, y; };
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline u32 min(u32 a, u32 b) { return a < b ? a : b; }
static inline float __double2float_rn(double d) { return (float)d; }
static const Dim3 blockDim{256, 1, 1};
// Threads are fibers; a barrier is a yield to the scheduler, which resumes every live thread of
// the block once per round, so no thread passes a barrier before all have reached it.
static ucontext_t g_sched, g_fib[256];
static bool g_done[256];
static unsigned g_cur;
static std::function<void()>* g_fn;
static float g_xchg[8][32];
static inline void emu_barrier() { swapcontext(&g_fib[g_cur], &g_sched); }
static inline float __shfl_xor_sync(unsigned, float v, int sh) {
  const unsigned w = threadIdx.x >> 5, l = threadIdx.x & 31u;
  g_xchg[w][l] = v;
  emu_barrier();  // every lane has written
  const float r = g_xchg[w][l ^ (unsigned)sh];
  emu_barrier();  // every lane has read
  return r;
}
static inline void __syncthreads() { emu_barrier(); }
static void emu_thread() { (*g_fn)(); g_done[g_cur] = true; swapcontext(&g_fib[g_cur], &g_sched); }
template <class F> static void emu_launch(unsigned grid, F f) {
  std::function<void()> fn = f;
  g_fn = &fn;
  const size_t stack = 1 << 16;
  std::vector<char> stacks(256 * stack);
  for (unsigned b = 0; b < grid; ++b) {
    for (unsigned t = 0; t < 256; ++t) {
      getcontext(&g_fib[t]);
      g_fib[t].uc_stack.ss_sp = &stacks[t * stack];
      g_fib[t].uc_stack.ss_size = stack;
      g_fib[t].uc_link = nullptr;
      makecontext(&g_fib[t], emu_thread, 0);
      g_done[t] = false;
    }
    for (bool live = true; live;) {
      live = false;
      for (unsigned t = 0; t < 256; ++t) {
        if (g_done[t]) continue;
        g_cur = t; blockIdx.x = b; threadIdx.x = t;
        swapcontext(&g_sched, &g_fib[t]);
        live = live || !g_done[t];
      }
    }
  }
}
"""

_KERNEL = re.compile(r'extern "C" __global__ void __launch_bounds__\(256\) (\w+)\((.*?)\) \{', re.S)


@functools.cache
def compiler() -> str | None:
    """The host C++ compiler the emulator uses: g++ if it builds the shim (C++20, ``_Float16``,
    ``ucontext``), else None."""
    cxx = shutil.which("g++")
    if cxx is None:
        return None
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "probe.cpp"
        src.write_text(SHIM + "int main() { return (int)h2f(f2h(1.f)) - 1; }\n")
        done = subprocess.run([cxx, "-std=c++20", "-fsyntax-only", str(src)], capture_output=True)
    return cxx if done.returncode == 0 else None


def _arg(param: str, i: int) -> str:
    """The C++ expression of kernel parameter ``param`` from ``args[i]``: a pointer parameter is
    the pointer itself, a scalar one is read from the one-element array it points to."""
    if "*" in param:
        return f"({param.rsplit('*', 1)[0].strip()}*)args[{i}]"
    return f"*({param.rsplit(' ', 1)[0].strip()}*)args[{i}]"


def _wrapper(name: str, params: str) -> str:
    """``extern "C" void run_<name>(unsigned grid, void** args)`` launching the kernel."""
    casts = ", ".join(_arg(" ".join(p.split()), i) for i, p in enumerate(params.split(",")))
    return (f'extern "C" void run_{name}(unsigned grid, void** args) {{\n'
            f"  emu_launch(grid, [=] {{ {name}({casts}); }});\n}}\n")


class EmulatedModule:
    """The kernels of ``source`` compiled for the CPU; ``launch(name, threads, arrays)``."""

    def __init__(self, source: str, workdir: Path | None = None) -> None:
        cxx = compiler()
        if cxx is None:
            raise RuntimeError("no host C++ compiler (g++ with C++20, _Float16, ucontext) for the CUDA emulator")
        kernels = _KERNEL.findall(source)
        code = SHIM + source + "".join(_wrapper(n, p) for n, p in kernels)
        tag = hashlib.sha256(code.encode()).hexdigest()[:16]
        root = workdir or Path(tempfile.mkdtemp(prefix="cuda_emu_"))
        src, lib = root / f"k{tag}.cpp", root / f"k{tag}.so"
        src.write_text(code)
        done = subprocess.run([cxx, "-std=c++20", "-O0", "-shared", "-fPIC", "-Wno-unknown-pragmas",
                               "-o", str(lib), str(src)], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"the emulated kernels do not compile ({src}):\n{done.stderr[-4000:]}")
        self._lib = ctypes.CDLL(str(lib))
        self.names = [n for n, _ in kernels]

    def launch(self, name: str, threads: int, arrays: list[np.ndarray]) -> None:
        """Run kernel ``name`` on ceil(threads / 256) blocks of 256 over C-contiguous ``arrays`` (a
        scalar parameter as a one-element array of its type, a null pointer as None)."""
        for a in arrays:
            assert a is None or a.flags.c_contiguous, "the emulator passes raw pointers of C-contiguous arrays"
        ptrs = (ctypes.c_void_p * len(arrays))(*[None if a is None else a.ctypes.data for a in arrays])
        fn = getattr(self._lib, f"run_{name}")
        fn.argtypes = [ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p)]
        fn(ctypes.c_uint(max(1, -(-threads // 256))), ptrs)
