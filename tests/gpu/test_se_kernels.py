"""The squeeze-excitation kernels vs float64 numpy on fresh random data (skipped without CUDA).

``direct.global_pool`` (the block-parallel global average/max over H*W) and the 1x1 convolution
that applies the SE scale while loading its input (``conv2d(..., scale=s)``), for every tile and a
split-K variant. Outputs are poisoned with NaN first; padded channels must come back as zeros.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

import cupy as cp  # noqa: E402
from gpu_reference import assert_close  # noqa: E402

from backends.gpu.kernels import direct  # noqa: E402
from backends.gpu.kernels.conv import TILES, ConvGeometry, ConvTactic, conv2d  # noqa: E402
from backends.gpu.layout import pack_conv_weights, pad_channels, round_up  # noqa: E402

pytestmark = pytest.mark.gpu



# EfficientNet-B0's squeezes (h, c) and odd shapes; batch 1 and 3
@pytest.mark.parametrize("n,h,c", [(1, 112, 32), (3, 56, 96), (1, 28, 240), (2, 14, 672), (1, 7, 1152),
                                   (3, 5, 20), (1, 1, 12), (2, 9, 300)])
@pytest.mark.parametrize("average", [True, False])
def test_global_pool(rng, n, h, c, average):
    cp_ = round_up(c, 8)
    x = rng.uniform(-1, 1, (n, h, h, c)).astype(np.float16)
    ref = x.astype(np.float64).mean(axis=(1, 2)) if average else x.astype(np.float64).max(axis=(1, 2))
    for ldy in (cp_, c):  # NHWC (N, C, 1, 1) output, or (N, C) rows
        y = cp.full((n, ldy), cp.nan, cp.float16)
        direct.global_pool(cp.asarray(pad_channels(x)), y, n, h * h, c, ldy, average)
        out = y.get().astype(np.float64)
        assert (out[:, c:] == 0).all()
        np.testing.assert_allclose(out[:, :c], ref, rtol=2e-3, atol=2e-3)


def _se_conv(rng, g: ConvGeometry, tactic: ConvTactic) -> None:
    x = rng.uniform(-1, 1, (g.n, g.h, g.w, g.c)).astype(np.float16)
    s = rng.uniform(0, 1, (g.n, g.c)).astype(np.float16)
    w = (rng.standard_normal((g.k, g.c, 1, 1)) / math.sqrt(g.c)).astype(np.float16)
    b = (0.5 * rng.standard_normal(g.k)).astype(np.float32)
    xs = (x.astype(np.float32) * s[:, None, None, :].astype(np.float32)).astype(np.float16)  # the fp16 Mul
    ref = np.einsum("nhwc,kc->nhwk", xs.astype(np.float64), w[:, :, 0, 0].astype(np.float64)) + b
    y = cp.full((g.n, g.p, g.q, g.kp), cp.nan, cp.float16)
    ws = cp.empty(max(tactic.workspace_bytes(g), 4) // 4, cp.float32)
    conv2d(cp.asarray(pad_channels(x)), cp.asarray(pack_conv_weights(w)), cp.asarray(b), y, g, tactic,
           (0, 0.0, 0.0), None, ws, cp.asarray(pad_channels(s)))
    out = y.get()
    assert (out[..., g.k:] == 0).all()
    assert_close(out[..., :g.k], ref)


@pytest.mark.parametrize("tile", TILES, ids=lambda t: t.template)
def test_conv_se_scale_every_tile(rng, tile):
    _se_conv(rng, ConvGeometry(3, 7, 7, 204, 52, 1, 1), ConvTactic(tile, 1))  # tiles span images


@pytest.mark.parametrize("splits", [2, 5])
def test_conv_se_scale_split_k(rng, splits):
    _se_conv(rng, ConvGeometry(1, 14, 14, 672, 112, 1, 1), ConvTactic(TILES[-1], splits))
