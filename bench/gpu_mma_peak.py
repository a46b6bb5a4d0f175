"""Peak rate of the tensor-core instructions the hetrt kernels use, on this GPU.

One kernel per instruction: every warp of 4 x SMs CTAs x 8 warps issues long runs of independent
``mma.sync`` (8 accumulator chains, operands in registers, no memory traffic), timed with CUDA
events. This is the ceiling of a ``mma.sync`` mainloop (fp16 m16n8k16 with fp32 accumulate, int8
m16n8k32 with int32 accumulate); the bench/gpu_kernels.py fractions are of cuBLAS's measured
fp16 matmul, which uses Hopper's wgmma.

    python bench/gpu_mma_peak.py --out bench/results/gpu_mma_peak_h100.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_KERNEL = r"""
extern "C" __global__ void __launch_bounds__(256) @NAME@(@ACC@* out, int iters) {
  @ACC@ c[8][4] = {};
  u32 a[4] = {threadIdx.x, threadIdx.x * 3u, threadIdx.x * 5u, threadIdx.x * 7u}, b[2] = {threadIdx.x, 1u};
  for (int i = 0; i < iters; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j)
      asm volatile("@INSTR@ {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                   : "+@C@"(c[j][0]), "+@C@"(c[j][1]), "+@C@"(c[j][2]), "+@C@"(c[j][3])
                   : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  @ACC@ s = 0;
  for (int j = 0; j < 8; ++j) s += c[j][0] + c[j][1] + c[j][2] + c[j][3];
  out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}
"""
# name, accumulator type, its asm constraint, instruction
_VARIANTS = (("mma_f16", "float", "f", "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"),
             ("mma_s8", "int", "r", "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32"))
SRC = "typedef unsigned int u32;\n" + "".join(
    _KERNEL.replace("@NAME@", n).replace("@ACC@", t).replace("@C@", c).replace("@INSTR@", i)
    for n, t, c, i in _VARIANTS)


def measure(iters: int = 4096, reps: int = 5) -> dict[str, float]:
    """Tera-operations per second (2 per multiply-add) of each instruction, best of ``reps``."""
    import cupy as cp

    from backends.gpu.kernels.compile import get_module

    mod = get_module(SRC)
    sms = cp.cuda.Device().attributes["MultiProcessorCount"]
    blocks, threads = 4 * sms, 256
    warps = blocks * threads // 32
    out: dict[str, float] = {}
    for name, k, dtype in (("mma_f16", 16, cp.float32), ("mma_s8", 32, cp.int32)):
        fn = mod.get_function(name)
        buf = cp.empty(blocks * threads, dtype)
        fn((blocks,), (threads,), (buf, cp.int32(16)))
        start, end = cp.cuda.Event(), cp.cuda.Event()
        best = float("inf")
        for _ in range(reps):
            start.record()
            fn((blocks,), (threads,), (buf, cp.int32(iters)))
            end.record()
            end.synchronize()
            best = min(best, cp.cuda.get_elapsed_time(start, end))
        ops = 2.0 * 16 * 8 * k * 8 * iters * warps
        out[name + "_tops"] = round(ops / (best * 1e-3) / 1e12, 1)
    out["s8_over_f16"] = round(out["mma_s8_tops"] / out["mma_f16_tops"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from gpu_peers import environment

    res = {"environment": environment(), "peak": measure()}
    print(json.dumps(res["peak"]))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
