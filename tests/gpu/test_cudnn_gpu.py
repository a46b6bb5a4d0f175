"""cuDNN's fused-convolution tactic on the GPU (where the library is installed): convolutions with
bias, residual and ReLU against float64 numpy on fresh random data, and layers on the tactic
through ``GpuPartition`` against the reference backend, at fp16 tolerance."""

from __future__ import annotations

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

import cupy as cp  # noqa: E402
from gemm_nets import check_on_tactic, one_conv_network  # noqa: E402

from backends.gpu.kernels import cudnn  # noqa: E402
from backends.gpu.kernels.conv import ConvGeometry, conv2d_cudnn  # noqa: E402
from backends.gpu.layout import pack_conv_weights  # noqa: E402
from backends.gpu.tactics import time_conv_cudnn  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not cudnn.available(), reason="no cuDNN")]

GEOMETRIES = [
    ConvGeometry(2, 9, 11, 16, 32, 3, 3, (1, 1), (1, 1)),
    ConvGeometry(3, 15, 13, 24, 64, 3, 3, (2, 2), (1, 1)),
    ConvGeometry(2, 8, 8, 64, 16, 1, 1),
    ConvGeometry(1, 20, 20, 3, 32, 7, 7, (2, 2), (3, 3)),  # a stem: 3 channels padded to 8
    ConvGeometry(2, 10, 10, 32, 64, 3, 3, (1, 1), (2, 2), (2, 2)),  # dilated
    ConvGeometry(2, 7, 7, 64, 64, 3, 3, (1, 1), (1, 1), groups=4),
]


def _float64_conv(x: np.ndarray, w: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """NHWC x (true channels), IR weights (K, C/G, R, S) -> NHWC float64, by explicit windows."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (g.pad[0], g.pad[0]), (g.pad[1], g.pad[1]), (0, 0)))
    y = np.zeros((g.n, g.p, g.q, g.k))
    cg, kg = g.c // g.groups, g.k // g.groups
    for u in range(g.r):
        for v in range(g.s):
            i0, j0 = u * g.dilation[0], v * g.dilation[1]
            rows = slice(i0, i0 + g.stride[0] * (g.p - 1) + 1, g.stride[0])
            win = xp[:, rows, j0:j0 + g.stride[1] * (g.q - 1) + 1:g.stride[1]]
            for grp in range(g.groups):
                ks = slice(grp * kg, (grp + 1) * kg)
                y[..., ks] += win[..., grp * cg:(grp + 1) * cg] @ w[ks, :, u, v].T.astype(np.float64)
    return y


@pytest.mark.parametrize("g", GEOMETRIES, ids=lambda g: f"{g.c}-{g.k}-{g.r}x{g.s}-s{g.stride[0]}-g{g.groups}")
@pytest.mark.parametrize("act, residual", [(0, False), (1, False), (1, True), (0, True)])
def test_every_offered_algorithm_matches_float64(rng, g, act, residual):
    algos = cudnn.algorithms(g, act)
    if not algos:
        pytest.skip(f"cuDNN offers no fused algorithm for {g} here")
    x = rng.uniform(-1, 1, (g.n, g.h, g.w, g.c)).astype(np.float16)
    wt = (rng.standard_normal((g.k, g.c // g.groups, g.r, g.s)) / np.sqrt(g.ktot)).astype(np.float16)
    b = rng.standard_normal(g.k).astype(np.float16)
    r = rng.uniform(-1, 1, (g.n, g.p, g.q, g.k)).astype(np.float16) if residual else None
    xd = cp.zeros((g.n, g.h, g.w, g.cp if g.groups == 1 else g.c), cp.float16)
    xd[..., :g.c] = cp.asarray(x)
    wd = cp.asarray(pack_conv_weights(wt.astype(np.float32)) if g.groups == 1 else wt.transpose(0, 2, 3, 1).copy())
    want = _float64_conv(x, wt, g) + b + (0 if r is None else r)
    want = np.maximum(want, 0) if act == 1 else want
    ran = 0
    for algo in algos:
        y = cp.full((g.n, g.p, g.q, g.k), np.nan, cp.float16)
        try:
            conv2d_cudnn(xd, wd, cp.asarray(b), y, g, (act, 0.0, 0.0), None if r is None else cp.asarray(r), algo)
        except Exception as e:  # the fused call may refuse an algorithm the heuristic listed: never a candidate
            assert "cuDNN" in str(e), e
            continue
        got = cp.asnumpy(y).astype(np.float64)
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 2e-3, algo
        ran += 1
    assert ran, f"no offered algorithm ran: {algos}"


def test_the_tactic_is_timed_only_where_the_fused_call_takes_the_layer():
    g = ConvGeometry(8, 28, 28, 64, 64, 3, 3, (1, 1), (1, 1))
    times = time_conv_cudnn(g, (1, 0.0, 0.0), True)
    assert times and all(cudnn.parse_tactic(name) is not None and t > 0 for name, t in times.items())
    assert time_conv_cudnn(g, (9, 0.0, 0.0), False) == {}  # GELU
    assert time_conv_cudnn(ConvGeometry(8, 28, 28, 64, 60, 3, 3), (1, 0.0, 0.0), False) == {}  # K % 8


def test_layers_on_the_cudnn_tactic_match_the_reference(rng):
    """The 1x1 convolution (bias, residual, ReLU) and the FC of the whole-layer tactics' check."""
    algos = set(cudnn.algorithms(ConvGeometry(3, 9, 7, 64, 128, 1, 1), 1))
    algos &= set(cudnn.algorithms(ConvGeometry(189, 1, 1, 128, 32, 1, 1), 0))  # the FC's rows as images
    if not algos:
        pytest.skip("cuDNN offers no fused algorithm for both layers here")
    check_on_tactic(rng, cudnn.tactic_name(min(algos)), None, kind="conv_cudnn")


def test_a_stem_on_cudnn_matches_the_reference(rng):
    """A 3-channel 7x7 stride-2 stem with ReLU taken by cuDNN as it is (no space-to-depth)."""
    from gpu_reference import assert_close

    from backends.gpu.backend import GpuPartition
    from backends.reference import execute as reference_execute

    net = one_conv_network(rng, "stem", (2, 3, 40, 40), 64, 7, stride=2, pad=3, weight_scale=1 / 12)
    algos = cudnn.algorithms(ConvGeometry(2, 40, 40, 3, 64, 7, 7, (2, 2), (3, 3)), 1)
    if not algos:
        pytest.skip("cuDNN offers no fused algorithm for the stem here")
    part = GpuPartition(net, ["stem"], {"stem": cudnn.tactic_name(algos[0])})
    kinds = [op.kind for u in part.units if u.lowered for op in u.lowered.ops]
    assert "conv_cudnn" in kinds and "s2d" not in kinds, kinds
    feeds = {"x": rng.uniform(-1, 1, (2, 3, 40, 40)).astype(np.float32)}
    got = part.create_context().execute(feeds)
    ref = reference_execute(net, feeds)
    assert_close(got[net.outputs[0]].astype(np.float64), ref[net.outputs[0]].astype(np.float64))
