"""The fused attention kernel (``kernels/attention_src.py``) beside PyTorch's
``scaled_dot_product_attention`` (flash / memory-efficient kernels), fp16, one process, one GPU.

Shapes: ViT-B/16's self-attention (197 tokens, 12 heads of 64) at batch 1, 32 and 256, read as the
lowering reads it (Q, K and V as strided views of the fused QKV projection, O written into the
(batch, tokens, heads·64) layout the output projection reads); Swin-T's 7x7 windows (49 tokens,
heads of 32); a long sequence (1024 tokens); head dims 80 and 128. Both sides read the same views
and are timed the same way: CUDA events around ``reps`` back-to-back launches, medians over groups.
Each output is checked against float64 numpy on its first two batch entries (relative L2).

Usage (needs CUDA, CuPy, torch): python bench/gpu_attention.py [--reps 30] [--groups 9] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from gpu_peers import time_events, write_results  # noqa: E402

# name: (batch, heads, tokens, head dim, Q/K/V as views of a fused projection)
SHAPES = {
    "vit_b16_b1": (1, 12, 197, 64, True),
    "vit_b16_b32": (32, 12, 197, 64, True),
    "vit_b16_b256": (256, 12, 197, 64, True),
    "swin_t_windows_b32": (2048, 3, 49, 32, False),
    "seq1024_d64": (8, 16, 1024, 64, False),
    "seq300_d128": (16, 8, 300, 128, False),
    "seq77_d80": (64, 4, 77, 80, False),
}


def _reference(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """softmax(Q·Kᵀ/√d)·V in float64, (b, h, s, d) in, (b, s, h·d) out."""
    s = np.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(q.shape[-1])
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = np.einsum("bhqk,bhkd->bhqd", p, v)
    return o.transpose(0, 2, 1, 3).reshape(o.shape[0], o.shape[2], -1)


def measure(name: str, shape: tuple, reps: int, groups: int) -> dict:
    import cupy
    import torch

    from backends.gpu.kernels import attention_src as att
    from backends.gpu.kernels.common import COMMON_SRC
    from backends.gpu.kernels.compile import get_function

    b, h, s, d, fused = shape
    rng = np.random.default_rng(0)
    if fused:  # (b, s, 3·h·d): the QKV projection's output
        qkv = torch.as_tensor(rng.standard_normal((b, s, 3 * h * d)), dtype=torch.float16, device="cuda")
        q, k, v = (qkv.view(b, s, 3, h, d)[:, :, i].transpose(1, 2) for i in range(3))
    else:
        q, k, v = (torch.as_tensor(rng.standard_normal((b, h, s, d)), dtype=torch.float16, device="cuda")
                   for _ in range(3))
    ops = [att.AttentionOperand((t.stride(0), t.stride(1)), t.stride(2), t.stride(3),
                                t.storage_offset()) for t in (q, k, v)]
    geom = att.AttentionGeometry((b, h), s, s, d, d, d ** -0.5)
    out_op = att.AttentionOperand((s * h * d, d), h * d, 1)
    fn = get_function(COMMON_SRC + att.attention_kernel("attn", geom, *ops, out=out_op), "attn")
    y = torch.empty((b, s, h * d), dtype=torch.float16, device="cuda")
    base = [qkv] * 3 if fused else [q, k, v]
    args = [cupy.asarray(y)] + [cupy.asarray(t) for t in base]
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)

    def hetrt() -> None:
        with stream:
            fn(geom.grid, (att.THREADS,), tuple(args), shared_mem=att.shared_bytes(geom))

    sdpa = torch.nn.functional.scaled_dot_product_attention
    t_h = time_events(hetrt, reps, groups)
    t_t = time_events(lambda: sdpa(q, k, v), reps, groups)
    n = min(b, 2)
    want = _reference(*(t[:n].double().cpu().numpy() for t in (q, k, v)))
    got_t = sdpa(q[:n], k[:n], v[:n]).transpose(1, 2).reshape(n, s, h * d)

    def rel(x: torch.Tensor) -> float:
        x = x.double().cpu().numpy()
        return float(np.linalg.norm(x - want) / np.linalg.norm(want))

    row = {"shape": name, "batch": b, "heads": h, "tokens": s, "head_dim": d, "qkv_views": fused,
           "hetrt_ms": t_h, "torch_sdpa_ms": t_t, "hetrt_over_sdpa": t_h["median"] / t_t["median"],
           "rel_l2_hetrt": rel(y[:n]), "rel_l2_sdpa": rel(got_t),
           "tflops_hetrt": 4 * b * h * s * s * d / (t_h["median"] * 1e-3) / 1e12}
    print(f"{name:20s} hetrt {t_h['median']:.4f} ms  sdpa {t_t['median']:.4f} ms  "
          f"ratio {row['hetrt_over_sdpa']:.2f}  rel {row['rel_l2_hetrt']:.1e} / {row['rel_l2_sdpa']:.1e}")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--groups", type=int, default=9)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = [measure(n, SHAPES[n], args.reps, args.groups) for n in args.shapes]
    if args.out:
        write_results(args.out, rows)


if __name__ == "__main__":
    main()
