"""A fused two-layer MLP: y = act2(act1(x·W1ᵀ + b1)·W2ᵀ + b2 [+ r]) in one launch, fp16 tensor cores.

Why: an MLP block (ConvNeXt's, a transformer's) widens C channels to H = 4C and back. Unfused,
the hidden (M × H) tensor is written and read again, four times the bytes of the block's input,
and on small C the two GEMMs are bound by that traffic, not by their arithmetic. Here a block of
warps owns 16 rows each; the rows' inputs stay in registers as ``mma`` A fragments, and the hidden
units are produced in chunks of HC: per chunk each warp computes its 16 × HC pre-activations with
``mma.sync.m16n8k16`` (fp32 accumulation), adds b1, applies act1 and rounds to fp16, exactly as
the unfused first layer stores them; the accumulator fragment of two 8-column tiles is the A
fragment of the second product, which adds the chunk's contribution to the 16 × C' output
accumulators. The hidden tensor never leaves the registers.

Weights arrive padded (W1: Hp × Cp, W2: C'p × Hp, zeros in the padding, Hp a multiple of HC,
Cp of 16, C'p of 8) and each chunk's slices are copied to shared memory with 16-byte loads; the
biases are fp32 (Hp, C'p). x, r and y are row-major with row strides C, C' and C' (a multiple of
8: an NHWC slot of C' channels is the same bytes). Rows past M are computed on zeros and not stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Template

from backends.gpu.kernels import gen

MAX_CHANNELS = 192  # C and C' bound: the output accumulators and input fragments live in registers


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
    def chunk(self) -> int:
        """Hidden units per step: 64, or 32 where the accumulators of wide layers need the registers."""
        return 64 if max(self.cp, self.cop) <= 128 else 32

    @property
    def hp(self) -> int:
        return -(-self.h // self.chunk) * self.chunk

    @property
    def warps(self) -> int:
        """Warps a block (16 rows each): 8 on narrow layers, whose weights are then read once per
        128 rows; 4 where the registers of a wide layer's thread allow fewer."""
        return 8 if max(self.cp, self.cop) <= 128 else 4

    @property
    def rows(self) -> int:
        return 16 * self.warps

    @property
    def grid(self) -> tuple[int]:
        return (-(-self.m // self.rows),)


def supported(g: MlpGeometry) -> str | None:
    """Why the kernel cannot take ``g``, or None."""
    if min(g.m, g.c, g.h, g.co) < 1:
        return "an empty MLP"
    if g.c % 8 or g.co % 8 or g.h % 8:
        return f"C, H and C' must be multiples of 8 (16-byte rows), got {g.c}, {g.h}, {g.co}"
    if max(g.c, g.co) > MAX_CHANNELS:
        return f"C = {g.c}, C' = {g.co}: more than {MAX_CHANNELS} channels do not fit the registers"
    return None


_KERNEL = Template(r"""
extern "C" __global__ void __launch_bounds__(${threads}) ${name}(h16* __restrict__ y, const h16* __restrict__ x,
    const h16* __restrict__ w1, const float* __restrict__ b1, const h16* __restrict__ w2,
    const float* __restrict__ b2${res_param}) {
  typedef ${index_type} IT;
  __shared__ __align__(16) h16 sm[${smem}];  // the x rows first; then each chunk's W1 rows and W2 columns
  h16* const s1 = sm;  // x: [row][channel]; W1: [unit][channel]
  h16* const s2 = sm + ${chunk} * ${p1};  // W2: [output channel][unit]
  const int m0 = blockIdx.x * ${rows};
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  for (int i = threadIdx.x; i < ${rows} * ${cp8}; i += ${threads}) {
    const int r = i / ${cp8}, c = (i % ${cp8}) * 8;
    uint4 v = {0u, 0u, 0u, 0u};
    if (m0 + r < ${m} && c < ${c}) v = *(const uint4*)(x + (IT)(m0 + r) * (IT)${c} + c);
    *(uint4*)(s1 + r * ${p1} + c) = v;
  }
  __syncthreads();
  u32 xa[${k1}][4];
#pragma unroll
  for (int kk = 0; kk < ${k1}; ++kk) {
    const h16* p = s1 + (warp * 16 + g) * ${p1} + kk * 16 + 2 * t4;
    xa[kk][0] = *(const u32*)p;
    xa[kk][1] = *(const u32*)(p + 8 * ${p1});
    xa[kk][2] = *(const u32*)(p + 8);
    xa[kk][3] = *(const u32*)(p + 8 * ${p1} + 8);
  }
  float o[${o_tiles}][4];
#pragma unroll
  for (int j = 0; j < ${o_tiles}; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  for (int j0 = 0; j0 < ${hp}; j0 += ${chunk}) {
    __syncthreads();  // every warp is done with the previous chunk (and with the x rows)
    for (int i = threadIdx.x; i < ${chunk} * ${cp8}; i += ${threads}) {
      const int r = i / ${cp8}, c = (i % ${cp8}) * 8;
      *(uint4*)(s1 + r * ${p1} + c) = *(const uint4*)(w1 + (IT)(j0 + r) * ${cp} + c);
    }
    for (int i = threadIdx.x; i < ${cop} * ${chunk8}; i += ${threads}) {
      const int r = i / ${chunk8}, c = (i % ${chunk8}) * 8;
      *(uint4*)(s2 + r * ${p2} + c) = *(const uint4*)(w2 + (IT)r * ${hp} + j0 + c);
    }
    __syncthreads();
    float s[${s_tiles}][4];
#pragma unroll
    for (int j = 0; j < ${s_tiles}; ++j) {
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < ${k1}; ++kk) {
        const h16* p = s1 + (j * 8 + g) * ${p1} + kk * 16 + 2 * t4;
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
        const h16* p = s2 + (jo * 8 + g) * ${p2} + kk * 16 + 2 * t4;
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
""")


def _act_args(act: tuple[int, float, float]) -> str:
    code, a, b = act
    return f"{int(code)}, {float(a)!r}f, {float(b)!r}f"


def mlp_kernel(name: str, g: MlpGeometry) -> str:
    """CUDA source of one fused MLP kernel (parameters y, x, w1, b1, w2, b2[, r]); launch with
    ``g.grid`` and ``32 * g.warps`` threads."""
    why = supported(g)
    if why is not None:
        raise ValueError(f"MLP kernel: {why}")
    p1, p2 = g.cp + 8, g.chunk + 8  # row pitches (halves): conflict-free 32-bit fragment reads
    span = max(g.m * max(g.c, g.co), g.hp * g.cp, g.cop * g.hp)
    add_res = ("{ const u32 rv = *(const u32*)(r + at); v0 += lo2f(rv); v1 += hi2f(rv); }"
               if g.residual else "")
    return _KERNEL.substitute(
        threads=32 * g.warps, name=name, res_param=", const h16* __restrict__ r" if g.residual else "",
        index_type=gen.index_type(span, g.m * max(g.c, g.co)), smem=max(g.rows * p1, g.chunk * p1 + g.cop * p2),
        rows=g.rows, cp8=g.cp // 8, m=g.m, c=g.c, p1=p1, k1=g.cp // 16, o_tiles=g.cop // 8,
        hp=g.hp, chunk=g.chunk, cp=g.cp, cop=g.cop, chunk8=g.chunk // 8, p2=p2, s_tiles=g.chunk // 8,
        act1=_act_args(g.act1), k2=g.chunk // 16, co=g.co, add_res=add_res, act2=_act_args(g.act2))
