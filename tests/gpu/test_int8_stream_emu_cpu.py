"""The streaming INT8 1x1 kernel (``int8_stream_src.conv1x1_stream_s8``) run on the CPU through the
CUDA emulator, bit for bit against the reference backend's INT8 convolution on fresh random data,
with exactly the launcher's arguments (``int8_stream.stream8_launch``).

The grids are kept small (one or two CTAs a column block), so each CTA walks several output tiles
and its ring of A buffers wraps: a buffer refilled before its tile was read, or a tile read before
its copies landed, changes the output. Cases cover every tile, 1 to 8 k-tiles, channel counts that
leave chunks and columns empty, stride 2, a residual, ReLU / clip / SiLU / hard-swish epilogues,
the saturating adds and a float output. Copies land at their wait (the default) and, in one case,
at issue.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

import int8_nets as nets
import pytest
from conv8_emu import conv8_case
from cuda_emu import EmulatedModule, compiler

from backends.gpu.kernels.conv import ConvGeometry
from backends.gpu.kernels.int8 import cp16, pack_weights8, parse_tactic8
from backends.gpu.kernels.int8_stream import (
    STREAM8_NAMES,
    STREAM8_TILES,
    StreamTactic8,
    StreamTile8,
    k_tiles,
    resident_ctas,
    stream8_candidates,
    stream8_fits,
    stream8_grid,
    stream8_launch,
)
from backends.gpu.kernels.int8_stream_src import STREAM8_SRC

needs_compiler = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")


@dataclass(frozen=True)
class CaseSt:
    id: str
    tile: StreamTile8
    n: int
    c: int
    h: int
    k: int
    stride: int = 1
    act: object = nets.RELU
    residual: bool = False
    float_out: bool = False
    force_sat: bool = False
    ctas: int = 1  # resident CTAs a column block (the grid's x)


T128x64_2, T128x64_3, T128x64_4, T64x128_2, T64x128, T128x128_2, T128x128, T64x256 = STREAM8_TILES
CASES = [
    CaseSt("c64_k256_residual_ring_wraps", T128x64_3, 2, 64, 20, 256, act=None, residual=True),
    CaseSt("c256_k64_relu_two_ctas", T128x64_4, 1, 256, 19, 64, ctas=2),
    CaseSt("c40_k24_float_out", T128x64_3, 2, 40, 9, 24, act=None, float_out=True),
    CaseSt("c64_k128_stride2_residual", T64x128, 2, 64, 15, 128, stride=2, residual=True),
    CaseSt("c32_k96_silu_partial_columns", T128x64_3, 1, 32, 17, 96, act=nets.SILU),
    CaseSt("c48_k144_hswish_residual", T64x128, 1, 48, 13, 144, act=nets.HSWISH, residual=True),
    CaseSt("c512_k128_clip6_eight_k_tiles", T64x128, 1, 512, 9, 128, act=nets.CLIP6),
    CaseSt("c128_k256_saturating_residual", T128x128, 1, 128, 14, 256, residual=True, force_sat=True),
    CaseSt("c192_k512_three_k_tiles", T64x256, 1, 192, 12, 512, act=nets.RELU, residual=True),
    CaseSt("c256_k128_two_stages", T128x64_2, 1, 256, 23, 128, act=nets.RELU, residual=True),
    CaseSt("c96_k128_two_stages_stride2", T64x128_2, 2, 96, 21, 128, stride=2),
    CaseSt("c64_k256_two_stages_two_ctas", T128x128_2, 2, 64, 17, 256, residual=True, ctas=2),
]


@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> EmulatedModule:
    return EmulatedModule(STREAM8_SRC, tmp_path_factory.mktemp("emu_stream8"), name_expressions=STREAM8_NAMES,
                          opt="-O1")


def _run(emu: EmulatedModule, rng, case: CaseSt) -> None:
    cc = conv8_case(rng, case.n, case.c, case.h, case.k, 1, case.stride, 0, case.act, case.residual, case.float_out)
    g = ConvGeometry(case.n, case.h, case.h, case.c, case.k, 1, 1, stride=(case.stride, case.stride))
    if case.force_sat:
        cc.epi.flags |= 2
    y = cc.output(g.n, g.p, g.q)
    tactic = StreamTactic8(case.tile)
    assert stream8_fits(g, case.tile, cc.ldy)
    cols = -(-cp16(g.k) // case.tile.bn)
    launch = stream8_launch(cc.xq, pack_weights8(cc.wq), y, g, tactic, cc.epi, cc.rq, cc.ldy, case.ctas * cols)
    tiles = -(-g.m // case.tile.bm)
    assert launch.grid == (min(tiles, case.ctas), cols)
    emu.run(launch.kernel, launch.grid, launch.block, launch.args, launch.shared_mem)
    cc.check(y)


@needs_compiler
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_stream_s8_emulated_bit_exact(emu, rng, case: CaseSt) -> None:
    _run(emu, rng, case)


@needs_compiler
def test_stream_s8_copies_landing_at_issue(emu, rng) -> None:
    """The same bits when every copy lands the moment it is issued: a refill that overwrote a
    buffer still to be read would show here."""
    emu.land_copies_at_issue(True)
    try:
        _run(emu, rng, CASES[0])
    finally:
        emu.land_copies_at_issue(False)


@pytest.mark.parametrize("g, why", [
    (ConvGeometry(1, 8, 8, 64, 64, 3, 3, pad=(1, 1)), "a 3x3 window"),
    (ConvGeometry(1, 8, 8, 64, 64, 1, 1, pad=(1, 1)), "padding"),
    (ConvGeometry(1, 8, 8, 64, 64, 1, 1, groups=2), "two groups"),
    (ConvGeometry(1, 8, 8, 528, 64, 1, 1), "528 input channels (more than 8 k-tiles)"),
])
def test_stream_s8_declines_what_it_does_not_run(g, why) -> None:
    assert not stream8_candidates(g), why
    with pytest.raises(ValueError, match="does not take"):
        stream8_launch(None, None, None, g, StreamTactic8(STREAM8_TILES[0]), None, None, cp16(g.k), 132)


def test_stream_s8_tiles_and_names() -> None:
    """Names parse back to their tiles; a wide tile is offered only where K fills half of it; the
    shared memory of a deep ring on 512 channels is over one CTA's, so it is not offered."""
    for t in STREAM8_TILES:
        tac = StreamTactic8(t)
        assert parse_tactic8(tac.name) == tac
    assert parse_tactic8("s8stream_96x64_w2x2_s3") is None
    narrow = ConvGeometry(4, 14, 14, 256, 64, 1, 1)
    assert {t.tile.bn for t in stream8_candidates(narrow)} == {64}
    wide = ConvGeometry(4, 14, 14, 512, 512, 1, 1)
    assert k_tiles(wide) == 8
    assert T128x128 not in {t.tile for t in stream8_candidates(wide)}
    assert T128x128.smem_bytes(8) > 227 * 1024 >= T64x128_2.smem_bytes(8)
    assert T64x128_2 in {t.tile for t in stream8_candidates(wide)}


