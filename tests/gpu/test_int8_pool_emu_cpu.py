"""INT8 pooling kernels (``int8_src``: ``pool2d_s8`` and the block-parallel ``global_pool_s8``) run
on the CPU through the CUDA emulator, bit for bit against the reference backend's INT8 pooling.

Launched as ``int8.pool2d_s8`` launches them (``pool2d_s8_launches`` picks the global kernel for a
window over the whole unpadded image): channel counts that fill one, part of one and several
blocks of channel vectors, images from 7 x 7 to 56 x 56, average and max.
"""

from __future__ import annotations

import int8_nets as nets
import numpy as np
import pytest
from cuda_emu import EmulatedModule, compiler

from backends.gpu.kernels.direct import PoolGeometry
from backends.gpu.kernels.int8 import _NAMES, cp16, is_global_pool, pool2d_s8_launches
from backends.gpu.kernels.int8_src import INT8_SRC
from backends.reference import int8 as ref8
from engine.ir import int8_annotation as annotation
from engine.ir.int8_math import dequantize, quantize

pytestmark = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")


@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> EmulatedModule:
    return EmulatedModule(INT8_SRC, tmp_path_factory.mktemp("emu_pool8"), name_expressions=_NAMES, opt="-O1")


@pytest.mark.parametrize("shape,kind,window,stride,pad", [
    ((2, 96, 56, 56), "average", 56, 1, 0),   # 6 channel vectors: one block of 8, two idle
    ((1, 20, 14, 14), "average", 14, 1, 0),   # 2 vectors: 128 slices each
    ((2, 1280, 7, 7), "average", 7, 1, 0),    # 80 vectors: 10 blocks per image
    ((3, 40, 9, 9), "max", 9, 1, 0),
    ((2, 64, 16, 16), "max", 3, 2, 1),        # not global: one thread per output vector
    ((1, 20, 9, 9), "average", 3, 2, 1),
])
def test_int8_pooling_emulated_bit_exact(emu, rng, shape, kind, window, stride, pad):
    net, feeds = nets.pool_net(rng, shape, kind, window, stride, pad)
    layer = net.layers[0]
    want = ref8.pooling(layer, [feeds["x"]])[0]
    n, c, h, w = shape
    _, _, p, q = want.shape
    g = PoolGeometry(n, h, w, c, p, q, (window, window), (stride, stride), (pad, pad), (pad, pad))
    launches = pool2d_s8_launches(None, None, g, kind == "average")
    assert [la.kernel for la in launches] == ["global_pool_s8" if window == h and pad == 0 else "pool2d_s8"]
    assert is_global_pool(g) == (launches[0].kernel == "global_pool_s8")
    scale = np.float32(annotation.read(layer).input_scales[0])
    xq = np.zeros((n, h, w, cp16(c)), np.int8)
    xq[..., :c] = quantize(feeds["x"], scale).transpose(0, 2, 3, 1)
    y = np.full((n, p, q, cp16(c)), 0x5A, np.int8)
    for la in pool2d_s8_launches(xq, y, g, kind == "average"):
        emu.run(la.kernel, la.grid, la.block, la.args, la.shared_mem)
    got = dequantize(np.ascontiguousarray(y[..., :c].transpose(0, 3, 1, 2)), scale)
    assert np.abs(want).max() > 0, "an all-zero reference proves nothing"
    bad = np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))
    assert bad.size == 0, f"{bad.size} of {got.size} differ"
