"""The FP16 depthwise convolution's row-tiled kernel (``direct_src.depthwise_conv_row``: 2 or 4
output columns per thread) run on the CPU through the CUDA emulator, via the real launcher
(``direct.depthwise_conv``), on fresh random data.

Bit for bit against the generic one-output kernel (the row kernel sums in the same order, and a
column outside the image adds fmaf(0, w, acc) = acc), and within fp16 tolerance of a float64
reference: window widths 3, 5 and 7, column strides 1 and 2, row strides and row dilation,
padding on both edges, output widths that are not a multiple of the tile, bias, residual and
activations, channels not a multiple of 8 (zero padding checked).
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emu import EmulatedModule, compiler
from gpu_reference import act_ref, conv_ref

from backends.gpu.kernels import direct
from backends.gpu.kernels.conv import ConvGeometry
from backends.gpu.kernels.direct_src import DIRECT_SRC
from backends.gpu.layout import pack_depthwise_weights, pad_channels

pytestmark = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")


@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> EmulatedModule:
    every = [f"depthwise_conv_row<{s}, {sw}, {qv}>" for s in (3, 5, 7) for sw in (1, 2) for qv in (2, 4)]
    every += [f"depthwise_conv_tile<{s}, {qv}, {rows}>" for s in direct.DW_TILE_WINDOWS
              for qv, rows in direct.DW_TILE_SHAPES]
    return EmulatedModule(DIRECT_SRC, tmp_path_factory.mktemp("emu_dw"), name_expressions=every, opt="-O1")


def _launcher(emu: EmulatedModule):
    def fn(name: str):
        return lambda grid, block, args: emu.run(name, grid, block[0], args)
    return fn


def _run(emu, monkeypatch, columns: int, g: ConvGeometry, x, w, b, res, act,
         tile: tuple[int, int] | None = None) -> np.ndarray:
    y = np.full((g.n, g.p, g.q, g.cp), np.float16(np.nan))
    with monkeypatch.context() as m:
        m.setattr(direct, "_fn", _launcher(emu))
        m.setattr(direct, "depthwise_columns", lambda geom: columns)
        m.setattr(direct, "depthwise_tiled", lambda geom: tile is not None)
        m.setattr(direct, "depthwise_tile_shape", lambda geom: tile)
        direct.depthwise_conv(pad_channels(x), pack_depthwise_weights(w), b, y, g, act,
                              None if res is None else pad_channels(res))
    return y


CASES = [  # n, h, w, c, r, (stride), (pad), (dilation), act, residual
    (2, 9, 11, 20, 3, (1, 1), (1, 1), (1, 1), (1, 0.0, 0.0), False),  # ReLU
    (1, 10, 13, 16, 3, (2, 2), (1, 1), (1, 1), (2, 0.0, 6.0), True),  # clip 0..6, stride 2
    (1, 8, 9, 12, 5, (1, 1), (2, 2), (1, 1), (0, 0.0, 0.0), True),
    (2, 11, 10, 24, 5, (2, 2), (2, 2), (1, 1), (0, 0.0, 0.0), False),
    (1, 9, 15, 8, 7, (1, 1), (3, 3), (1, 1), (0, 0.0, 0.0), False),  # ConvNeXt's 7x7
    (1, 12, 9, 8, 7, (2, 2), (3, 3), (1, 1), (1, 0.0, 0.0), True),
    (1, 9, 9, 16, 3, (2, 1), (2, 1), (2, 1), (0, 0.0, 0.0), False),  # row stride 2, row dilation 2
    (1, 6, 6, 8, 3, (1, 1), (0, 0), (1, 1), (0, 0.0, 0.0), False),  # no padding: 4 output columns
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[4]}x{c[4]}_s{c[5][0]}{c[5][1]}_c{c[3]}" for c in CASES])
@pytest.mark.parametrize("columns", [2, 4])
def test_row_kernel_equals_generic_kernel(emu, monkeypatch, rng, case, columns):
    n, h, wd, c, r, stride, pad, dil, act, residual = case
    g = ConvGeometry(n, h, wd, c, c, r, r, stride, pad, dil)
    x = rng.uniform(-1, 1, (n, h, wd, c)).astype(np.float16)
    w = (rng.standard_normal((c, 1, r, r)) / r).astype(np.float16)
    b = rng.standard_normal(g.cp).astype(np.float32)
    res = rng.uniform(-1, 1, (n, g.p, g.q, c)).astype(np.float16) if residual else None
    generic = _run(emu, monkeypatch, 1, g, x, w, b, res, act)
    row = _run(emu, monkeypatch, columns, g, x, w, b, res, act)
    np.testing.assert_array_equal(row.view(np.uint16), generic.view(np.uint16))
    assert not row[..., c:].view(np.uint16).any(), "padded channels must be written as zeros"
    ref = conv_ref(x, w, stride, pad, dil, groups=c) + b[:c] + (0 if res is None else res)
    np.testing.assert_allclose(row[..., :c].astype(np.float64), act_ref(ref, *act), rtol=1e-2, atol=1e-2)


def test_row_tiling_is_chosen_only_where_it_exists_and_fills_the_gpu():
    def cols(n, h, c, r, stride, pad, dilation=(1, 1)):
        return direct.depthwise_columns(ConvGeometry(n, h, h, c, c, r, r, stride, pad, dilation))

    assert cols(256, 56, 144, 3, (1, 1), (1, 1)) == 2
    assert cols(256, 28, 240, 5, (1, 1), (2, 2)) == 4
    assert cols(256, 56, 144, 5, (2, 2), (2, 2)) == 2
    assert cols(32, 56, 96, 7, (1, 1), (3, 3)) == 2
    assert cols(256, 112, 96, 3, (2, 2), (1, 1)) == 1  # a 3-wide window at stride 2 gains nothing
    assert cols(1, 7, 1152, 3, (1, 1), (1, 1)) == 1  # too few threads to tile
    assert cols(256, 56, 144, 3, (1, 1), (2, 2), (2, 2)) == 1  # column dilation
    assert cols(256, 56, 144, 9, (1, 1), (4, 4)) == 1  # no instantiation
    for (s, sw), qv in direct.DW_ROW_COLUMNS.items():
        assert f"depthwise_conv_row<{s}, {sw}, {qv}>" in direct._NAMES


TILE_CASES = [  # n, h, w, c, window, pad, act, residual: stride 1, dilation 1
    (2, 9, 11, 20, 3, (1, 1), (1, 0.0, 0.0), False),  # C not a multiple of 8 or 32
    (1, 17, 19, 40, 3, (1, 1), (5, 0.0, 0.0), True),  # SiLU; several tiles each way, a partial channel chunk
    (1, 10, 21, 72, 5, (2, 2), (2, 0.0, 6.0), True),  # 72 channels: three chunks of 32, the last short
    (2, 12, 13, 24, 5, (0, 0), (0, 0.0, 0.0), False),  # no padding
    (1, 15, 18, 96, 7, (3, 3), (9, 0.0, 0.0), True),  # ConvNeXt's window, GELU
    (2, 7, 7, 48, 7, (3, 3), (4, 0.0, 0.0), False),  # 7 columns: 4 a thread; sigmoid
    (1, 9, 8, 16, 3, (2, 0), (0, 0.0, 0.0), False),  # rows padded, columns not
]


@pytest.mark.parametrize("case", TILE_CASES, ids=[f"{c[4]}x{c[4]}_{c[1]}x{c[2]}_c{c[3]}" for c in TILE_CASES])
@pytest.mark.parametrize("tile", direct.DW_TILE_SHAPES, ids=[f"qv{q}_rows{r}" for q, r in direct.DW_TILE_SHAPES])
def test_tiled_kernel_equals_generic_kernel(emu, monkeypatch, rng, case, tile):
    n, h, wd, c, r, pad, act, residual = case
    g = ConvGeometry(n, h, wd, c, c, r, r, (1, 1), pad)
    assert direct.depthwise_tiled(g)
    x = rng.uniform(-1, 1, (n, h, wd, c)).astype(np.float16)
    w = (rng.standard_normal((c, 1, r, r)) / r).astype(np.float16)
    b = rng.standard_normal(g.cp).astype(np.float32)
    res = rng.uniform(-1, 1, (n, g.p, g.q, c)).astype(np.float16) if residual else None
    generic = _run(emu, monkeypatch, 1, g, x, w, b, res, act)
    tiled = _run(emu, monkeypatch, 1, g, x, w, b, res, act, tile)
    np.testing.assert_array_equal(tiled.view(np.uint16), generic.view(np.uint16))
    assert not tiled[..., c:].view(np.uint16).any(), "padded channels must be written as zeros"
    ref = conv_ref(x, w, (1, 1), pad, (1, 1), groups=c) + b[:c] + (0 if res is None else res)
    np.testing.assert_allclose(tiled[..., :c].astype(np.float64), act_ref(ref, *act), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("pads", [((0, 0), (1, 1)), ((2, 1), (0, 3)), ((1, 0), (1, 2))],
                         ids=["same_end", "mixed", "rows_only_start"])
def test_tiled_kernel_with_asymmetric_padding(emu, monkeypatch, rng, pads):
    """Exporters write SAME padding as different top-left and bottom-right pads (TF-style
    EfficientNets): the tiled kernel reads zeros outside the image on every side."""
    (pad, pad_end), n, h, wd, c, r = pads, 1, 9, 10, 24, 3
    r = 5 if max(pad + pad_end) > 1 else r
    g = ConvGeometry(n, h, wd, c, c, r, r, (1, 1), pad, (1, 1), pad_end)
    x = rng.uniform(-1, 1, (n, h, wd, c)).astype(np.float16)
    w = (rng.standard_normal((c, 1, r, r)) / r).astype(np.float16)
    b = rng.standard_normal(g.cp).astype(np.float32)
    generic = _run(emu, monkeypatch, 1, g, x, w, b, None, (0, 0.0, 0.0))
    tiled = _run(emu, monkeypatch, 1, g, x, w, b, None, (0, 0.0, 0.0), direct.depthwise_tile_shape(g))
    np.testing.assert_array_equal(tiled.view(np.uint16), generic.view(np.uint16))
    ref = conv_ref(x, w, (1, 1), pad, (1, 1), pad_end, groups=c) + b[:c]
    assert ref.shape == tiled[..., :c].shape
    np.testing.assert_allclose(tiled[..., :c].astype(np.float64), ref, rtol=1e-2, atol=1e-2)


def test_tiled_kernel_takes_stride_one_square_windows_only():
    def tiled(r, s, stride=(1, 1), dilation=(1, 1)):
        return direct.depthwise_tiled(ConvGeometry(1, 14, 14, 32, 32, r, s, stride, (r // 2, s // 2), dilation))

    assert tiled(3, 3) and tiled(5, 5) and tiled(7, 7)
    assert not tiled(3, 3, (2, 2)) and not tiled(3, 3, (1, 2)) and not tiled(3, 3, dilation=(2, 2))
    assert not tiled(3, 5) and not tiled(9, 9) and not tiled(1, 1)
    for s in (3, 5, 7):
        g = ConvGeometry(1, 14, 14, 32, 32, s, s, (1, 1), (s // 2, s // 2))
        qv, rows = direct.depthwise_tile_shape(g)
        assert f"depthwise_conv_tile<{s}, {qv}, {rows}>" in direct._NAMES
