"""Run generated CUDA kernels on the CPU: a C++ shim, compiled by the host compiler, for tests without a GPU.

A block's 256 threads are 256 OS threads, so warp shuffles (an exchange array and a barrier per
warp) and ``__syncthreads`` (a barrier per block) have their real meaning; blocks run one after
another, so a ``__shared__`` array may be a static. Only what the generated group kernels use is
emulated (the fp16 conversions, ``__shfl_xor_sync``, ``__syncthreads``, ``__int_as_float``), and
only sources without inline PTX compile here. The GPU tests run the same kernels through NVRTC.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SHIM = r"""
#include <barrier>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>
struct Dim3 { unsigned x = 0, y = 0, z = 0; };
static thread_local Dim3 threadIdx, blockIdx;
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static
typedef unsigned short h16;
static inline float h2f(h16 h) { _Float16 f; std::memcpy(&f, &h, 2); return (float)f; }
static inline h16 f2h(float v) { _Float16 f = (_Float16)v; h16 h; std::memcpy(&h, &f, 2); return h; }
static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline float sgnf(float v) { return v != v ? v : (float)((v > 0.f) - (v < 0.f)); }
static std::barrier<>* g_warp_bar[8];
static std::barrier<>* g_block_bar;
static float g_xchg[8][32];
static inline float __shfl_xor_sync(unsigned, float v, int sh) {
  const unsigned w = threadIdx.x >> 5, l = threadIdx.x & 31u;
  g_xchg[w][l] = v;
  g_warp_bar[w]->arrive_and_wait();
  const float r = g_xchg[w][l ^ (unsigned)sh];
  g_warp_bar[w]->arrive_and_wait();
  return r;
}
static inline void __syncthreads() { g_block_bar->arrive_and_wait(); }
template <class F> static void emu_launch(unsigned grid, F f) {
  for (unsigned b = 0; b < grid; ++b) {
    std::barrier<> block(256);
    std::barrier<> w0(32), w1(32), w2(32), w3(32), w4(32), w5(32), w6(32), w7(32);
    std::barrier<>* ws[8] = {&w0, &w1, &w2, &w3, &w4, &w5, &w6, &w7};
    for (int i = 0; i < 8; ++i) g_warp_bar[i] = ws[i];
    g_block_bar = &block;
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < 256; ++t)
      threads.emplace_back([=] { blockIdx.x = b; threadIdx.x = t; f(); });
    for (auto& th : threads) th.join();
  }
}
"""

_KERNEL = re.compile(r'extern "C" __global__ void __launch_bounds__\(256\) (\w+)\((.*?)\) \{')


def compiler() -> str | None:
    """The host C++ compiler the emulator uses (None when there is none)."""
    return shutil.which("g++")


def _wrapper(name: str, params: str) -> str:
    """``extern "C" void run_<name>(unsigned grid, void** args)`` launching the kernel."""
    types = [p.rsplit("__restrict__", 1)[0].strip() for p in params.split(", ")]
    casts = ", ".join(f"({t})args[{i}]" for i, t in enumerate(types))
    return (f'extern "C" void run_{name}(unsigned grid, void** args) {{\n'
            f"  emu_launch(grid, [=] {{ {name}({casts}); }});\n}}\n")


class EmulatedModule:
    """The kernels of ``source`` compiled for the CPU; ``launch(name, threads, arrays)``."""

    def __init__(self, source: str, workdir: Path | None = None) -> None:
        cxx = compiler()
        if cxx is None:
            raise RuntimeError("no host C++ compiler (g++) for the CUDA emulator")
        kernels = _KERNEL.findall(source)
        code = SHIM + source + "".join(_wrapper(n, p) for n, p in kernels)
        tag = hashlib.sha256(code.encode()).hexdigest()[:16]
        root = workdir or Path(tempfile.mkdtemp(prefix="cuda_emu_"))
        src, lib = root / f"k{tag}.cpp", root / f"k{tag}.so"
        src.write_text(code)
        subprocess.run([cxx, "-std=c++20", "-O0", "-shared", "-fPIC", "-pthread", "-Wno-unknown-pragmas",
                        "-o", str(lib), str(src)], check=True, capture_output=True, text=True)
        self._lib = ctypes.CDLL(str(lib))
        self.names = [n for n, _ in kernels]

    def launch(self, name: str, threads: int, arrays: list[np.ndarray]) -> None:
        """Run kernel ``name`` on ceil(threads / 256) blocks of 256 over C-contiguous ``arrays``."""
        for a in arrays:
            assert a.flags.c_contiguous, "the emulator passes raw pointers of C-contiguous arrays"
        ptrs = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
        fn = getattr(self._lib, f"run_{name}")
        fn.argtypes = [ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p)]
        fn(ctypes.c_uint(max(1, -(-threads // 256))), ptrs)
