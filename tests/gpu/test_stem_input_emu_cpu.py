"""The kernels that turn a network's float32 NCHW input into the stem's layout, on the CPU through
the CUDA emulator: ``quant_nchw_s8`` (int8 NHWC16, optionally the 2x2 space-to-depth) bit for bit
against ``int8_math.quantize``, and ``nchw_f32_to_s2d_f16`` (fp16) bit for bit against numpy's
float16 rounding, both in the space-to-depth mapping the stem's convolution expects (channel
(v * 2 + u) * C + c of pixel (i, j) is x[c, 2i + v, 2j + u], 0 outside the image).

RGB with an even width takes the paired-load path, every other shape the per-channel path; both are
covered, with odd heights and widths, an output grid larger than the image's, values past the int8
range, exact .5 ties and NaN.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emu import EmulatedModule, compiler

from backends.gpu.kernels import direct
from backends.gpu.kernels.direct_src import DIRECT_SRC
from backends.gpu.kernels.int8 import _NAMES, cp16
from backends.gpu.kernels.int8_src import INT8_SRC
from engine.ir.int8_math import quantize

pytestmark = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")


@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> EmulatedModule:
    return EmulatedModule(INT8_SRC, tmp_path_factory.mktemp("emu_quant8"), name_expressions=_NAMES, opt="-O1")


@pytest.fixture(scope="module")
def emu_direct(tmp_path_factory) -> EmulatedModule:
    return EmulatedModule(DIRECT_SRC, tmp_path_factory.mktemp("emu_s2d16"), name_expressions=direct._NAMES,
                          opt="-O1")


def _input(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Normal values spanning past +-128 steps, with exact ties (k + 0.5) * scale and a few NaNs."""
    x = (rng.standard_normal(shape) * 60 * scale).astype(np.float32)
    flat = x.reshape(-1)
    picks = rng.choice(flat.size, size=max(1, flat.size // 20), replace=False)
    flat[picks] = ((rng.integers(-140, 140, picks.size) + 0.5) * scale).astype(np.float32)
    far, nans = np.split(rng.choice(flat.size, size=7, replace=False), [4])
    flat[far] = np.array([200, -300, 1e6, -1e6], np.float32) * scale  # both saturation ends
    flat[nans] = np.nan
    return x


def _want(xq: np.ndarray, s2d: bool, oh: int, ow: int, cp: int) -> np.ndarray:
    n, c, h, w = xq.shape
    out = np.zeros((n, oh, ow, cp), xq.dtype)
    if not s2d:
        out[..., :c] = xq.transpose(0, 2, 3, 1)
        return out
    for v in range(2):
        for u in range(2):
            blk = xq[:, :, v::2, u::2].transpose(0, 2, 3, 1)
            out[:, :blk.shape[1], :blk.shape[2], (v * 2 + u) * c:(v * 2 + u + 1) * c] = blk
    return out


@pytest.mark.parametrize("shape,s2d,extra", [
    ((2, 3, 10, 12), True, 0),      # RGB, even width: the paired loads
    ((1, 3, 9, 16), True, 0),       # odd height: the last output row has its lower half outside
    ((2, 3, 8, 11), True, 0),       # odd width: per-channel loads
    ((1, 2, 7, 8), True, 0),        # two channels
    ((1, 4, 6, 6), True, 0),        # four channels fill the 16-byte vector
    ((2, 3, 5, 7), False, 0),       # plain NHWC16
    ((1, 20, 4, 5), False, 0),      # two channel vectors
    ((1, 3, 6, 8), True, 1),        # an output grid a row and a column larger than the image's
])
def test_quant_nchw_s8_emulated_bit_exact(emu, rng, shape, s2d, extra):
    n, c, h, w = shape
    scale = float(rng.uniform(0.01, 0.1))
    x = _input(rng, shape, scale)
    oh, ow = ((h + 1) // 2 + extra, (w + 1) // 2 + extra) if s2d else (h, w)
    cp = cp16(4 * c if s2d else c)
    y = np.full((n, oh, ow, cp), 0x5A, np.int8)
    total = n * oh * ow * (cp // 16)
    emu.run("quant_nchw_s8", (-(-total // 256),), 256,
            (x, y, *map(np.int32, (n, c, h, w, oh, ow, cp)), np.float32(scale), np.int32(1 if s2d else 0)))
    want = _want(quantize(x, np.float32(scale)), s2d, oh, ow, cp)
    assert (want == 127).any() and (want == -128).any(), "no saturated value: the range is not exercised"
    bad = np.argwhere(y != want)
    assert bad.size == 0, f"{len(bad)} of {y.size} differ, first at {bad[0].tolist()}"


@pytest.mark.parametrize("shape,extra", [
    ((2, 3, 10, 12), 0),    # RGB, even width: a thread per pixel, paired loads
    ((1, 3, 9, 16), 0),     # odd height
    ((2, 3, 8, 11), 0),     # odd width: a thread per 8 channels
    ((1, 1, 7, 8), 0),      # one channel (8 channels padded)
    ((1, 4, 6, 6), 0),
    ((1, 3, 6, 8), 1),      # an output grid a row and a column larger than the image's
])
def test_nchw_to_s2d_f16_emulated_bit_exact(emu_direct, rng, monkeypatch, shape, extra):
    n, c, h, w = shape
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    x.reshape(-1)[rng.choice(x.size, size=2, replace=False)] = [7e4, -1e-8]  # fp16 overflow, underflow
    oh, ow, cp = (h + 1) // 2 + extra, (w + 1) // 2 + extra, -(-4 * c // 8) * 8
    y = np.full((n, oh, ow, cp), np.float16(1234), np.float16)
    launches = []  # direct.nchw_to_s2d's own grid, recorded instead of launched
    monkeypatch.setattr(direct, "_fn", lambda name: lambda grid, block, args: launches.append((name, grid, block[0],
                                                                                                args)))
    direct.nchw_to_s2d(x, y, shape)
    for name, grid, block, args in launches:
        emu_direct.run(name, grid, block, args)
    with np.errstate(over="ignore"):  # 7e4 -> inf, as the kernel's round-to-nearest conversion gives
        want = _want(x.astype(np.float16), True, oh, ow, cp)
    bad = np.argwhere(y.view(np.uint16) != want.view(np.uint16))
    assert bad.size == 0, f"{len(bad)} of {y.size} differ, first at {bad[0].tolist()}"
