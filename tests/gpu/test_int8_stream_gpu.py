"""The streaming INT8 1x1 kernel (``conv1x1_stream_s8``) on the GPU: layers forced onto it through
the lowering, bit for bit against the reference INT8 kernels, and against the tensor-core tiles on
ResNet-50 / EfficientNet-B0 shapes with every streaming tile; the tactic timer offers it where it
fits. Fresh random data. Skipped without CUDA."""

from __future__ import annotations

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

import int8_nets as nets  # noqa: E402
from test_int8 import _check  # noqa: E402

from backends.gpu.kernels.int8_stream import STREAM8_TILES, StreamTactic8  # noqa: E402

pytestmark = pytest.mark.gpu

LAYERS = [  # n, c, h, k, stride, act, residual, tile
    pytest.param(2, 64, 56, 256, 1, None, True, 1, id="rn50-expand-64-256-residual"),
    pytest.param(2, 256, 56, 64, 1, nets.RELU, False, 0, id="rn50-reduce-256-64"),
    pytest.param(2, 256, 56, 512, 2, None, False, 7, id="rn50-downsample-stride2"),
    pytest.param(2, 512, 28, 128, 1, nets.RELU, False, 3, id="rn50-reduce-512-128"),
    pytest.param(2, 40, 28, 240, 1, nets.SILU, False, 4, id="effnet-expand-40-240-silu"),
    pytest.param(3, 48, 9, 200, 1, nets.CLIP6, True, 6, id="odd-pixels-k200"),
]


@pytest.mark.parametrize("n,c,h,k,stride,act,residual,tile", LAYERS)
def test_int8_stream_bit_exact(rng, n, c, h, k, stride, act, residual, tile):
    net, feeds = nets.conv_net(rng, n, c, h, h, k, 1, stride, 0, act, residual)
    part = _check(net, feeds, {net.layers[0].name: StreamTactic8(STREAM8_TILES[tile]).name})
    tactics = [op.info["tactic"] for u in part.units if u.lowered for op in u.lowered.ops if op.kind == "conv8"]
    assert tactics and all(isinstance(t, StreamTactic8) for t in tactics), tactics


@pytest.mark.parametrize("c,k,h,stride", [(64, 256, 56, 1), (256, 64, 56, 1), (512, 256, 28, 2), (112, 672, 14, 1)])
def test_stream_equals_the_tiles_and_is_timed(rng, c, k, h, stride):
    """On a batch-16 layer with random int8 data and a random epilogue, every streaming tile that
    fits writes the tile kernel's bytes exactly; ``time_conv8_stream`` returns a time for each."""
    import cupy as cp

    from backends.gpu.kernels import int8 as int8k
    from backends.gpu.kernels.conv import ConvGeometry
    from backends.gpu.kernels.int8_stream import stream8_candidates
    from backends.gpu.tactics import time_conv8_stream

    g = ConvGeometry(16, h, h, c, k, 1, 1, stride=(stride, stride))
    cp_, kp = int8k.cp16(c), int8k.cp16(k)
    x = cp.asarray(rng.integers(-128, 128, (g.n, g.h, g.w, cp_), dtype=np.int8))
    w = cp.asarray(rng.integers(-128, 128, (k, 1, 1, cp_), dtype=np.int8))
    res = cp.asarray(rng.integers(-128, 128, (g.m, kp), dtype=np.int8))
    net, _ = nets.conv_net(rng, 1, c, 4, 4, k, 1, 1, 0, nets.RELU, True)
    layer = net.layers[0]
    e8 = int8k.epilogue_params(layer, layer.params.activation, 0.05, int8k.quantized_kernel(layer))
    dev = int8k.DeviceEpilogue.upload(e8)
    y_tile = cp.full((g.m, kp), 0x5A, cp.int8)
    t = int8k.heuristic_tactic8(g)
    ws = cp.empty(max(t.workspace_bytes(g), 4) // 4, cp.int32)
    int8k.conv2d_s8(x, w, y_tile, g, t, dev, res, ws, kp)
    assert int(cp.count_nonzero(y_tile)) > y_tile.size // 4, "a mostly-zero output proves little"
    cands = stream8_candidates(g, kp)
    assert cands
    for s in cands:
        y = cp.full((g.m, kp), 0x5A, cp.int8)
        int8k.conv2d_s8(x, w, y, g, s, dev, res, None, kp)
        assert bool(cp.all(y_tile == y)), f"{s.name}: {int(cp.count_nonzero(y_tile != y))} bytes differ from {t.name}"
    times = time_conv8_stream(g, e8, True, kp)
    assert set(times) == {s.name for s in cands} and all(v > 0 for v in times.values())
