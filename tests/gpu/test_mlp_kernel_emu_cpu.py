"""The fused MLP kernel (``kernels/mlp_src``) run on the CPU through the CUDA emulator, against a
float64 numpy reference on fresh random data: ConvNeXt's first stage, ragged row counts, a grid
smaller than the row blocks (each block walks several, prefetching the next), hidden and output
widths that are not multiples of the chunk or the tile, GELU / ReLU / SiLU / tanh between the
layers, an output activation, a residual."""

from __future__ import annotations

import math

import numpy as np
import pytest
from cuda_emu import EmulatedModule, compiler

from backends.gpu.kernels import gen
from backends.gpu.kernels import mlp_src as mlp

pytestmark = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")

ACTS = {1: lambda v: np.maximum(v, 0), 7: np.tanh, 5: lambda v: v / (1 + np.exp(-v)), 0: lambda v: v}


def _gelu(v):
    from scipy.special import erf

    return 0.5 * v * (1 + erf(v / math.sqrt(2)))


ACTS[9] = _gelu


def pad_weights(g: mlp.MlpGeometry, w1, b1, w2, b2):
    """The kernel's padded operands: W1 (Hp x Cp) and W2 (C'p x Hp) fp16, the biases fp32."""
    p1 = np.zeros((g.hp, g.cp), np.float16)
    p1[:g.h, :g.c] = w1
    p2 = np.zeros((g.cop, g.hp), np.float16)
    p2[:g.co, :g.h] = w2
    q1 = np.zeros(g.hp, np.float32)
    q1[:g.h] = b1
    q2 = np.zeros(g.cop, np.float32)
    q2[:g.co] = b2
    return p1, q1, p2, q2


def reference(x, w1, b1, w2, b2, act1, act2, r=None):
    h = ACTS[act1](x.astype(np.float64) @ w1.T.astype(np.float64) + b1)
    h = h.astype(np.float16).astype(np.float64)  # the hidden units are fp16, as the unfused layer stores them
    y = h @ w2.T.astype(np.float64) + b2 + (0 if r is None else r)
    return ACTS[act2](y)


CASES = [  # m, c, h, c', act1, act2, residual, grid limit
    (200, 96, 384, 96, 9, 0, True, 132),  # ConvNeXt's first stage, ragged rows
    (37, 40, 72, 24, 1, 1, False, 132),  # nothing a multiple of the chunk; ReLU out
    (700, 64, 128, 64, 5, 0, True, 2),  # two blocks walk six row blocks
    (16, 8, 8, 8, 7, 0, False, 132),  # the smallest
    (129, 96, 64, 128, 9, 0, True, 1),  # C' wider than C; one block walks both row blocks
]


@pytest.mark.parametrize("case", CASES, ids=[f"m{c[0]}_c{c[1]}_h{c[2]}_co{c[3]}_g{c[7]}" for c in CASES])
def test_fused_mlp_matches_float64(tmp_path, monkeypatch, case):
    m, c, h, co, act1, act2, residual, blocks = case
    monkeypatch.setattr(mlp, "MAX_BLOCKS", blocks)
    rng = np.random.default_rng()
    g = mlp.MlpGeometry(m, c, h, co, (act1, 0.0, 0.0), (act2, 0.0, 0.0), residual)
    x = rng.standard_normal((m, c)).astype(np.float16)
    w1 = (rng.standard_normal((h, c)) / math.sqrt(c)).astype(np.float16)
    w2 = (rng.standard_normal((co, h)) / math.sqrt(h)).astype(np.float16)
    b1 = (0.3 * rng.standard_normal(h)).astype(np.float16).astype(np.float32)
    b2 = (0.3 * rng.standard_normal(co)).astype(np.float16).astype(np.float32)
    r = rng.standard_normal((m, co)).astype(np.float16) if residual else None
    src = gen.GEN_PRELUDE + mlp.mlp_kernel("mlp", g)
    emu = EmulatedModule(src.replace(gen.GEN_PRELUDE[len(gen.COMMON_SRC):], "\n", 1), tmp_path)
    y = np.full((m, co), np.nan, np.float16)
    args = [y, x, *pad_weights(g, w1, b1, w2, b2)] + ([r] if residual else [])
    emu.run("mlp", g.grid, 32 * mlp.WARPS, args, g.smem_bytes)
    want = reference(x, w1, b1, w2, b2, act1, act2, r)
    rel = np.linalg.norm(y.astype(np.float64) - want) / np.linalg.norm(want)
    assert np.isfinite(y).all() and rel < 2e-3, rel


def test_unsupported_geometries_say_why():
    assert "multiples of 8" in mlp.supported(mlp.MlpGeometry(4, 12, 64, 16, (0, 0.0, 0.0)))
    assert "registers" in mlp.supported(mlp.MlpGeometry(4, 192, 768, 192, (0, 0.0, 0.0)))
    assert "shared memory" in mlp.supported(mlp.MlpGeometry(4, 128, 512, 128, (0, 0.0, 0.0)))
    convnext = mlp.MlpGeometry(100352, 96, 384, 96, (9, 0.0, 0.0))
    assert mlp.supported(convnext) is None and convnext.smem_bytes <= mlp.MAX_SMEM
    assert convnext.grid == (mlp.MAX_BLOCKS,)
    with pytest.raises(ValueError, match="MLP kernel"):
        mlp.mlp_kernel("k", mlp.MlpGeometry(0, 16, 16, 16, (0, 0.0, 0.0)))
