"""The INT8 implicit-GEMM convolution (``int8_src.conv_igemm_s8``, the fp16 kernel's mainloop with
m16n8k32 s8 mma) run on the CPU through the CUDA emulator, bit for bit against the reference
backend's INT8 convolution (what ``test_int8.py`` compares the GPU with) on fresh random data.

Launched with exactly the launcher's arguments (``int8.conv2d_s8_launches``); inputs are quantized
with the reference's own ``quantize`` into the GPU layouts (int8 NHWC, channels padded to 16), int8
outputs are compared after the reference's ``dequantize`` (float32 bits), float outputs directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import int8_nets as nets
import numpy as np
import pytest
from conv8_emu import conv8_case
from cuda_emu import EmulatedModule, compiler

from backends.gpu.kernels.conv import ConvGeometry
from backends.gpu.kernels.int8 import (
    INT8_WG_SRC,
    TILES8,
    TILES8_WG,
    Tactic8,
    Tile8,
    Tile8Wg,
    candidate_tactics8,
    conv2d_s8_launches,
    cp16,
    group_merge8,
    heuristic_tactic8,
    merge_groups8,
    pack_weights8,
)
from backends.gpu.kernels.int8_src import INT8_SRC

pytestmark = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")


@dataclass(frozen=True)
class Case8:
    id: str
    n: int
    c: int
    h: int
    k: int
    r: int
    stride: int
    pad: int
    tactic: Tactic8
    act: object = nets.RELU
    residual: bool = True
    float_out: bool = False


CASES = [
    Case8("128x128w2x4_M98_c20", 2, 20, 7, 40, 3, 1, 1, Tactic8(Tile8(128, 128, 2, 4, 3))),
    Case8("64x64_two_stage_1x1_clip", 1, 72, 8, 24, 1, 1, 0, Tactic8(Tile8(64, 64, 2, 2, 2)), nets.CLIP6, False),
    Case8("32x32_splitk3", 1, 64, 6, 32, 3, 1, 1, Tactic8(Tile8(32, 32, 2, 1, 4), 3)),
    Case8("16x64_stride2_float_out", 1, 16, 9, 24, 3, 2, 1, Tactic8(Tile8(16, 64, 1, 2, 4)), None, False, True),
    Case8("64x32_splitk2_float_out", 2, 40, 5, 20, 3, 1, 1, Tactic8(Tile8(64, 32, 2, 1, 4), 2), nets.RELU, False,
          True),
]


@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> EmulatedModule:
    return EmulatedModule(INT8_SRC, tmp_path_factory.mktemp("emu_conv8"),
                          name_expressions=[t.template for t in TILES8], opt="-O1")


def _check(emu: EmulatedModule, rng: np.random.Generator, case: Case8) -> None:
    cc = conv8_case(rng, case.n, case.c, case.h, case.k, case.r, case.stride, case.pad, case.act, case.residual,
                    case.float_out)
    p = cc.layer.params
    g = ConvGeometry(case.n, case.h, case.h, case.c, cc.k, *p.kernel, tuple(p.stride), tuple(p.pre_padding),
                     tuple(p.dilation), tuple(p.post_padding))
    assert (g.p, g.q) == cc.want.shape[2:]
    y = cc.output(g.n, g.p, g.q)
    ws = np.full(max(case.tactic.workspace_bytes(g), 4) // 4, -7, np.int32)
    launches = conv2d_s8_launches(cc.xq, pack_weights8(cc.wq), y, g, case.tactic, cc.epi, cc.rq, ws, cc.ldy)
    assert len(launches) == (2 if case.tactic.grid(g)[2] > 1 else 1)
    for launch in launches:
        emu.run(launch.kernel, launch.grid, launch.block, launch.args, launch.shared_mem)
    cc.check(y)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_conv_igemm_s8_emulated_bit_exact(emu, rng, case: Case8) -> None:
    _check(emu, rng, case)


@pytest.mark.parametrize("splits", [1, 2])
@pytest.mark.parametrize("tile", TILES8, ids=lambda t: f"{t.dims}w{t.wm}x{t.wn}s{t.stages}")
def test_conv_igemm_s8_every_tile_emulated(emu, rng, tile: Tile8, splits: int) -> None:
    _check(emu, rng, Case8("every", 1, 36, 7, 40, 3, 1, 1, Tactic8(tile, splits)))


@pytest.fixture(scope="module")
def emu_wg(tmp_path_factory) -> EmulatedModule:
    return EmulatedModule(INT8_WG_SRC, tmp_path_factory.mktemp("emu_conv8_wg"),
                          name_expressions=[t.template for t in TILES8_WG], opt="-O1")


@pytest.mark.parametrize("splits", [1, 2])
@pytest.mark.parametrize("tile", TILES8_WG, ids=lambda t: f"{t.dims}s{t.stages}")
def test_conv_wgmma_s8_every_tile_emulated(emu_wg, rng, tile: Tile8Wg, splits: int) -> None:
    """The sm_90a module's INT8 tiles (wgmma m64nNk32 s8, see test_conv_wgmma_emu_cpu), bit for bit,
    on a 3x3 reduction over 72 channels (5 k-tiles of 128 bytes, the last one ragged)."""
    _check(emu_wg, rng, Case8("every", 1, 72, 7, 40, 3, 1, 1, Tactic8(tile, splits)))


@pytest.mark.parametrize("case", [
    Case8("wg_1x1_float_out_k264", 2, 256, 6, 264, 1, 1, 0, Tactic8(TILES8_WG[0]), None, False, True),
    Case8("wg_3x3s2_clip_no_res", 2, 48, 9, 72, 3, 2, 1, Tactic8(TILES8_WG[2], 3), nets.CLIP6, False),
], ids=lambda c: c.id)
def test_conv_wgmma_s8_emulated_bit_exact(emu_wg, rng, case: Case8) -> None:
    _check(emu_wg, rng, case)


GROUPED = [  # n, c, h, k, r, stride, pad, groups, act, residual, float_out
    pytest.param(2, 64, 8, 64, 3, 1, 1, 4, nets.RELU, True, False, id="16ch-groups"),
    pytest.param(1, 128, 9, 128, 3, 2, 1, 32, nets.RELU, False, False, id="resnext-4ch-groups-merged-by-4"),
    pytest.param(1, 96, 7, 192, 3, 1, 1, 12, None, True, False, id="8-in-16-out-merged-by-2"),
    pytest.param(2, 64, 6, 64, 1, 1, 0, 2, nets.SILU, False, True, id="32ch-1x1-silu-float-out"),
    pytest.param(1, 128, 6, 256, 3, 1, 1, 2, nets.RELU, True, False, id="128-out-per-group-several-column-tiles"),
    # group counts no merge divides (RegNetY's 13 and 55 groups of 8): a phantom group in the padding
    pytest.param(1, 104, 7, 104, 3, 1, 1, 13, nets.RELU, True, False, id="13-groups-of-8-ragged-merge"),
    pytest.param(2, 40, 6, 40, 3, 2, 1, 10, None, False, False, id="10-groups-of-4-ragged-merge-by-4"),
    pytest.param(1, 12, 6, 12, 3, 1, 1, 3, nets.RELU, False, False, id="3-groups-of-4-one-group-and-a-phantom"),
]


@pytest.mark.parametrize("n,c,h,k,r,stride,pad,groups,act,residual,float_out", GROUPED)
@pytest.mark.parametrize("splits", [1, 3])
def test_conv_igemm_s8_grouped_emulated_bit_exact(emu, rng, n, c, h, k, r, stride, pad, groups, act, residual,
                                                  float_out, splits) -> None:
    """Grouped INT8 convolutions (one implicit GEMM per group on grid y, adjacent groups merged until
    16 channels, as the lowering does), bit for bit against the reference backend, with every
    candidate tile of the heuristic's width and split-K."""
    cc = conv8_case(rng, n, c, h, k, r, stride, pad, act, residual, float_out, groups)
    ragged = group_merge8(groups, c // groups, k // groups) is None
    wq, g = merge_groups8(cc.wq, ConvGeometry(n, h, h, c, k, r, r, (stride, stride), (pad, pad)), groups)
    assert (g.c > c) == ragged and g.c <= cp16(c) and g.k <= cp16(k)
    assert (g.p, g.q) == cc.want.shape[2:]
    heuristic = heuristic_tactic8(g)
    tiles = {t.tile for t in candidate_tactics8(g)} | {heuristic.tile}
    assert all(t.bn <= max(32, 2 * g.kg) for t in tiles if t != heuristic.tile)
    for tile in sorted(tiles, key=str):
        tactic = Tactic8(tile, splits)
        y = cc.output(n, g.p, g.q)
        ws = np.full(max(tactic.workspace_bytes(g), 4) // 4, -7, np.int32)
        for launch in conv2d_s8_launches(cc.xq, pack_weights8(wq), y, g, tactic, cc.epi, cc.rq, ws, cc.ldy):
            emu.run(launch.kernel, launch.grid, launch.block, launch.args, launch.shared_mem)
        cc.check(y, padded_zero=ragged, label=f"{tactic.name}: ")  # phantom channels: zeros
