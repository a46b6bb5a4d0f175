"""The CUDA emulator's tensor-core operations (``cuda_emu_ptx``) on one warp, against numpy.

The test kernels use the real helpers of ``COMMON_SRC`` (their text replaced by the emulation) and
address the fragments as the PTX ISA lays them out (the same addressing as the implicit-GEMM
mainloop, whose GPU tests pass): a 16x16 (fp16) or 16x32 (int8) row-major A tile and an 8-row B tile
(n rows of k, the ``.col`` operand) go to shared memory by cp.async, ldmatrix.x4 loads the
fragments, one mma.sync multiplies. The negative cases permute a fragment and must then disagree
with numpy, so a layout error cannot pass unseen.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emu import EmulatedModule, compiler

from backends.gpu.kernels.common import COMMON_SRC

pytestmark = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")

TEST_SRC = COMMON_SRC + r"""
// One warp: C (16x8, fp32 or int32) = C0 + A (16 rows of 32 bytes) x B^T (8 rows of 32 bytes), or
// with KN (fp16) x B for B row-major [k][n] (16 rows of 16 bytes), its fragment by ldmatrix.trans.
// ``swap`` = 1 hands ldmatrix the two 16-byte halves of A's rows (KN: B's two 8-row halves) the
// wrong way round.
template <bool S8, bool KN = false>
__device__ void mma_tile(const unsigned char* a, const unsigned char* b, const void* c0, void* c, int swap) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int lane = threadIdx.x, g = lane >> 2, q = lane & 3;
  unsigned char* as = smem;
  unsigned char* bs = smem + 512;
  cp_async16(smem_addr(as + lane * 16), a + lane * 16, 16);
  if (lane < 16) cp_async16(smem_addr(bs + lane * 16), b + lane * 16, 16);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  u32 af[4], bf[4];
  ldmatrix_x4(af, smem_addr(as + (lane & 15) * 32 + (((lane >> 4) ^ (KN ? 0 : swap)) * 16)));
  if (KN) ldmatrix_x4_trans(bf, smem_addr(bs + ((lane & 15) ^ (swap * 8)) * 16));  // lanes 16..31: a copy
  else ldmatrix_x4(bf, smem_addr(bs + (lane & 7) * 32 + ((lane >> 3) & 1) * 16));
  if (S8) {
    int acc[4];
    for (int e = 0; e < 4; ++e) acc[e] = ((const int*)c0)[(g + (e >> 1) * 8) * 8 + 2 * q + (e & 1)];
    mma_s8_16832(acc, af, bf);
    for (int e = 0; e < 4; ++e) ((int*)c)[(g + (e >> 1) * 8) * 8 + 2 * q + (e & 1)] = acc[e];
  } else {
    float acc[4];
    for (int e = 0; e < 4; ++e) acc[e] = ((const float*)c0)[(g + (e >> 1) * 8) * 8 + 2 * q + (e & 1)];
    mma_16816(acc, af, bf);
    for (int e = 0; e < 4; ++e) ((float*)c)[(g + (e >> 1) * 8) * 8 + 2 * q + (e & 1)] = acc[e];
  }
}
extern "C" __global__ void mma_f16(const unsigned char* a, const unsigned char* b, const float* c0, float* c,
                                   int swap) { mma_tile<false>(a, b, c0, c, swap); }
extern "C" __global__ void mma_f16_kn(const unsigned char* a, const unsigned char* b, const float* c0, float* c,
                                      int swap) { mma_tile<false, true>(a, b, c0, c, swap); }
extern "C" __global__ void mma_s8(const unsigned char* a, const unsigned char* b, const int* c0, int* c,
                                  int swap) { mma_tile<true>(a, b, c0, c, swap); }

// cp.async: a copy lands at the wait that retires its group, with zero fill past src_bytes.
extern "C" __global__ void cp_async_probe(const unsigned char* src, unsigned char* out, int src_bytes) {
  extern __shared__ __align__(16) unsigned char smem[];
  cp_async16(smem_addr(smem), src, src_bytes);
  cp_async_commit();
  cp_async16(smem_addr(smem + 16), src, 16);
  cp_async_commit();
  for (int i = 0; i < 32; ++i) out[i] = smem[i];  // before any wait
  cp_async_wait<1>();  // the first group only
  for (int i = 0; i < 32; ++i) out[32 + i] = smem[i];
  cp_async_wait<0>();
  for (int i = 0; i < 32; ++i) out[64 + i] = smem[i];
}

// Warps on different paths between block barriers: warp w runs w + 1 shuffle rounds (a warp
// collective), then every warp reads what the others wrote before the barrier.
extern "C" __global__ void warp_paths(float* out) {
  __shared__ float sums[4];
  const int warp = threadIdx.x >> 5;
  float v = (float)(threadIdx.x & 31);
  for (int i = 0; i <= warp; ++i) v += __shfl_xor_sync(0xffffffffu, v, 1 << i);
  if ((threadIdx.x & 31) == 0) sums[warp] = v;
  __syncthreads();
  out[threadIdx.x] = sums[(warp + 1) & 3];
}

// Lane 32 waits at the block barrier, the rest of its warp at a shuffle that needs it.
extern "C" __global__ void deadlock(float* out) {
  if (threadIdx.x <= 32) __syncthreads();
  else out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.f, 1);
}

