"""The tensor-core implicit-GEMM convolution (``conv_src.CONV_SRC``) run on the CPU through the CUDA
emulator, against the GPU tests' numpy float64 reference at fp16 tolerance.

The kernel text is the one NVRTC compiles (``cuda_emu_ptx`` stands in for its cp.async, ldmatrix
and mma.sync helpers), launched with exactly the launcher's arguments (``conv.conv2d_launches``).
The cases cover the large and small tiles, split-K with its reduce kernel, ragged channels, M not a
multiple of BM, stride 2, 1x1, dilation with asymmetric padding, groups and the squeeze-excitation
input scale, each with bias, an activation and a residual. The same kernel passes its GPU tests on
H100s, so agreement here also pins the emulated fragment layouts.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import pytest
from cuda_emu import EmulatedModule, compiler
from gpu_reference import act_ref, assert_close, conv_ref

from backends.gpu.kernels.conv import TILES, ConvGeometry, ConvTactic, Tile, conv2d_launches
from backends.gpu.kernels.conv_src import CONV_SRC
from backends.gpu.layout import pack_conv_weights, pad_channels

pytestmark = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")

RELU, SWISH = (1, 0.0, 0.0), (5, 0.0, 0.0)


@dataclass(frozen=True)
class Case:
    id: str
    geom: ConvGeometry
    tactic: ConvTactic
    act: tuple[int, float, float] = RELU
    residual: bool = True
    se_scale: bool = False


CASES = [
    Case("128x128w2x4_3x3_M98", ConvGeometry(2, 7, 7, 36, 72, 3, 3, (1, 1), (1, 1)),
         ConvTactic(Tile(128, 128, 2, 4, 3))),
    Case("128x128w2x2_3x3s2_c20", ConvGeometry(2, 9, 9, 20, 40, 3, 3, (2, 2), (1, 1)),
         ConvTactic(Tile(128, 128, 2, 2, 3)), SWISH),
    Case("16x64_1x1_k20", ConvGeometry(1, 8, 8, 72, 20, 1, 1), ConvTactic(Tile(16, 64, 1, 2, 4))),
    Case("32x32_splitk3", ConvGeometry(1, 6, 6, 64, 32, 3, 3, (1, 1), (1, 1)), ConvTactic(Tile(32, 32, 2, 1, 4), 3)),
    Case("64x32_dilated_asym", ConvGeometry(1, 9, 8, 16, 24, 3, 3, (1, 1), (2, 1), (2, 2), pad_end=(1, 0)),
         ConvTactic(Tile(64, 32, 2, 1, 4)), residual=False),
    Case("32x64_grouped", ConvGeometry(1, 6, 6, 32, 32, 3, 3, (1, 1), (1, 1), groups=2),
         ConvTactic(Tile(32, 64, 1, 2, 4))),
    Case("64x64_se_scale_1x1", ConvGeometry(2, 6, 6, 40, 16, 1, 1), ConvTactic(Tile(64, 64, 2, 2, 4)), se_scale=True),
]


@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> EmulatedModule:
    names = [t.template for t in TILES]
    return EmulatedModule(CONV_SRC, tmp_path_factory.mktemp("emu_conv"), name_expressions=names, opt="-O1")


def _data(rng: np.random.Generator, c: Case) -> dict[str, np.ndarray | None]:
    g = c.geom
    return {
        "x": rng.uniform(-1, 1, (g.n, g.h, g.w, g.c)).astype(np.float16),
        "w": (rng.standard_normal((g.k, g.cg, g.r, g.s)) / math.sqrt(g.cg * g.r * g.s)).astype(np.float16),
        "b": (0.5 * rng.standard_normal(g.k)).astype(np.float32),
        "res": rng.uniform(-1, 1, (g.n, g.p, g.q, g.k)).astype(np.float16) if c.residual else None,
        "sc": rng.uniform(0, 2, (g.n, g.c)).astype(np.float16) if c.se_scale else None,
    }


def _reference(c: Case, d: dict[str, np.ndarray | None]) -> np.ndarray:
    g = c.geom
    x = d["x"].astype(np.float64)
    if d["sc"] is not None:  # the kernel rounds x * scale to fp16, as a separate fp16 multiply would
        x = (x * d["sc"].astype(np.float64)[:, None, None, :]).astype(np.float16).astype(np.float64)
    ref = conv_ref(x, d["w"], g.stride, g.pad, g.dilation, g.pad_end, g.groups) + d["b"]
    if d["res"] is not None:
        ref = ref + d["res"]
    return act_ref(ref, *c.act)


def _run(emu: EmulatedModule, c: Case, d: dict[str, np.ndarray | None]) -> np.ndarray:
    """The kernel's y (N, P, Q, Kp), launched as ``conv.conv2d`` launches it."""
    g = c.geom
    y = np.full((g.n, g.p, g.q, g.kp), np.nan, np.float16)
    ws = np.full(max(c.tactic.workspace_bytes(g), 4) // 4, np.nan, np.float32)
    res = None if d["res"] is None else pad_channels(d["res"])
    sc = None if d["sc"] is None else pad_channels(d["sc"])
    launches = conv2d_launches(pad_channels(d["x"]), pack_conv_weights(d["w"]), d["b"], y, g, c.tactic, c.act,
                               res, ws, sc)
    assert len(launches) == (2 if c.tactic.grid(g)[2] > 1 else 1)
    for launch in launches:
        emu.run(launch.kernel, launch.grid, launch.block, launch.args, launch.shared_mem)
    return y


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_conv_igemm_emulated(emu, rng, case: Case) -> None:
    d = _data(rng, case)
    y = _run(emu, case, d)
    assert (y[..., case.geom.k:] == 0).all(), "padded channels must be written as zeros"
    assert_close(y[..., :case.geom.k], _reference(case, d))


@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("tile", TILES, ids=lambda t: f"{t.dims}w{t.wm}x{t.wn}s{t.stages}")
def test_conv_every_tile_emulated(emu, rng, tile: Tile, splits: int) -> None:
    """Every compiled tile, as the GPU test of every tile runs them (on a smaller image)."""
    case = Case("every", ConvGeometry(1, 11, 13, 36, 72, 3, 3, (1, 1), (1, 1)), ConvTactic(tile, splits), SWISH)
    d = _data(rng, case)
    y = _run(emu, case, d)
    assert (y[..., case.geom.k:] == 0).all()
    assert_close(y[..., :case.geom.k], _reference(case, d))


def test_a_wrong_weight_layout_fails(emu, rng) -> None:
    """The comparison can fail: the same launch with the weights' R and S axes swapped disagrees."""
    case = CASES[0]
    d = _data(rng, case)
    y = _run(emu, case, {**d, "w": np.ascontiguousarray(d["w"].transpose(0, 1, 3, 2))})
    with pytest.raises(AssertionError):
        assert_close(y[..., :case.geom.k], _reference(case, d))


@pytest.mark.slow  # nvcc takes ~10-20 s per module
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_emulated_sources_compile_for_sm90(tmp_path) -> None:
    """The text the emulator runs is the CUDA source as it is: every fp16 tile instance compiles for
    sm_90 (the INT8 module's instances: test_int8_nonlinear_epilogue_cpu.test_sources_compile_for_sm90)."""
    names = [t.template for t in TILES]
    src = tmp_path / "conv.cu"
    src.write_text(CONV_SRC + "".join(f"void* const instance{i} = (void*)&{n};\n" for i, n in enumerate(names)))
    done = subprocess.run(["nvcc", "-arch=sm_90", "-std=c++17", "-c", str(src), "-o", str(tmp_path / "conv.o")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_pipeline_bug_fails(tmp_path, rng) -> None:
    """The emulated cp.async lands a copy no earlier than its wait: a mainloop that waits for one
    group too few reads tiles that have not landed, and its results are wrong."""
    wait = "cp_async_wait<AHEAD - 1>();"
    assert wait in CONV_SRC
    case = CASES[3]
    bad = EmulatedModule(CONV_SRC.replace(wait, "cp_async_wait<AHEAD>();"), tmp_path,
                         name_expressions=[case.tactic.tile.template], opt="-O1")
    d = _data(rng, case)
    with pytest.raises(AssertionError):
        assert_close(_run(bad, case, d)[..., :case.geom.k], _reference(case, d))


def test_too_little_shared_memory_is_an_error(emu, rng) -> None:
    case = CASES[0]
    d = _data(rng, case)
    g = case.geom
    y = np.zeros((g.n, g.p, g.q, g.kp), np.float16)
    launch = conv2d_launches(pad_channels(d["x"]), pack_conv_weights(d["w"]), d["b"], y, g, case.tactic)[0]
    with pytest.raises(RuntimeError, match="the dynamic shared memory"):
        emu.run(launch.kernel, launch.grid, launch.block, launch.args, launch.shared_mem - 1024)
