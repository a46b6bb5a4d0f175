"""GPU kernels vs float64 numpy references on fresh random data (skipped without CUDA).

Tolerance (fp16 outputs, fp32 accumulation): |out - ref| <= 1e-2*|ref| + 2e-3*max|ref| per
element and relative L2 error < 5e-3; see gpu_reference.assert_close. Outputs are poisoned with
NaN before each launch, and padded channels must come back as zeros.
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
from gpu_reference import act_ref, assert_close, conv_ref, pool_ref  # noqa: E402

from backends.gpu.graph import LaunchSequence  # noqa: E402
from backends.gpu.kernels import direct  # noqa: E402
from backends.gpu.kernels.compile import device_arch  # noqa: E402
from backends.gpu.kernels.conv import (  # noqa: E402
    TILES,
    TILES_WG,
    ConvGeometry,
    ConvTactic,
    Tile,
    conv2d,
    heuristic_tactic,
    wgmma_usable,
)
from backends.gpu.layout import pack_conv_weights, pack_depthwise_weights, pad_channels, round_up  # noqa: E402

pytestmark = pytest.mark.gpu


def _poison(shape: tuple[int, ...]) -> cp.ndarray:
    return cp.full(shape, cp.nan, dtype=cp.float16)


def _check_padding(y: np.ndarray, c: int) -> None:
    assert (y[..., c:] == 0).all(), "padded channels must be written as zeros"


def _run_conv(rng, g: ConvGeometry, tactic: ConvTactic | None = None, act=(1, 0.0, 0.0),
              residual: bool = False, bias: bool = True) -> None:
    tactic = tactic or heuristic_tactic(g)
    x = rng.uniform(-1, 1, (g.n, g.h, g.w, g.c)).astype(np.float16)
    w = (rng.standard_normal((g.k, g.c, g.r, g.s)) / math.sqrt(g.c * g.r * g.s)).astype(np.float16)
    b = (0.5 * rng.standard_normal(g.k)).astype(np.float32) if bias else None
    res = rng.uniform(-1, 1, (g.n, g.p, g.q, g.k)).astype(np.float16) if residual else None
    ref = conv_ref(x, w, g.stride, g.pad, g.dilation, g.pad_end)
    if b is not None:
        ref = ref + b
    if res is not None:
        ref = ref + res
    # thresholded relu jumps at alpha: fp16 rounding may put values within 1e-2 of it on either side
    near = np.abs(ref - act[1]) < 1e-2 if act[0] == 17 else None
    ref = act_ref(ref, *act)
    y = _poison((g.n, g.p, g.q, g.kp))
    ws = cp.empty(max(tactic.workspace_bytes(g), 4) // 4, cp.float32)
    conv2d(cp.asarray(pad_channels(x)), cp.asarray(pack_conv_weights(w)),
           None if b is None else cp.asarray(b), y, g, tactic, act,
           None if res is None else cp.asarray(pad_channels(res)), ws)
    out = y.get()
    _check_padding(out, g.k)
    if near is not None:
        ref = np.where(near, out[..., :g.k], ref)
    assert_close(out[..., :g.k], ref)


# ResNet-50 convolution classes: (n, h, w, c, k, r, s, stride, pad, residual)
RN50 = {
    "stem7x7s2": (224, 224, 3, 64, 7, 7, 2, 3, False),
    "3x3_64_56": (56, 56, 64, 64, 3, 3, 1, 1, False),
    "1x1_256to64_56": (56, 56, 256, 64, 1, 1, 1, 0, False),
    "1x1_64to256_56_res": (56, 56, 64, 256, 1, 1, 1, 0, True),
    "3x3_128_s2": (56, 56, 128, 128, 3, 3, 2, 1, False),
    "1x1_256to512_s2": (56, 56, 256, 512, 1, 1, 2, 0, False),
    "3x3_512_7": (7, 7, 512, 512, 3, 3, 1, 1, False),
    "1x1_2048to512_7": (7, 7, 2048, 512, 1, 1, 1, 0, False),
    "1x1_512to2048_7_res": (7, 7, 512, 2048, 1, 1, 1, 0, True),
}


@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("name", list(RN50))
def test_conv_resnet50_shapes(rng, name, batch):
    h, w, c, k, r, s, st, pd, residual = RN50[name]
    g = ConvGeometry(batch, h, w, c, k, r, s, (st, st), (pd, pd))
    _run_conv(rng, g, residual=residual)


@pytest.mark.parametrize("tile", TILES, ids=lambda t: f"{t.dims}w{t.wm}x{t.wn}s{t.stages}")
@pytest.mark.parametrize("splits", [1, 3])
def test_conv_every_tile(rng, tile, splits):
    g = ConvGeometry(2, 11, 13, 36, 72, 3, 3, (1, 1), (1, 1))
    _run_conv(rng, g, ConvTactic(tile, splits), act=(5, 0.0, 0.0), residual=True)


def test_wgmma_tiles_run_on_hopper():
    """On an sm_90 device the sm_90a module compiles, so the wgmma tiles are timed (not silently dropped)."""
    assert wgmma_usable() == (device_arch() == "sm_90")


WG_GEOMS = {
    "3x3_c36_k72": ConvGeometry(2, 11, 13, 36, 72, 3, 3, (1, 1), (1, 1)),  # ragged M and K, k-tile tail
    "1x1_256to64_b32": ConvGeometry(32, 56, 56, 256, 64, 1, 1),
    "3x3_128_s2_b8": ConvGeometry(8, 56, 56, 128, 128, 3, 3, (2, 2), (1, 1)),
    "1x1_512to2048_b4": ConvGeometry(4, 7, 7, 512, 2048, 1, 1),
}


@pytest.mark.skipif(not wgmma_usable(), reason="wgmma needs an sm_90 device")
@pytest.mark.parametrize("geom", list(WG_GEOMS))
@pytest.mark.parametrize("tile", TILES_WG, ids=lambda t: f"{t.dims}s{t.stages}")
@pytest.mark.parametrize("splits", [1, 3])
def test_conv_wgmma_tiles(rng, tile, geom, splits):
    g = WG_GEOMS[geom]
    _run_conv(rng, g, ConvTactic(tile, splits), act=(5, 0.0, 0.0), residual=True)


@pytest.mark.parametrize("splits", [1, 2, 5, 8, 16])
def test_conv_split_k_batch1(rng, splits):
    g = ConvGeometry(1, 7, 7, 512, 512, 3, 3, (1, 1), (1, 1))
    _run_conv(rng, g, ConvTactic(Tile(32, 64, 1, 2, 4), splits), residual=True)


@pytest.mark.parametrize("geom", [
    ConvGeometry(2, 17, 13, 5, 12, 5, 3, (2, 1), (2, 1), (2, 1), pad_end=(3, 0)),  # C, K not /8; asym pad
    ConvGeometry(3, 9, 9, 3, 10, 1, 1),
    ConvGeometry(1, 31, 29, 20, 44, 3, 3, (2, 2), (1, 1)),
    ConvGeometry(4, 1, 1, 2048, 1000, 1, 1),  # fully connected as a 1x1 convolution
    ConvGeometry(1, 1, 1, 2048, 1000, 1, 1),
], ids=["odd_dilated", "c3_1x1", "c20_s2", "fc_b4", "fc_b1"])
@pytest.mark.parametrize("tile", [Tile(64, 64, 2, 2, 4), Tile(16, 64, 1, 2, 4)], ids=["64x64", "16x64"])
def test_conv_odd_shapes(rng, geom, tile):
    _run_conv(rng, geom, ConvTactic(tile), act=(3, 0.1, 0.0), bias=geom.c != 3)


ACTS = [(0, 0, 0), (1, 0, 0), (2, 0.0, 6.0), (3, 0.1, 0), (4, 0, 0), (5, 0, 0), (6, 0, 0), (7, 0, 0),
        (8, 0.2, 0.5), (9, 0, 0), (10, 0, 0), (11, 1.0, 0), (12, 0, 0), (13, 0, 0), (14, 1.6733, 1.0507),
        (15, 1.0, 0), (16, 0, 0), (17, 0.5, 0)]


@pytest.mark.parametrize("act", ACTS, ids=lambda a: f"act{a[0]}")
def test_conv_activations(rng, act):
    g = ConvGeometry(2, 8, 8, 16, 24, 3, 3, (1, 1), (1, 1))
    _run_conv(rng, g, ConvTactic(Tile(64, 64, 2, 2, 4)), act=act, residual=True)


@pytest.mark.parametrize("n,h,c,r,st,pd,act,residual", [
    (2, 28, 32, 3, 1, 1, (2, 0.0, 6.0), False),
    (2, 15, 20, 5, 2, 2, (6, 0, 0), True),
    (1, 112, 96, 3, 2, 1, (1, 0, 0), False),
])
def test_depthwise(rng, n, h, c, r, st, pd, act, residual):
    g = ConvGeometry(n, h, h, c, c, r, r, (st, st), (pd, pd))
    x = rng.uniform(-1, 1, (n, h, h, c)).astype(np.float16)
    w = (rng.standard_normal((c, 1, r, r)) / r).astype(np.float16)
    b = rng.standard_normal(round_up(c, 8)).astype(np.float32)
    res = rng.uniform(-1, 1, (n, g.p, g.q, c)).astype(np.float16) if residual else None
    ref = conv_ref(x, w, g.stride, g.pad, groups=c) + b[:c] + (0 if res is None else res)
    ref = act_ref(ref, *act)
    y = _poison((n, g.p, g.q, g.cp))
    direct.depthwise_conv(cp.asarray(pad_channels(x)), cp.asarray(pack_depthwise_weights(w)), cp.asarray(b), y,
                          g, act, None if res is None else cp.asarray(pad_channels(res)))
    out = y.get()
    _check_padding(out, c)
    assert_close(out[..., :c], ref)


@pytest.mark.parametrize("n,h,c,win,st,pd,pe,p,average,count_pad", [
    (1, 112, 64, 3, 2, 1, 1, 56, False, False),  # ResNet-50 max pool
    (2, 112, 64, 3, 2, 1, 1, 56, False, False),
    (2, 14, 20, 3, 1, 1, 1, 14, True, True),
    (2, 14, 20, 3, 1, 1, 1, 14, True, False),
    (2, 10, 12, 3, 2, 0, 0, 5, True, False),  # ceil mode: the last window runs past the input
    (2, 10, 12, 3, 2, 0, 0, 5, False, False),
    (1, 7, 2048, 7, 1, 0, 0, 1, True, False),  # global average pool
    (32, 7, 2048, 7, 1, 0, 0, 1, True, False),
])
def test_pool(rng, n, h, c, win, st, pd, pe, p, average, count_pad):
    from backends.gpu.kernels.direct import PoolGeometry

    x = rng.uniform(-2, 2, (n, h, h, c)).astype(np.float16)
    g = PoolGeometry(n, h, h, c, p, p, (win, win), (st, st), (pd, pd), (pe, pe))
    ref = pool_ref(x, g.window, g.stride, g.pad, g.pad_end, p, p, average, count_pad)
    y = _poison((n, p, p, round_up(c, 8)))
    direct.pool2d(cp.asarray(pad_channels(x)), y, g, average, count_pad)
    out = y.get()
    _check_padding(out, c)
    assert_close(out[..., :c], ref)


@pytest.mark.parametrize("c", [3, 8, 20])
def test_layout_round_trip(rng, c):
    n, h, w = 2, 17, 19
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    nhwc = _poison((n, h, w, round_up(c, 8)))
    direct.nchw_to_nhwc(cp.asarray(x), nhwc, n, c, h * w)
    got = nhwc.get()
    _check_padding(got, c)
    assert_close(got[..., :c], x.transpose(0, 2, 3, 1).astype(np.float16).astype(np.float64))
    back = cp.full((n, c, h, w), cp.nan, cp.float32)
    direct.nhwc_to_nchw(nhwc, back, n, c, h * w)
    assert_close(back.get(), x.astype(np.float16).astype(np.float64))


@pytest.mark.parametrize("act", [(1, 0, 0), (5, 0, 0)])
def test_add_act(rng, act):
    pixels, c = 300, 20
    a = rng.uniform(-2, 2, (pixels, c)).astype(np.float16)
    b = rng.uniform(-2, 2, (pixels, c)).astype(np.float16)
    y = _poison((pixels, round_up(c, 8)))
    direct.add_act(cp.asarray(pad_channels(a)), cp.asarray(pad_channels(b)), y, pixels, c, act)
    out = y.get()
    _check_padding(out, c)
    assert_close(out[..., :c], act_ref(a.astype(np.float64) + b, *act))


def test_hold_stream_holds_the_work_behind_it():
    """The profiler's hold: events around it span at least the time asked for (the kernel counts
    SM cycles at the peak clock, so a slower clock only lengthens it), and the work enqueued
    behind it still runs."""
    from backends.gpu.graph import hold_stream

    stream = cp.cuda.Stream(non_blocking=True)
    a, b = cp.cuda.Event(), cp.cuda.Event()
    x = cp.zeros(4, cp.float32)
    with stream:
        a.record(stream)
        hold_stream(stream, 0.02)
        x += 1
        b.record(stream)
    b.synchronize()
    assert cp.cuda.get_elapsed_time(a, b) >= 19.0
    assert x.get().tolist() == [1.0] * 4


def test_graph_replay_matches_reference(rng):
    """input conversion -> conv+relu -> 1x1 conv+residual+relu -> global pool, as one CUDA graph."""
    from backends.gpu.arena import Arena, BufferUse, plan_offsets
    from backends.gpu.kernels.direct import PoolGeometry

    n, c, h, k = 2, 3, 20, 16
    g1 = ConvGeometry(n, h, h, c, k, 3, 3, (1, 1), (1, 1))
    g2 = ConvGeometry(n, h, h, k, k, 1, 1)
    gp = PoolGeometry.global_pool(n, h, h, k)
    sizes = {"x32": n * c * h * h * 4, "x16": n * h * h * 8 * 2, "a": n * h * h * k * 2, "b": n * h * h * k * 2,
             "out": n * k * 2}
    life = {"x32": (0, 0), "x16": (0, 1), "a": (1, 2), "b": (2, 3), "out": (3, 3)}
    offsets, total = plan_offsets([BufferUse(nm, sz, *life[nm]) for nm, sz in sizes.items()])
    arena = Arena(total)
    x32 = arena.view(offsets["x32"], (n, c, h, h), cp.float32)
    x16 = arena.view(offsets["x16"], (n, h, h, 8), cp.float16)
    a = arena.view(offsets["a"], (n, h, h, k), cp.float16)
    b = arena.view(offsets["b"], (n, h, h, k), cp.float16)
    out = arena.view(offsets["out"], (n, 1, 1, k), cp.float16)
    w1 = (rng.standard_normal((k, c, 3, 3)) / 5).astype(np.float16)
    w2 = (rng.standard_normal((k, k, 1, 1)) / 4).astype(np.float16)
    b1 = rng.standard_normal(k).astype(np.float32)
    dw1, dw2, db1 = cp.asarray(pack_conv_weights(w1)), cp.asarray(pack_conv_weights(w2)), cp.asarray(b1)
    t = ConvTactic(Tile(64, 64, 2, 2, 4))
    seq = LaunchSequence()
    seq.add("to_nhwc", lambda: direct.nchw_to_nhwc(x32, x16, n, c, h * h))
    seq.add("conv1", lambda: conv2d(x16, dw1, db1, a, g1, t, (1, 0, 0)))
    seq.add("conv2", lambda: conv2d(a, dw2, None, b, g2, t, (1, 0, 0), residual=a))
    seq.add("pool", lambda: direct.pool2d(b, out, gp, average=True))
    graph = seq.capture()
    for _ in range(2):  # the graph must read the buffers' current contents on every replay
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        x32.set(x, stream=graph.stream)
        graph.replay()
        graph.synchronize()
        xh = x.astype(np.float16).astype(np.float64).transpose(0, 2, 3, 1)
        ra = np.maximum(conv_ref(xh, w1, pad=(1, 1)) + b1, 0)
        rb = np.maximum(conv_ref(ra, w2) + ra, 0)
        assert_close(out.get()[:, 0, 0], rb.mean(axis=(1, 2)))
    times = graph.time_ms(replays=5, groups=3, warmup=1)
    assert times["min"] > 0