// ldmatrix on a row address past the dynamic shared memory.
extern "C" __global__ void ldmatrix_oob(u32* out) {
  extern __shared__ __align__(16) unsigned char smem[];
  u32 r[4];
  ldmatrix_x4(r, smem_addr(smem) + 64);
  out[threadIdx.x] = r[0];
}
"""


@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> EmulatedModule:
    return EmulatedModule(TEST_SRC, tmp_path_factory.mktemp("emu_ptx"))


def _mma(emu: EmulatedModule, kernel: str, a: np.ndarray, b: np.ndarray, c0: np.ndarray, swap: int) -> np.ndarray:
    c = np.full_like(c0, -1)
    emu.run(kernel, (1,), 32, (a, b, c0, c, np.int32(swap)), shared_mem=768)
    return c


@pytest.mark.parametrize("swap", [0, 1])
def test_mma_f16_against_numpy(emu, rng, swap: int) -> None:
    a = rng.standard_normal((16, 16)).astype(np.float16)
    b = rng.standard_normal((8, 16)).astype(np.float16)  # B^T: n rows of k
    c0 = rng.standard_normal((16, 8)).astype(np.float32)
    got = _mma(emu, "mma_f16", a, b, c0, swap)
    want = c0.astype(np.float64) + a.astype(np.float64) @ b.astype(np.float64).T
    close = np.allclose(got, want, rtol=1e-5, atol=1e-5)
    assert close if swap == 0 else not close, np.abs(got - want).max()


@pytest.mark.parametrize("swap", [0, 1])
def test_ldmatrix_trans_gives_the_b_fragment_of_a_row_major_tile(emu, rng, swap: int) -> None:
    a = rng.standard_normal((16, 16)).astype(np.float16)
    b = rng.standard_normal((16, 8)).astype(np.float16)  # [k][n]
    c0 = rng.standard_normal((16, 8)).astype(np.float32)
    got = _mma(emu, "mma_f16_kn", a, b, c0, swap)
    want = c0.astype(np.float64) + a.astype(np.float64) @ b.astype(np.float64)
    close = np.allclose(got, want, rtol=1e-5, atol=1e-5)
    assert close if swap == 0 else not close, np.abs(got - want).max()


@pytest.mark.parametrize("swap", [0, 1])
def test_mma_s8_against_numpy(emu, rng, swap: int) -> None:
    a = rng.integers(-128, 128, (16, 32), dtype=np.int8)
    b = rng.integers(-128, 128, (8, 32), dtype=np.int8)
    c0 = rng.integers(-2**20, 2**20, (16, 8), dtype=np.int32)
    got = _mma(emu, "mma_s8", a, b, c0, swap)
    want = c0.astype(np.int64) + a.astype(np.int64) @ b.astype(np.int64).T
    assert np.array_equal(got, want) == (swap == 0)


def test_mma_s8_wraps_like_int32(emu, rng) -> None:
    a = np.full((16, 32), -128, np.int8)
    b = np.full((8, 32), -128, np.int8)
    c0 = np.full((16, 8), 2**31 - 2**19, np.int32)  # + 32 * 2**14 = 2**19 wraps to -2**31
    got = _mma(emu, "mma_s8", a, b, c0, 0)
    assert (got == -2**31).all()


@pytest.mark.parametrize("src_bytes", [16, 8, 0])
def test_cp_async_lands_at_its_wait_with_zero_fill(emu, rng, src_bytes: int) -> None:
    src = rng.integers(1, 256, 16, dtype=np.uint8)
    out = np.zeros(96, np.uint8)
    emu.run("cp_async_probe", (1,), 1, (src, out, np.int32(src_bytes)), shared_mem=32)
    fill = np.full(16, 0x7E, np.uint8)
    first = np.concatenate([src[:src_bytes], np.zeros(16 - src_bytes, np.uint8)])
    np.testing.assert_array_equal(out[:32], np.concatenate([fill, fill]))  # nothing landed before a wait
    np.testing.assert_array_equal(out[32:64], np.concatenate([first, fill]))
    np.testing.assert_array_equal(out[64:], np.concatenate([first, src]))


def test_warp_collectives_wait_for_their_own_warp_only(emu) -> None:
    out = np.full(128, np.nan, np.float32)
    emu.run("warp_paths", (1,), 128, (out,))
    # lane 0 of warp w holds the sum of the lane indices over the 2**(w+1) lanes its rounds reach
    lane_sums = [sum(range(2 ** (w + 1))) for w in range(4)]
    np.testing.assert_array_equal(out, np.repeat([lane_sums[(w + 1) % 4] for w in range(4)], 32))


def test_threads_waiting_at_different_barriers_are_a_deadlock(emu) -> None:
    with pytest.raises(RuntimeError, match="deadlock"):
        emu.run("deadlock", (1,), 64, (np.zeros(64, np.float32),))


def test_ldmatrix_outside_shared_memory_is_an_error(emu) -> None:
    with pytest.raises(RuntimeError, match="ldmatrix: row address outside"):
        emu.run("ldmatrix_oob", (1,), 32, (np.zeros(32, np.uint32),), shared_mem=64)


def test_run_checks_the_calling_convention(emu) -> None:
    a = np.zeros((16, 16), np.float16)
    with pytest.raises(TypeError, match="parameter 4 has kind 'i'"):
        emu.run("mma_f16", (1,), 32, (a, a, a, a, np.int64(0)), shared_mem=768)
    with pytest.raises(TypeError, match="takes 5 parameters"):
        emu.run("mma_f16", (1,), 32, (a, a, a, a), shared_mem=768)
