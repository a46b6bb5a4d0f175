"""CUDA snippets every kernel source starts with: fp16 bit conversions, PTX wrappers, activations.

fp16 values travel as ``unsigned short`` bits and convert through PTX ``cvt``, so the sources need
no CUDA headers (NVRTC under CuPy then compiles them the same everywhere).
"""

COMMON_SRC = r"""
typedef unsigned short h16;
typedef unsigned int u32;

__device__ __forceinline__ float h2f(h16 h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ h16 f2h(float f) { h16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ u32 pack2(float a, float b) { return (u32)f2h(a) | ((u32)f2h(b) << 16); }
__device__ __forceinline__ float lo2f(u32 v) { return h2f((h16)(v & 0xffffu)); }
__device__ __forceinline__ float hi2f(u32 v) { return h2f((h16)(v >> 16)); }

__device__ __forceinline__ u32 smem_addr(const void* p) {
  u32 r; asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p)); return r;
}
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" :: "n"(N)); }

__device__ __forceinline__ void ldmatrix_x4(u32* r, u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
// .trans: register i of lane l holds column l/4 of matrix i, rows 2(l%4) and 2(l%4)+1 (an fp16 B
// fragment of a [k][n] row-major tile).
__device__ __forceinline__ void ldmatrix_x4_trans(u32* r, u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void mma_16816(float* c, const u32* a, const u32* b) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Activation codes: backends/gpu/activations.py ACT_CODES.
__device__ __forceinline__ float softplus_f(float v) { return v > 20.f ? v : log1pf(expf(v)); }
__device__ __forceinline__ float act_fn(float v, int act, float a, float b) {
  switch (act) {
    case 0: return v;
    case 1: return fmaxf(v, 0.f);
    case 2: return fminf(fmaxf(v, a), b);
    case 3: return v > 0.f ? v : v * a;
    case 4: return 1.f / (1.f + expf(-v));
    case 5: return v / (1.f + expf(-v));
    case 6: return v * fminf(fmaxf(v * (1.f / 6.f) + 0.5f, 0.f), 1.f);
    case 7: return tanhf(v);
    case 8: return fminf(fmaxf(a * v + b, 0.f), 1.f);
    case 9: return 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
    case 10: return 0.5f * v * (1.f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    case 11: return v > 0.f ? v : a * expm1f(v);
    case 12: return softplus_f(v);
    case 13: return v * tanhf(softplus_f(v));
    case 14: return b * (v > 0.f ? v : a * expm1f(v));
    case 15: return fmaxf(v, 0.f) + fminf(0.f, a * expm1f(v / a));
    case 16: return v / (1.f + fabsf(v));
    case 17: return v > a ? v : 0.f;
  }
  return v;
}
// e^-v / (1 + e^-v) through the hardware exp2 and reciprocal (__expf, __fdividef): a few ulp of
// float32, far inside the fp16 rounding of every act8 caller's output, where expf and the IEEE
// division are a dozen instructions each and bound the SiLU epilogues. -v is clamped at 80 (the
// result there is 1.8e-35 of v, 0 in fp16) so the denominator stays below __fdividef's 2^126 limit;
// a NaN passes through. Host C++ (the CPU emulator) takes expf and a plain division.
__device__ __forceinline__ float sigmoid_denominator(float v) {
  const float t = -v;
#ifdef __CUDACC__
  return 1.f + __expf(t > 80.f ? 80.f : t);
#else
  return 1.f + expf(t > 80.f ? 80.f : t);
#endif
}
__device__ __forceinline__ float fast_div(float x, float y) {
#ifdef __CUDACC__
  return __fdividef(x, y);
#else
  return x / y;
#endif
}
// Eight values at once: one branch on the code, not one per value (the fused epilogues' hot path,
// whose outputs are all fp16).
__device__ __forceinline__ void act8(float* f, int act, float a, float b) {
  switch (act) {
    case 4:  // sigmoid
#pragma unroll
      for (int j = 0; j < 8; ++j) f[j] = fast_div(1.f, sigmoid_denominator(f[j]));
      return;
    case 5:  // SiLU
#pragma unroll
      for (int j = 0; j < 8; ++j) f[j] = fast_div(f[j], sigmoid_denominator(f[j]));
      return;
    case 0: return;
    case 1:
#pragma unroll
      for (int j = 0; j < 8; ++j) f[j] = fmaxf(f[j], 0.f);
      return;
    case 2:
#pragma unroll
      for (int j = 0; j < 8; ++j) f[j] = fminf(fmaxf(f[j], a), b);
      return;
    default:
#pragma unroll
      for (int j = 0; j < 8; ++j) f[j] = act_fn(f[j], act, a, b);
  }
}
"""