def test_stream_s8_grid_fills_the_gpu_once() -> None:
    """Resident CTAs from threads, registers (per warp, in units of 256) and shared memory; the grid
    shares them among the column blocks and never exceeds the output tiles."""
    t = T128x64_2  # 128 threads, 64 x 64 weights and two 128 x 64 A tiles a k-tile, 4 warps of 64 x 36 int32
    assert t.smem_bytes(1) == (64 + 2 * 128) * 64 + 4 * 64 * 36 * 4
    assert resident_ctas(t, 1, 64) == 4  # shared memory: 233472 // (57344 + 1024); registers allow 8
    assert resident_ctas(t, 1, 168) == 3  # registers: 65536 // (168 * 128)
    assert resident_ctas(t, 4, 32) == 1
    assert resident_ctas(t, 8, 32) == 228 * 1024 // (t.smem_bytes(8) + 1024)
    g = ConvGeometry(256, 56, 56, 64, 256, 1, 1)
    assert stream8_grid(g, t, 132 * 4) == (132, 4)
    small = ConvGeometry(1, 7, 7, 64, 64, 1, 1)
    assert stream8_grid(small, t, 528) == (1, 1)


@pytest.mark.slow  # nvcc takes ~20 s for the module
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_stream_s8_compiles_within_its_register_bound(tmp_path) -> None:
    """The emulated text compiles for sm_90 as it is; under the launch bound (4 CTAs of 128 threads
    an SM, 2 of 256: 128 registers) no tile spills more than a few words. With the accumulators and
    the epilogue parameters live together it took 210-230 registers."""
    src = tmp_path / "stream.cu"
    src.write_text(STREAM8_SRC + "".join(f"void* const instance{i} = (void*)&{t.template};\n"
                                         for i, t in enumerate(STREAM8_TILES)))
    done = subprocess.run(["nvcc", "-arch=sm_90", "-std=c++17", "-cubin", "-Xptxas", "-v", str(src),
                           "-o", str(tmp_path / "stream.cubin")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    entries = [i for i, ln in enumerate(lines) if "Compiling entry" in ln and "conv1x1_stream_s8" in ln]
    assert len(entries) == len(STREAM8_TILES)
    for i in entries:
        spill = next(ln for ln in lines[i:] if "spill stores" in ln)
        regs = next(ln for ln in lines[i:] if "Used" in ln and "registers" in ln)
        assert int(spill.split("bytes spill stores")[0].split(",")[-1]) <= 16, spill
        assert int(regs.split("Used")[1].split("registers")[0]) <= 128, regs
