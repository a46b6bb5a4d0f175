"""A fused attention kernel: softmax(scale · Q·Kᵀ + Σ biases) · V in one launch, fp16 tensor cores.

Why: an exported attention block runs as two batched products with a softmax between them, and
the (Sq × Sk) score tensor goes to memory and back three times; with head-major views of a fused
QKV projection the products also see strides cuBLAS does not take at full speed. Here a block of
four warps owns 64 query rows of one batch·head and streams the keys in tiles of 64, keeping the
running row maximum and sum in registers (the online softmax of FlashAttention, Dao et al. 2022):
the scores never leave the SM.

Per key tile each warp computes its 16 × 64 scores with ``mma.sync.m16n8k16`` (fp16 in, fp32
accumulation), scales them, adds the bias, masks keys past Sk, rescales its running output and
multiplies the fp16-rounded probabilities by V: the accumulator fragment of two score tiles is
exactly the A fragment of the next product, so the probabilities go from registers to the tensor
cores without shared memory. K and V tiles sit row-major in shared memory; ``ldmatrix`` gives the B
fragments of two products an instruction (``.trans`` for V, whose fragments pair keys). Work past the
tensor is skipped, not masked: products of 8 keys past Sk, probability steps of 16 keys past Sk, and
every product of a warp whose 16 rows lie past Sq (it still loads its share of the tiles); at
ViT-B/16's 197 tokens a 64 x 64 grid computes 256 x 256 scores, so that was a fifth of the products.
Q, K and V are read through any element strides (the views of the projection's output); the output
is row-major (*batch, Sq, Dv) fp16.

A score map (``ScoreMap``) replaces scale · Q·Kᵀ by scale · map(pre · Q·Kᵀ): an element-wise chain
the optimizer fused (Swin V2 multiplies by a per-head logit scale and adds its position bias there),
applied to each fp32 score in registers with its operands loaded at the score's coordinate.

Shapes: head dims D and Dv up to 128 (padded with zeros to multiples of 16 in shared memory);
any Sq, Sk ≥ 1. A row whose every score is -inf (a fully masked row) gives NaN, as the unfused
softmax does; a row masked only in some key tiles is exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from string import Template

from backends.gpu.kernels import gen
from backends.gpu.kernels.gen_group import reduce_parts

BLOCK_ROWS = 64  # query rows per block (four warps of 16)
BLOCK_KEYS = 64  # keys per tile
THREADS = 128
MAX_HEAD_DIM = 128
LOG2E = 1.4426950408889634


@dataclass(frozen=True)
class AttentionOperand:
    """How the kernel addresses one input: element strides per batch dim, per row and per column,
    and a base offset (a view of a larger tensor)."""

    batch_strides: tuple[int, ...]
    row_stride: int
    col_stride: int
    base: int = 0


@dataclass(frozen=True)
class AttentionBias:
    """An additive term of the scores: ``scale`` times the tensor ``operand`` addresses (fp16 or
    fp32), e.g. a relative position bias and a shifted-window mask."""

    operand: AttentionOperand
    dtype: str = "float16"
    scale: float = 1.0


@dataclass(frozen=True)
class ScoreMap:
    """An element-wise map of the product before the biases (an optimizer-fused pointwise chain,
    e.g. Swin V2's per-head logit scale and its relative position bias): ``body`` is C that sets
    ``y`` from ``X0`` (``pre`` · Q·Kᵀ) and ``X1``, ``X2``, ... (``operands``, each addressed over
    (*batch, Sq, Sk) and loaded as its dtype, fp16 or fp32) at the score's coordinate."""

    body: str
    operands: tuple[tuple[AttentionOperand, str], ...] = ()
    pre: float = 1.0


@dataclass(frozen=True)
class RowMap:
    """A map of each Q or K row by a reduction of that row, applied to the tile in shared memory as
    it lands (Swin V2's ``x / max(||x||_2, eps)`` over a head's channels): ``reduce`` names a
    ``gen_group`` reduction; its value is rounded to ``reduced_dtype`` (as the unfused reduction
    stores it) and ``body`` (C setting ``y`` from ``RV``, the reduced value, and ``XE``, the
    element) gives the fp16 element the products read."""

    reduce: str
    body: str
    reduced_dtype: str = "float16"


@dataclass(frozen=True)
class AttentionGeometry:
    """softmax(scale·Q·Kᵀ + Σ biases)·V over ``batch`` (flattened into the grid's y): Q (Sq × D), K
    (Sk × D), V (Sk × Dv); each bias broadcasts over (*batch, Sq, Sk) (0 strides)."""

    batch: tuple[int, ...]
    sq: int
    sk: int
    d: int
    dv: int
    scale: float

    @property
    def batch_count(self) -> int:
        return math.prod(self.batch)

    @property
    def grid(self) -> tuple[int, int]:
        return (-(-self.sq // BLOCK_ROWS), self.batch_count)


def supported(geom: AttentionGeometry) -> str | None:
    """Why the kernel cannot take ``geom``, or None."""
    if not (1 <= geom.d <= MAX_HEAD_DIM and 1 <= geom.dv <= MAX_HEAD_DIM):
        return f"head dims {geom.d}, {geom.dv} outside 1..{MAX_HEAD_DIM}"
    if geom.sq < 1 or geom.sk < 1 or geom.batch_count < 1:
        return "an empty attention"
    if geom.batch_count > 65535:
        return f"{geom.batch_count} batch·heads exceed the grid's y limit"
    return None


def _batch_offset(name: str, batch: Sequence[int], strides: Sequence[int], base: int) -> str:
    """C expression: the element offset of batch index ``z`` (flattened row-major) in an operand."""
    terms = [str(base)] if base else []
    inner = 1
    for d, s in reversed(list(zip(batch, strides))):
        if d > 1 and s:
            terms.append(f"((IT)(z / {inner}u) % {d}u) * (IT){s}")
        inner *= d
    return f"const IT {name} = " + (" + ".join(terms) or "0") + ";"


def _vector_loads(op: AttentionOperand, cols: int) -> bool:
    """Whether 16-byte loads reach every row: unit column stride, and every other stride, the base
    and the column count multiples of 8 halves (arena slots are 256-byte aligned)."""
    return (op.col_stride == 1 and cols % 8 == 0 and op.row_stride % 8 == 0 and op.base % 8 == 0
            and all(s % 8 == 0 for s in op.batch_strides))


DOUBLE_BUFFER_MAX_DIM = 64  # padded head dims up to which K and V tiles are double-buffered (cp.async)
# CTAs an SM the double-buffered kernel is bounded to, by padded head dims (D, Dv): 4 (128 registers)
# took ViT-B/16's block on an H100 from 0.0455 to 0.0405 ms at batch 32 and 0.293 to 0.251 at 256,
# and 1024 tokens from 0.167 to 0.158; at head dims 32 and 128 the same bound spilled and lost
# (0.037 -> 0.040, 0.061 -> 0.107 ms), so only this measured shape has one.
MIN_CTAS_PER_SM = {(64, 64): 4}


def _per_thread(cols: int, body: str) -> str:
    """An unrolled loop over this thread's 16-byte pieces of a 64-row x ``cols`` tile: ``r``, ``c``
    (row-major, so a warp stores whole rows: conflict-free at the tiles' pitches)."""
    head = (f"for (int j = 0; j < {cols // 16}; ++j) {{ const int i = threadIdx.x + j * {THREADS}; "
            f"const int r = i / {cols // 8}, c = (i % {cols // 8}) * 8; ")
    return "\n#pragma unroll\n    " + head + body + " }"


def _async_tiles(k: AttentionOperand, v: AttentionOperand, geom: AttentionGeometry, dp: int, dvp: int
                 ) -> tuple[str, str] | None:
    """(issue tile 0, the loop's head) of the double-buffered path, where K and V take 16-byte loads
    and the head dims are small enough for two stages: ``cp.async`` copies the next K/V tile
    straight into the other stage while the current one is multiplied, so the loads are in flight
    across the products with no staging registers, and one barrier a tile both publishes the
    landed tile and frees the stage read before it. Rows past Sk are zero-filled (src-size 0)."""
    if not (_vector_loads(k, geom.d) and _vector_loads(v, geom.dv) and _two_stages(dp, dvp)):
        return None
    kp, vp = _pitches(dp, dvp)
    stage = _stage_halves(dp, dvp)

    def copies(dst: str, src: str, op: AttentionOperand, cols: int, limit: int, off: str, pitch: int,
               start: str) -> str:
        at = f"{src} + {off} + (IT)({start} + r) * (IT){op.row_stride} + c"
        return _per_thread(cols, f"const bool in = {start} + r < {geom.sk} && c < {limit}; "
                                 f"cp_async16(smem_addr({dst} + r * {pitch} + c), in ? {at} : {src}, in ? 16 : 0);")

    def issue(which: str, start: str) -> str:
        base = f"att_smem + ({which}) * {stage}"
        return ("{ h16* const kd = " + base + f"; h16* const vd = kd + {BLOCK_KEYS * kp};"
                + copies("kd", "k", k, dp, geom.d, "kb", kp, start)
                + copies("vd", "v", v, dvp, geom.dv, "vb", vp, start) + "\n    cp_async_commit(); }")

    head = f"""cp_async_wait<0>();
    __syncthreads();  // tile n0 landed for every thread; every warp is done with the stage it replaces
    h16* const ks = att_smem + ((n0 / {BLOCK_KEYS}) & 1) * {stage};
    h16* const vs = ks + {BLOCK_KEYS * kp};
    if (n0 + {BLOCK_KEYS} < {geom.sk}) {issue(f"(n0 / {BLOCK_KEYS} + 1) & 1", f"n0 + {BLOCK_KEYS}")}"""
    return issue("0", "0"), head


def _tile_load(dst: str, src: str, rows: str, limit_rows: int, cols: int, limit_cols: int,
               op: AttentionOperand, off: str, pitch: int) -> str:
    """Shared-memory fill of a 64-row × ``cols`` tile, row-major (zeros past the tensor): 16-byte
    loads where the operand allows them, else one element per step."""
    if _vector_loads(op, limit_cols):
        return f"""
  for (int i = threadIdx.x; i < {BLOCK_KEYS * cols // 8}; i += {THREADS}) {{
    const int r = i / {cols // 8}, c = (i % {cols // 8}) * 8;
    const int row = {rows} + r;
    uint4 val = {{0u, 0u, 0u, 0u}};
    if (row < {limit_rows} && c < {limit_cols})
      val = *(const uint4*)({src} + {off} + (IT)row * (IT){op.row_stride} + c);
    *(uint4*)({dst} + r * {pitch} + c) = val;
  }}"""
    return f"""
  for (int i = threadIdx.x; i < {BLOCK_KEYS * cols}; i += {THREADS}) {{
    const int r = i / {cols}, c = i % {cols};
    const int row = {rows} + r;
    {dst}[r * {pitch} + c] = (row < {limit_rows} && c < {limit_cols})
        ? {src}[{off} + (IT)row * (IT){op.row_stride} + (IT)c * (IT){op.col_stride}] : (h16)0;
  }}"""


def _store(geom: AttentionGeometry, y: AttentionOperand) -> str:
    """The output stores of one thread's two rows: fp16 pairs where every pair is 4-byte aligned."""
    at = f"yb + (IT)row * (IT){y.row_stride} + (IT)col * (IT){y.col_stride}"
    if (geom.dv % 2 == 0 and y.col_stride == 1 and y.row_stride % 2 == 0 and y.base % 2 == 0
            and all(s % 2 == 0 for s in y.batch_strides)):
        return (f"if (row < {geom.sq} && col < {geom.dv}) "
                f"*(u32*)(y + {at}) = pack2(o[jv][2 * h] * inv[h], o[jv][2 * h + 1] * inv[h]);")
    return (f"if (row < {geom.sq}) {{ if (col < {geom.dv}) y[{at}] = f2h(o[jv][2 * h] * inv[h]); "
            f"if (col + 1 < {geom.dv}) y[{at} + (IT){y.col_stride}] = f2h(o[jv][2 * h + 1] * inv[h]); }}")


_KERNEL = Template(r"""
extern "C" __global__ void __launch_bounds__(${threads}${min_blocks}) ${name}(h16* __restrict__ y,
    const h16* __restrict__ q, const h16* __restrict__ k, const h16* __restrict__ v${bias_param}) {
  typedef ${index_type} IT;
  extern __shared__ __align__(16) h16 att_smem[];  // shared_bytes(geom): one or two stages of K, V
  h16* const ks = att_smem + ${q_at};  // Q first (then, with one stage, each K tile): [row][dim]
  const unsigned z = blockIdx.y;
  ${offsets}
  const int m0 = blockIdx.x * ${block_rows};
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const float NEG_INF = __int_as_float(0xff800000);
  ${q_fill}
  ${first_tile}
  __syncthreads();
  ${q_map}
  u32 qa[${q_frags}][4];
#pragma unroll
  for (int kk = 0; kk < ${q_frags}; ++kk) {
    const h16* p = ks + (warp * 16 + g) * ${kp} + kk * 16 + 2 * t4;
    qa[kk][0] = *(const u32*)p;
    qa[kk][1] = *(const u32*)(p + 8 * ${kp});
    qa[kk][2] = *(const u32*)(p + 8);
    qa[kk][3] = *(const u32*)(p + 8 * ${kp} + 8);
  }
  float o[${o_tiles}][4];
#pragma unroll
  for (int j = 0; j < ${o_tiles}; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float mrow[2] = {NEG_INF, NEG_INF}, lsum[2] = {0.f, 0.f};
  for (int n0 = 0; n0 < ${sk}; n0 += ${block_keys}) {
    ${loop_head}
    const u32 ks_addr = smem_addr(ks), vs_addr = smem_addr(vs);
    ${k_map}
    if (m0 + warp * 16 >= ${sq}) continue;  // rows past Sq: this warp only helps load the tiles
    float s[${s_tiles}][4];
#pragma unroll
    for (int j = 0; j < ${s_tiles}; ++j) {
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
      if (n0 + j * 8 >= ${sk}) continue;  // 8 keys past Sk: masked below, whatever the product
#pragma unroll
      for (int kk = 0; kk < ${q_frags}; kk += 2) {  // the B fragments of two 16-dim steps
        const int kq = kk + (lane >> 4) < ${q_frags} ? kk + (lane >> 4) : kk;
        u32 b[4];
        ldmatrix_x4(b, ks_addr + 2u * ((j * 8 + (lane & 7)) * ${kp} + kq * 16 + ((lane >> 3) & 1) * 8));
        mma_16816(s[j], qa[kk], b);
        if (kk + 1 < ${q_frags}) mma_16816(s[j], qa[kk + 1], b + 2);
      }
    }
    float mx[2] = {mrow[0], mrow[1]};
#pragma unroll
    for (int j = 0; j < ${s_tiles}; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = m0 + warp * 16 + g + (e >> 1) * 8, col = n0 + j * 8 + 2 * t4 + (e & 1);
        ${score}
        ${add_bias}
        s[j][e] = col < ${sk} ? x : NEG_INF;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[j][e]);
      }
    }
    float mref[2], corr[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
      mref[h] = mx[h] == NEG_INF ? 0.f : mx[h];  // a row masked so far: no NaN from -inf - -inf
      corr[h] = exp2f(mrow[h] - mref[h]);
      mrow[h] = mx[h];
      lsum[h] *= corr[h];
    }
#pragma unroll
    for (int j = 0; j < ${o_tiles}; ++j) {
      o[j][0] *= corr[0]; o[j][1] *= corr[0]; o[j][2] *= corr[1]; o[j][3] *= corr[1];
    }
#pragma unroll
    for (int j = 0; j < ${s_tiles}; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[j][e] = exp2f(s[j][e] - mref[e >> 1]);
        lsum[e >> 1] += s[j][e];
      }
    }
#pragma unroll
    for (int kk = 0; kk < ${pv_steps}; ++kk) {
      if (n0 + kk * 16 >= ${sk}) continue;  // 16 keys past Sk: probabilities exactly 0
      const u32 a[4] = {pack2(s[2 * kk][0], s[2 * kk][1]), pack2(s[2 * kk][2], s[2 * kk][3]),
                         pack2(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int jv = 0; jv < ${o_tiles}; jv += 2) {  // the B fragments of two 8-dim columns, transposed
        u32 b[4];
        ldmatrix_x4_trans(b, vs_addr + 2u * ((kk * 16 + (lane & 15)) * ${vp} + (jv + (lane >> 4)) * 8));
        mma_16816(o[jv], a, b);
        mma_16816(o[jv + 1], a, b + 2);
      }
    }
  }
  float inv[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float l = lsum[h];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv[h] = l > 0.f ? 1.f / l : __int_as_float(0x7fc00000);  // every score -inf: NaN, as softmax gives
  }
#pragma unroll
  for (int jv = 0; jv < ${o_tiles}; ++jv) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = m0 + warp * 16 + g + h * 8, col = jv * 8 + 2 * t4;
      ${store}
    }
  }
}
""")


def _bias_terms(geom: AttentionGeometry, biases: Sequence[AttentionBias]) -> tuple[str, list[str], str]:
    """(parameters, batch offsets, the statements adding every bias to a score ``x``)."""
    params, offsets, adds = "", [], []
    for i, b in enumerate(biases):
        op = b.operand
        params += f", const {gen.CTYPE[b.dtype]}* __restrict__ bias{i}"
        offsets.append(_batch_offset(f"bb{i}", geom.batch, op.batch_strides, op.base))
        at = f"bb{i} + (IT)row * (IT){op.row_stride} + (IT)col * (IT){op.col_stride}"
        adds.append(f"x += {LOG2E * b.scale!r}f * {gen.load(b.dtype, f'bias{i}[{at}]')};")
    add = f"if (row < {geom.sq} && col < {geom.sk}) {{ {' '.join(adds)} }}" if adds else ""
    return params, offsets, add


def _score_terms(geom: AttentionGeometry, scale2: float, smap: ScoreMap | None) -> tuple[str, list[str], str]:
    """(parameters, batch offsets, the statements setting the score ``x`` of ``s[j][e]``): the scaled
    product, or ``smap`` of it scaled after (a row or column past the tensor is not mapped: masked)."""
    if smap is None:
        return "", [], f"float x = s[j][e] * {scale2!r}f;"
    params, offsets, loads = "", [], [f"const float X0 = s[j][e] * {float(smap.pre)!r}f;"]
    for i, (op, dtype) in enumerate(smap.operands):
        params += f", const {gen.CTYPE[dtype]}* __restrict__ map{i}"
        offsets.append(_batch_offset(f"mb{i}", geom.batch, op.batch_strides, op.base))
        at = f"mb{i} + (IT)row * (IT){op.row_stride} + (IT)col * (IT){op.col_stride}"
        loads.append(f"const float X{i + 1} = {gen.load(dtype, f'map{i}[{at}]')};")
    return params, offsets, (f"float x = 0.f; if (row < {geom.sq} && col < {geom.sk}) {{ {' '.join(loads)} "
                             f"float y; {{ {smap.body} }} x = y * {scale2!r}f; }}")


def _row_map(rmap: RowMap | None, rows: str, limit: int, d: int, pitch: int) -> str:
    """Statements mapping the 64 rows of the fp16 tile ``ks`` in place (two threads a row, each
    reducing half of its ``d`` elements), then a barrier; rows from ``limit`` on are left as loaded."""
    if rmap is None:
        return ""
    init, acc, fin, combine = reduce_parts(rmap.reduce)
    rounded = gen.load(rmap.reduced_dtype, gen.store(rmap.reduced_dtype, f"({fin.replace('N', str(d))})"))
    return f"""{{
    const int r = threadIdx.x >> 1, c0 = threadIdx.x & 1;
    h16* row = ks + r * {pitch};
    float a = {init};
    for (int c = c0; c < {d}; c += 2) {{ const float v = h2f(row[c]); {acc} }}
    {{ const float b = __shfl_xor_sync(0xffffffffu, a, 1); {combine} }}
    const float RV = {rounded};
    if ({rows} + r < {limit})
      for (int c = c0; c < {d}; c += 2) {{ const float XE = h2f(row[c]); float y; {{ {rmap.body} }} row[c] = f2h(y); }}
  }}
  __syncthreads();"""


def _pitches(dp: int, dvp: int) -> tuple[int, int]:
    """Row pitches (halves) of the K and V tiles: 16·odd bytes, so the 8 rows an ldmatrix reads
    fall in 8 distinct 16-byte bank groups."""
    return dp + 8, dvp + 8


def _padded_dims(geom: AttentionGeometry) -> tuple[int, int]:
    """D and Dv padded to the products' 16-element steps."""
    return -(-geom.d // 16) * 16, -(-geom.dv // 16) * 16


def _two_stages(dp: int, dvp: int) -> bool:
    """Whether two stages of K and V fit (the double-buffered path, given 16-byte loads)."""
    return max(dp, dvp) <= DOUBLE_BUFFER_MAX_DIM


def _stage_halves(dp: int, dvp: int) -> int:
    """Halves of one stage: a K tile and a V tile at their pitches."""
    return BLOCK_KEYS * sum(_pitches(dp, dvp))


def shared_bytes(geom: AttentionGeometry) -> int:
    """Dynamic shared memory of ``geom``'s kernel: two stages of K and V where the head dims allow
    double buffering, else one (at most 36 KB either way: no opt-in needed)."""
    dp, dvp = _padded_dims(geom)
    return 2 * (2 if _two_stages(dp, dvp) else 1) * _stage_halves(dp, dvp)


def attention_kernel(name: str, geom: AttentionGeometry, q: AttentionOperand, k: AttentionOperand,
                     v: AttentionOperand, biases: Sequence[AttentionBias] = (), span: int = 0,
                     out: AttentionOperand | None = None, score_map: ScoreMap | None = None,
                     q_map: RowMap | None = None, k_map: RowMap | None = None) -> str:
    """CUDA source of one attention kernel (parameters y, q, k, v, bias0, bias1, ..., map0, map1,
    ...); launch with ``geom.grid``, ``THREADS`` threads and ``shared_bytes(geom)``. ``out``: where
    O[*batch, row, col] goes
    (default row-major (*batch, Sq, Dv)), e.g. straight into the layout of a transpose that reads O;
    ``score_map``: the scores are ``geom.scale`` · map(Q·Kᵀ) + Σ biases; ``q_map``, ``k_map``: the
    rows of Q and K as the products read them are these maps of the rows the operands address."""
    why = supported(geom)
    if why is not None:
        raise ValueError(f"attention kernel: {why}")
    dp, dvp = _padded_dims(geom)
    kp, vp = _pitches(dp, dvp)
    it = gen.index_type(span, geom.batch_count * geom.sq * max(geom.sk, geom.dv))
    bias_param, bias_offsets, add_bias = _bias_terms(geom, biases)
    offsets = [_batch_offset("qb", geom.batch, q.batch_strides, q.base),
               _batch_offset("kb", geom.batch, k.batch_strides, k.base),
               _batch_offset("vb", geom.batch, v.batch_strides, v.base)]
    scale2 = float(geom.scale) * LOG2E  # scores in the log2 domain: exp2f is one instruction
    map_param, map_offsets, score = _score_terms(geom, scale2, score_map)
    offsets += bias_offsets + map_offsets
    if out is None:
        st = gen.row_major((*geom.batch, geom.sq, geom.dv))
        out = AttentionOperand(tuple(st[:-2]), st[-2], st[-1])
    offsets.append(_batch_offset("yb", geom.batch, out.batch_strides, out.base))
    store = _store(geom, out)
    two = _async_tiles(k, v, geom, dp, dvp)
    if two is None:  # one stage, filled by the block between two barriers
        first, q_at = "", 0
        head = ("__syncthreads();  // every warp is done with the previous tile (and with Q)\n"
                f"    h16* const vs = ks + {BLOCK_KEYS * kp};"
                + _tile_load("ks", "k", "n0", geom.sk, dp, geom.d, k, "kb", kp) + "\n"
                + _tile_load("vs", "v", "n0", geom.sk, dvp, geom.dv, v, "vb", vp) + "\n    __syncthreads();")
    else:  # Q in stage 1's K rows, which tile 1 replaces once every warp holds Q's fragments
        (first, head), q_at = two, _stage_halves(dp, dvp)
    bound = MIN_CTAS_PER_SM.get((dp, dvp)) if two is not None else None
    min_blocks = f", {bound}" if bound else ""
    return _KERNEL.substitute(threads=THREADS, min_blocks=min_blocks, name=name, bias_param=bias_param + map_param,
        index_type=it, q_at=q_at, offsets=" ".join(offsets), block_rows=BLOCK_ROWS,
        q_fill=_tile_load("ks", "q", "m0", geom.sq, dp, geom.d, q, "qb", kp),
        q_map=_row_map(q_map, "m0", geom.sq, geom.d, kp), k_map=_row_map(k_map, "n0", geom.sk, geom.d, kp),
        first_tile=first, q_frags=dp // 16, kp=kp, o_tiles=dvp // 8, sk=geom.sk,
        block_keys=BLOCK_KEYS, loop_head=head, s_tiles=BLOCK_KEYS // 8,
        sq=geom.sq, score=score, add_bias=add_bias, pv_steps=BLOCK_KEYS // 16, vp=vp, store=store)
