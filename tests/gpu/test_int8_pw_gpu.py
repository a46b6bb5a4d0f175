"""The INT8 pointwise kernel (``pw_s8``) on the GPU: layers forced onto it through the lowering,
bit for bit against the reference INT8 kernels, and against the tensor-core tiles on MobileNetV2 /
EfficientNet-B0 shapes; the tactic timer offers it where it fits. Fresh random data. Skipped
without CUDA."""

from __future__ import annotations

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

import int8_nets as nets  # noqa: E402
from test_int8 import _check  # noqa: E402

from backends.gpu.kernels.int8_pw import POINTWISE8, PointwiseTactic8  # noqa: E402

pytestmark = pytest.mark.gpu

LAYERS = [  # n, c, h, k, act, residual
    pytest.param(2, 16, 56, 96, nets.SILU, False, id="effnet-expand-16-96-silu"),
    pytest.param(2, 32, 56, 16, None, False, id="mbv2-project-32-16"),
    pytest.param(2, 24, 28, 144, nets.CLIP6, False, id="mbv2-expand-24-144"),
    pytest.param(2, 40, 28, 240, nets.HSWISH, False, id="c40-hswish"),
    pytest.param(1, 64, 14, 384, nets.CLIP6, True, id="c64-residual"),
    pytest.param(3, 48, 9, 200, nets.RELU, True, id="odd-pixels-k200"),
]


@pytest.mark.parametrize("n,c,h,k,act,residual", LAYERS)
def test_int8_pointwise_bit_exact(rng, n, c, h, k, act, residual):
    net, feeds = nets.conv_net(rng, n, c, h, h, k, 1, 1, 0, act, residual)
    part = _check(net, feeds, {net.layers[0].name: POINTWISE8.name})
    tactics = [op.info["tactic"] for u in part.units if u.lowered for op in u.lowered.ops if op.kind == "conv8"]
    assert tactics and all(isinstance(t, PointwiseTactic8) for t in tactics), tactics


@pytest.mark.parametrize("c,k,h,nl", [(16, 96, 112, "silu"), (32, 16, 112, None), (24, 144, 56, None),
                                      (48, 32, 28, None), (64, 384, 14, None)])
def test_pointwise_equals_the_tiles_and_is_timed(rng, c, k, h, nl):
    """On a batch-16 layer with random int8 data and a random epilogue, ``pw_s8`` writes the tile
    kernel's bytes exactly; ``time_conv8_pointwise`` returns a time for it."""
    import cupy as cp

    from backends.gpu.kernels import int8 as int8k
    from backends.gpu.kernels.conv import ConvGeometry
    from backends.gpu.tactics import time_conv8_pointwise

    g = ConvGeometry(16, h, h, c, k, 1, 1)
    cp_, kp = int8k.cp16(c), int8k.cp16(k)
    x = cp.asarray(rng.integers(-128, 128, (g.m, cp_), dtype=np.int8))
    w = cp.asarray(rng.integers(-128, 128, (k, 1, 1, cp_), dtype=np.int8))
    net, _ = nets.conv_net(rng, 1, c, 4, 4, k, 1, 1, 0, nets.SILU if nl else nets.RELU, False)
    layer = net.layers[0]
    e8 = int8k.epilogue_params(layer, layer.params.activation, None, int8k.quantized_kernel(layer))
    dev = int8k.DeviceEpilogue.upload(e8)
    y_tile, y_pw = (cp.full((g.m, kp), 0x5A, cp.int8) for _ in range(2))
    t = int8k.heuristic_tactic8(g)
    ws = cp.empty(max(t.workspace_bytes(g), 4) // 4, cp.int32)
    int8k.conv2d_s8(x, w, y_tile, g, t, dev, None, ws, kp)
    int8k.conv2d_s8(x, w, y_pw, g, POINTWISE8, dev, None, None, kp)
    assert int(cp.count_nonzero(y_tile)) > y_tile.size // 4, "a mostly-zero output proves little"
    assert bool(cp.all(y_tile == y_pw)), f"{int(cp.count_nonzero(y_tile != y_pw))} bytes differ from {t.name}"
    times = time_conv8_pointwise(g, e8, False, kp)
    assert set(times) == {POINTWISE8.name} and times[POINTWISE8.name] > 0
