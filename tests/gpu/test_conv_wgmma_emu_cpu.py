"""The warpgroup-MMA convolution tiles (``wgmma_src``, sm_90a) run on the CPU through the CUDA
emulator, against the numpy float64 reference at fp16 tolerance.

The kernel text is the sm_90a module's (``conv.CONV_WG_SRC``), launched with the launcher's
arguments; ``cuda_emu_ptx`` stands in for ``wgmma.mma_async`` and its fences, decoding the shared-
memory descriptors and the 128-byte swizzle, retiring an MMA no earlier than its ``wait_group`` and
failing if its tiles change while it is in flight. Negative tests show that a wrong accumulator
layout, a missing wait before a stage is refilled and unaligned stages are caught.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from cuda_emu import EmulatedModule, compiler
from gpu_reference import assert_close
from test_conv_igemm_emu_cpu import SWISH, Case, _data, _reference, _run

from backends.gpu.kernels.conv import CONV_WG_SRC, TILES_WG, ConvGeometry, ConvTactic, TileWg

pytestmark = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")

TILE_IDS = {t: f"{t.dims}s{t.stages}" for t in TILES_WG}


@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> EmulatedModule:
    return EmulatedModule(CONV_WG_SRC, tmp_path_factory.mktemp("emu_wg"),
                          name_expressions=[t.template for t in TILES_WG], opt="-O1")


def _check(emu: EmulatedModule, rng: np.random.Generator, case: Case) -> None:
    """Right with copies landing as late and as early as the hardware may land them."""
    d = _data(rng, case)
    for early in (False, True):
        emu.land_copies_at_issue(early)
        try:
            y = _run(emu, case, d)
        finally:
            emu.land_copies_at_issue(False)
        assert (y[..., case.geom.k:] == 0).all(), "padded channels must be written as zeros"
        assert_close(y[..., :case.geom.k], _reference(case, d))


@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("tile", TILES_WG, ids=TILE_IDS.get)
def test_wgmma_every_tile_emulated(emu, rng, tile: TileWg, splits: int) -> None:
    """3x3 over 36 channels (a 6-k-tile reduction with a ragged last tile), M and K not multiples
    of the tile, bias, SiLU and a residual; with split-K its reduce kernel."""
    _check(emu, rng, Case("every", ConvGeometry(1, 11, 13, 36, 72, 3, 3, (1, 1), (1, 1)), ConvTactic(tile, splits),
                          SWISH))


@pytest.mark.parametrize("case", [
    Case("1x1_c256_k264_stride2", ConvGeometry(1, 14, 14, 256, 264, 1, 1, (2, 2)), ConvTactic(TILES_WG[0])),
    Case("3x3s2_c64_se_free", ConvGeometry(2, 9, 9, 64, 40, 3, 3, (2, 2), (1, 1)), ConvTactic(TILES_WG[2]),
         residual=False),
    Case("1x1_se_scale", ConvGeometry(2, 5, 5, 264, 128, 1, 1), ConvTactic(TILES_WG[3]), se_scale=True),
], ids=lambda c: c.id)
def test_wgmma_shapes_emulated(emu, rng, case: Case) -> None:
    """More than one tile row in M or N, stride, K not a multiple of 8 past BN, the SE input scale."""
    _check(emu, rng, case)


def _mutant(tmp_path, old: str, new: str, tile: TileWg) -> EmulatedModule:
    assert old in CONV_WG_SRC, old
    return EmulatedModule(CONV_WG_SRC.replace(old, new), tmp_path, name_expressions=[tile.template], opt="-O1")


BASE_CASE = Case("mutant", ConvGeometry(1, 9, 9, 36, 72, 3, 3, (1, 1), (1, 1)), ConvTactic(TILES_WG[0]), SWISH)


def test_wrong_warp_rows_fail(tmp_path, rng) -> None:
    """The comparison can fail: warpgroup 1 reading warpgroup 0's rows of A gives wrong outputs."""
    bad = _mutant(tmp_path, "(threadIdx.x >> 7) * 64 * 128", "0", TILES_WG[0])
    d = _data(rng, BASE_CASE)
    with pytest.raises(AssertionError):
        assert_close(_run(bad, BASE_CASE, d)[..., :72], _reference(BASE_CASE, d))


def test_refilling_a_stage_in_flight_is_an_error(tmp_path, rng) -> None:
    """Loading one k-tile further ahead than the MMAs kept in flight allow overwrites a stage that
    an MMA still reads: the emulator reports it."""
    tile = TILES_WG[0]
    assert tile.inflight == 1
    bad = _mutant(tmp_path, "static constexpr int AHEAD = STAGES - 1 - Step::INFLIGHT;",
                  "static constexpr int AHEAD = STAGES - 1;", tile)
    bad.land_copies_at_issue(True)
    with pytest.raises(RuntimeError, match="changed while its MMA was in flight"):
        _run(bad, BASE_CASE, _data(rng, BASE_CASE))


def test_unaligned_stages_are_an_error(tmp_path, rng) -> None:
    """The 128-byte swizzle is a function of the address: stages off a 1024-byte boundary read the
    wrong chunks. The emulated shared memory starts off such a boundary, so without the kernel's
    own alignment the results are wrong."""
    bad = _mutant(tmp_path, "static constexpr int INFLIGHT = INFL, ALIGN = 1024;",
                  "static constexpr int INFLIGHT = INFL, ALIGN = 16;", TILES_WG[0])
    d = _data(rng, BASE_CASE)
    with pytest.raises(AssertionError):
        assert_close(_run(bad, BASE_CASE, d)[..., :72], _reference(BASE_CASE, d))


@pytest.mark.slow  # nvcc takes ~5-10 s per module
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("module", ["fp16", "int8"])
def test_wgmma_sources_compile_for_sm90a(tmp_path, module) -> None:
    """The emulated text compiles for sm_90a as it is, every tile without register spills or
    serialized wgmma."""
    from backends.gpu.kernels.int8 import INT8_WG_SRC, TILES8_WG

    source, tiles = (CONV_WG_SRC, TILES_WG) if module == "fp16" else (INT8_WG_SRC, TILES8_WG)
    src = tmp_path / "wg.cu"
    src.write_text(source + "".join(f"void* const instance{i} = (void*)&{t.template};\n" for i, t in enumerate(tiles)))
    done = subprocess.run(["nvcc", "-arch=sm_90a", "-std=c++17", "-cubin", "-Xptxas", "-v", str(src),
                           "-o", str(tmp_path / "wg.cubin")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    spills = [ln for ln in done.stderr.splitlines() if "spill stores" in ln]
    assert len(spills) >= len(tiles) and all("0 bytes spill stores" in ln for ln in spills), spills
    assert "serialized" not in done.stderr, done.stderr
