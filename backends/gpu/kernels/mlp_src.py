"""A fused two-layer MLP: y = act2(act1(x·W1ᵀ + b1)·W2ᵀ + b2 [+ r]) in one launch, fp16 tensor cores.

Why: an MLP block (ConvNeXt's, a transformer's) widens C channels to H = 4C and back. Unfused,
the hidden (M × H) tensor is written and read again, four times the bytes of the block's input,
and on small C the two GEMMs are bound by that traffic (and, on the cuBLAS tactic, by a second
epilogue pass over each output), not by their arithmetic.

Here both weight matrices stay in shared memory for the whole launch: a persistent grid of at
most ``MAX_BLOCKS`` blocks loads W1 and W2 once and then walks row blocks of ``rows`` rows. A warp
owns 16 rows; their inputs sit in registers as ``mma`` A fragments, and the hidden units are
produced in chunks of 64: per chunk the warp computes its 16 × 64 pre-activations with
``mma.sync.m16n8k16`` (fp32 accumulation), adds b1, applies act1 and rounds to fp16, exactly as
the unfused first layer stores them; the accumulator fragment of two 8-column tiles is the A
fragment of the second product, which adds the chunk's contribution to the 16 × C' output
accumulators. The hidden tensor never leaves the registers, and no barrier separates the chunks.
The next row block's inputs are loaded into registers while the current one is computed.

A first version streamed 64-unit weight chunks through shared memory between two barriers per
chunk; on an H100 it was slower than the two unfused GEMMs (ConvNeXt-T 2.72 against 2.39 ms at
batch 32): every block re-read all the weights from L2 with nothing in flight. Resident weights
bound the layer sizes: ``supported`` says when they do not fit (ConvNeXt's first stage, C = 96
and H = 384, takes 208 KB).

Weights arrive padded (W1: Hp × Cp, W2: C'p × Hp, zeros in the padding, Hp a multiple of 64, Cp
of 16, C'p of 8) and the biases as fp32 (Hp, C'p). x, r and y are row-major with row strides C,
C' and C' (a multiple of 8: an NHWC slot of C' channels is the same bytes). Rows past M are
computed on zeros and not stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Template

from backends.gpu.kernels import gen

MAX_CHANNELS = 128  # C and C' bound: the output accumulators and input fragments live in registers
MAX_SMEM = 227 * 1024  # bytes of dynamic shared memory a block may have on sm_90 (and sm_80)
MAX_BLOCKS = 132  # the persistent grid: one block per SM of an H100
CHUNK = 64  # hidden units per step
WARPS = 8  # 16 rows each


@dataclass(frozen=True)
class MlpGeometry:
    """M rows of C inputs, H hidden units, C' outputs; act codes (``activations.ACT_CODES``) with
    their two parameters; ``residual``: whether r is added before act2."""

    m: int
    c: int
    h: int
    co: int
    act1: tuple[int, float, float]
    act2: tuple[int, float, float] = (0, 0.0, 0.0)
    residual: bool = False

    @property
    def cp(self) -> int:
        return -(-self.c // 16) * 16

    @property
    def cop(self) -> int:
        return -(-self.co // 8) * 8

    @property
    def hp(self) -> int:
        return -(-self.h // CHUNK) * CHUNK

    @property
    def rows(self) -> int:
        return 16 * WARPS

    @property
    def row_blocks(self) -> int:
        return -(-self.m // self.rows)

    @property
    def grid(self) -> tuple[int]:
        return (min(self.row_blocks, MAX_BLOCKS),)

    @property
    def smem_bytes(self) -> int:
        """W1 and W2 with padded rows (conflict-free fragment reads) and one row block of x."""
        return 2 * (self.hp * (self.cp + 8) + self.cop * (self.hp + 8) + self.rows * (self.cp + 8))


def supported(g: MlpGeometry) -> str | None:
    """Why the kernel cannot take ``g``, or None."""
    if min(g.m, g.c, g.h, g.co) < 1:
        return "an empty MLP"
    if g.c % 8 or g.co % 8 or g.h % 8:
        return f"C, H and C' must be multiples of 8 (16-byte rows), got {g.c}, {g.h}, {g.co}"
    if max(g.c, g.co) > MAX_CHANNELS:
        return f"C = {g.c}, C' = {g.co}: more than {MAX_CHANNELS} channels do not fit the registers"
    if g.smem_bytes > MAX_SMEM:
        return f"the weights ({g.smem_bytes} bytes with the row block) do not fit {MAX_SMEM} bytes of shared memory"
    return None


_KERNEL = Template(r"""
extern "C" __global__ void __launch_bounds__(${threads}, 1) ${name}(h16* __restrict__ y, const h16* __restrict__ x,
    const h16* __restrict__ w1, const float* __restrict__ b1, const h16* __restrict__ w2,
    const float* __restrict__ b2${res_param}) {
  typedef ${index_type} IT;
  extern __shared__ __align__(16) h16 sm[];
  h16* const s1 = sm;  // W1: [unit][channel], pitch p1
  h16* const s2 = sm + ${hp} * ${p1};  // W2: [output channel][unit], pitch p2
  h16* const sx = s2 + ${cop} * ${p2};  // one row block of x: [row][channel], pitch p1
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  for (int i = threadIdx.x; i < ${hp} * ${cp8}; i += ${threads}) {
    const int r = i / ${cp8}, c = (i % ${cp8}) * 8;
    *(uint4*)(s1 + r * ${p1} + c) = *(const uint4*)(w1 + (IT)r * ${cp} + c);
  }
  for (int i = threadIdx.x; i < ${cop} * ${hp8}; i += ${threads}) {
    const int r = i / ${hp8}, c = (i % ${hp8}) * 8;
    *(uint4*)(s2 + r * ${p2} + c) = *(const uint4*)(w2 + (IT)r * ${hp} + c);
  }
  uint4 xn[${x_loads}];  // the next row block's inputs, in flight while this one is computed
#pragma unroll
  for (int j = 0; j < ${x_loads}; ++j) {
    const int i = threadIdx.x + j * ${threads}, r = i / ${cp8}, c = (i % ${cp8}) * 8, row = blockIdx.x * ${rows} + r;
    xn[j] = make_uint4(0u, 0u, 0u, 0u);
    if (i < ${rows} * ${cp8} && row < ${m} && c < ${c}) xn[j] = *(const uint4*)(x + (IT)row * (IT)${c} + c);
  }
  for (int rb = blockIdx.x; rb < ${row_blocks}; rb += gridDim.x) {
    const int m0 = rb * ${rows};
    __syncthreads();  // every warp has read the previous row block's fragments
#pragma unroll
    for (int j = 0; j < ${x_loads}; ++j) {
      const int i = threadIdx.x + j * ${threads};
      if (i < ${rows} * ${cp8}) *(uint4*)(sx + (i / ${cp8}) * ${p1} + (i % ${cp8}) * 8) = xn[j];
    }
    __syncthreads();  // the row block (and, the first time, the weights) are in shared memory
    u32 xa[${k1}][4];
#pragma unroll
    for (int kk = 0; kk < ${k1}; ++kk) {
      const h16* p = sx + (warp * 16 + g) * ${p1} + kk * 16 + 2 * t4;
      xa[kk][0] = *(const u32*)p;
      xa[kk][1] = *(const u32*)(p + 8 * ${p1});
      xa[kk][2] = *(const u32*)(p + 8);
      xa[kk][3] = *(const u32*)(p + 8 * ${p1} + 8);
    }
#pragma unroll
    for (int j = 0; j < ${x_loads}; ++j) {
      const int i = threadIdx.x + j * ${threads}, r = i / ${cp8}, c = (i % ${cp8}) * 8;
      const int row = (rb + gridDim.x) * ${rows} + r;
      xn[j] = make_uint4(0u, 0u, 0u, 0u);
      if (i < ${rows} * ${cp8} && row < ${m} && c < ${c}) xn[j] = *(const uint4*)(x + (IT)row * (IT)${c} + c);
    }
    float o[${o_tiles}][4];
#pragma unroll
    for (int j = 0; j < ${o_tiles}; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    for (int j0 = 0; j0 < ${hp}; j0 += ${chunk}) {
      float s[${s_tiles}][4];
#pragma unroll
      for (int j = 0; j < ${s_tiles}; ++j) {
        s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < ${k1}; ++kk) {
          const h16* p = s1 + (j0 + j * 8 + g) * ${p1} + kk * 16 + 2 * t4;
          const u32 b[2] = {*(const u32*)p, *(const u32*)(p + 8)};
          mma_16816(s[j], xa[kk], b);
        }
        const float2 bb = *(const float2*)(b1 + j0 + j * 8 + 2 * t4);
        s[j][0] = act_fn(s[j][0] + bb.x, ${act1});
        s[j][1] = act_fn(s[j][1] + bb.y, ${act1});
        s[j][2] = act_fn(s[j][2] + bb.x, ${act1});
        s[j][3] = act_fn(s[j][3] + bb.y, ${act1});
      }
#pragma unroll
      for (int kk = 0; kk < ${k2}; ++kk) {
        const u32 a[4] = {pack2(s[2 * kk][0], s[2 * kk][1]), pack2(s[2 * kk][2], s[2 * kk][3]),
                           pack2(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
        for (int jo = 0; jo < ${o_tiles}; ++jo) {
          const h16* p = s2 + (jo * 8 + g) * ${p2} + j0 + kk * 16 + 2 * t4;
          const u32 b[2] = {*(const u32*)p, *(const u32*)(p + 8)};
          mma_16816(o[jo], a, b);
        }
      }
    }
#pragma unroll
    for (int jo = 0; jo < ${o_tiles}; ++jo) {
      const int col = jo * 8 + 2 * t4;
      const float2 bb = *(const float2*)(b2 + col);
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int row = m0 + warp * 16 + g + hh * 8;
        if (row >= ${m} || col >= ${co}) continue;
        const IT at = (IT)row * (IT)${co} + col;
        float v0 = o[jo][2 * hh] + bb.x, v1 = o[jo][2 * hh + 1] + bb.y;
        ${add_res}
        v0 = act_fn(v0, ${act2});
        v1 = act_fn(v1, ${act2});
        *(u32*)(y + at) = pack2(v0, v1);
      }
    }
  }
}
""")



def _act_args(act: tuple[int, float, float]) -> str:
    code, a, b = act
    return f"{int(code)}, {float(a)!r}f, {float(b)!r}f"


def mlp_kernel(name: str, g: MlpGeometry) -> str:
    """CUDA source of one fused MLP kernel (parameters y, x, w1, b1, w2, b2[, r]); launch with
    ``g.grid`` blocks of ``32 * WARPS`` threads and ``g.smem_bytes`` of dynamic shared memory."""
    why = supported(g)
    if why is not None:
        raise ValueError(f"MLP kernel: {why}")
    threads = 32 * WARPS
    p1, p2 = g.cp + 8, g.hp + 8  # row pitches (halves): conflict-free 32-bit fragment reads
    span = max(g.m * max(g.c, g.co), g.hp * g.cp, g.cop * g.hp)
    add_res = ("{ const u32 rv = *(const u32*)(r + at); v0 += lo2f(rv); v1 += hi2f(rv); }"
               if g.residual else "")
    return _KERNEL.substitute(
        threads=threads, name=name, res_param=", const h16* __restrict__ r" if g.residual else "",
        index_type=gen.index_type(span, (g.row_blocks + g.grid[0]) * g.rows * max(g.c, g.co)), hp=g.hp, p1=p1,
        cop=g.cop, p2=p2, cp8=g.cp // 8, cp=g.cp, hp8=g.hp // 8, x_loads=-(-g.rows * g.cp // 8 // threads),
        rows=g.rows, m=g.m, c=g.c, row_blocks=g.row_blocks, k1=g.cp // 16, o_tiles=g.cop // 8, chunk=CHUNK,
        s_tiles=CHUNK // 8, act1=_act_args(g.act1), k2=CHUNK // 16, co=g.co, add_res=add_res,
        act2=_act_args(g.act2))
