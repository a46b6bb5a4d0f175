"""The direct FP16 grouped convolution (``grouped_src.grouped_conv_tile``) run on the CPU through
the CUDA emulator, via its real launcher (``grouped.grouped_conv``), on fresh random data, against
a float64 grouped convolution: groups of 4, 8, 16 and 32 channels, Cg != Kg, 3x3 at stride 1 and 2,
1x1, padding on both edges (asymmetric too), outputs that are not a multiple of the block tile,
several groups a block and groups over several blocks, bias, ReLU / clip / SiLU, residual, channel
counts that are not a multiple of 8 (padded output channels checked to be zero); and the
eligibility rule, the tactic names and the weight packing.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emu import EmulatedModule, compiler
from gpu_reference import act_ref, conv_ref

from backends.gpu.kernels import grouped
from backends.gpu.kernels.conv import ConvGeometry
from backends.gpu.kernels.grouped_src import GROUPED_SRC
from backends.gpu.layout import pad_bias, pad_channels

needs_emu = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")


@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> EmulatedModule:
    return EmulatedModule(GROUPED_SRC, tmp_path_factory.mktemp("emu_gd"), name_expressions=grouped._NAMES, opt="-O1")


def _geometry(n, h, w, c, k, r, stride, pad, pad_end=None) -> ConvGeometry:
    """The layer's sizes (``groups`` left at 1: ConvGeometry admits only 8-channel groups)."""
    return ConvGeometry(n, h, w, c, k, r, r, (stride, stride), pad, (1, 1), pad_end)


def _run(emu, g: ConvGeometry, groups: int, columns: int, x, wt, b, res, act) -> np.ndarray:
    y = np.full((g.n, g.p, g.q, g.kp), np.float16(np.nan))
    launch = grouped.grouped_conv_launch(pad_channels(x), grouped.pack_grouped_weights(wt, groups),
                                         None if b is None else pad_bias(b, g.k), y, g, groups,
                                         grouped.GroupedDirectTactic(columns), act,
                                         None if res is None else pad_channels(res))
    emu.run(launch.kernel, launch.grid, launch.block, launch.args, launch.shared_mem)
    return y


def _check(y: np.ndarray, ref: np.ndarray, k: int) -> None:
    assert not y[..., k:].view(np.uint16).any(), "padded channels must be written as zeros"
    out = y[..., :k].astype(np.float64)
    assert np.isfinite(out).all(), "unwritten or overflowed outputs"
    rel = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
    assert rel < 5e-3, f"relative L2 error {rel:.2e}"
    np.testing.assert_allclose(out, ref, rtol=1e-2, atol=1e-2 * float(np.abs(ref).max()))


CASES = [  # n, h, w, groups, cg, kg, r, stride, pad, pad_end, act, residual, bias
    (2, 9, 11, 8, 4, 4, 3, 1, (1, 1), None, (1, 0.0, 0.0), False, True),  # ResNeXt stage 1's groups, ReLU
    (1, 10, 19, 4, 8, 8, 3, 1, (1, 1), None, (0, 0.0, 0.0), True, True),  # 8 channels, 2 column tiles
    (1, 17, 9, 4, 16, 16, 3, 1, (1, 1), None, (5, 0.0, 0.0), False, True),  # 16: 2 warps a group; SiLU
    (1, 7, 7, 2, 32, 32, 3, 1, (1, 1), None, (2, 0.0, 6.0), True, True),  # 32: one group a block; clip
    (1, 8, 10, 3, 8, 16, 3, 1, (1, 1), None, (1, 0.0, 0.0), False, True),  # Cg != Kg
    (1, 6, 7, 4, 16, 8, 3, 1, (1, 1), None, (0, 0.0, 0.0), False, False),  # Kg < Cg, no bias
    (1, 13, 15, 4, 8, 8, 3, 2, (1, 1), None, (1, 0.0, 0.0), True, True),  # stride 2
    (1, 12, 12, 16, 4, 4, 3, 2, (1, 1), None, (0, 0.0, 0.0), False, True),  # stride 2, 4-channel groups
    (1, 9, 10, 2, 32, 32, 3, 2, (0, 1), (1, 0), (1, 0.0, 0.0), False, True),  # asymmetric padding
    (2, 6, 9, 8, 4, 8, 1, 1, (0, 0), None, (0, 0.0, 0.0), True, True),  # 1x1
    (1, 7, 8, 4, 8, 8, 1, 2, (0, 0), None, (1, 0.0, 0.0), False, True),  # 1x1 stride 2
    (1, 9, 9, 3, 4, 4, 3, 1, (1, 1), None, (1, 0.0, 0.0), True, True),  # C = K = 12: padded to 16
    (1, 8, 9, 3, 12, 12, 3, 1, (2, 2), (0, 1), (5, 0.0, 0.0), False, True),  # 12-channel groups; K = 36 -> 40
    (1, 10, 9, 5, 8, 4, 3, 1, (1, 1), None, (0, 0.0, 0.0), False, True),  # K = 20 -> 24: a zero slot
    (1, 9, 8, 12, 4, 4, 3, 1, (1, 1), None, (1, 0.0, 0.0), False, True),  # 12 groups: blocks of 8 and 4
    (1, 8, 8, 6, 24, 24, 3, 1, (1, 1), None, (0, 0.0, 0.0), False, True),  # RegNet's width 24: 3 vectors
]


def _case_id(c) -> str:
    return f"g{c[3]}_{c[4]}to{c[5]}_{c[6]}x{c[6]}_s{c[7]}_{c[1]}x{c[2]}"


@needs_emu
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
@pytest.mark.parametrize("columns", grouped.GD_COLUMNS)
def test_grouped_direct_kernel_matches_float64(emu, rng, case, columns):
    n, h, wd, groups, cg, kg, r, stride, pad, pad_end, act, residual, with_bias = case
    c, k = groups * cg, groups * kg
    g = _geometry(n, h, wd, c, k, r, stride, pad, pad_end)
    assert grouped.GroupedDirectTactic(columns) in grouped.grouped_direct_tactics(g, groups)
    x = rng.uniform(-1, 1, (n, h, wd, c)).astype(np.float16)
    wt = (rng.standard_normal((k, cg, r, r)) / np.sqrt(r * r * cg)).astype(np.float16)
    b = rng.uniform(-0.5, 0.5, k).astype(np.float16).astype(np.float32) if with_bias else None
    res = rng.uniform(-1, 1, (n, g.p, g.q, k)).astype(np.float16) if residual else None
    y = _run(emu, g, groups, columns, x, wt, b, res, act)
    ref = conv_ref(x, wt, (stride, stride), pad, (1, 1), pad_end, groups=groups)
    ref = ref + (0 if b is None else b) + (0 if res is None else res.astype(np.float64))
    assert ref.shape == y[..., :k].shape
    _check(y, act_ref(ref, *act), k)


@needs_emu
def test_groups_spread_over_blocks_and_blocks_hold_several_groups():
    """The launch shapes the cases above cover: 8 four-channel groups a block (two sharing each
    16-byte vector), one 32-channel group a block over 4 warps, and zero-only group slots."""
    def shape(c, k, groups, columns=4):
        return grouped.block_shape(_geometry(2, 14, 14, c, k, 3, 1, (1, 1)), groups, columns)

    s = shape(128, 128, 32)
    assert (s.gb, s.cv, s.kt, s.threads, s.grid[1]) == (8, 4, 4, 256, 4)
    s = shape(1024, 1024, 32)
    assert (s.gb, s.cv, s.kt, s.threads, s.grid[1]) == (1, 8, 8, 128, 32)
    s = shape(12, 12, 3)  # three real groups and one slot for channels 12..15
    assert (s.gb, s.grid[1]) == (4, 1)
    s = shape(256, 512, 32)  # 8 -> 16: two warps a group, 4 groups a block
    assert (s.gb, s.threads) == (4, 256)


def test_eligibility_rule():
    def tactics(c, k, groups, r=3, stride=1, dilation=(1, 1)):
        g = ConvGeometry(1, 14, 14, c, k, r, r, (stride, stride), (r // 2, r // 2), dilation)
        return [t.name for t in grouped.grouped_direct_tactics(g, groups)]

    assert tactics(128, 128, 32) == ["gdirect_q2", "gdirect_q4"]  # ResNeXt-50 32x4d, stage 1
    assert tactics(1024, 1024, 32) and tactics(256, 256, 32, stride=2) and tactics(64, 128, 8, r=1)
    assert tactics(240, 240, 10)  # RegNet's group width 24
    assert not tactics(2048, 2048, 32)  # 64-channel groups: the tensor cores' work
    assert not tactics(32, 32, 32) and not tactics(12, 12, 2)  # depthwise; 6-channel groups
    assert not tactics(128, 128, 32, dilation=(2, 2)) and not tactics(128, 128, 32, r=5)
    assert not tactics(128, 128, 32, stride=3) and not tactics(128, 128, 1)
    g = ConvGeometry(1, 14, 14, 128, 128, 3, 3, (1, 2), (1, 1))
    assert not grouped.grouped_direct_tactics(g, 32)  # unequal strides


def test_tactic_names_round_trip():
    for qv in grouped.GD_COLUMNS:
        t = grouped.GroupedDirectTactic(qv)
        assert grouped.parse_gdirect(t.name) == t
    for bad in ("gdirect_q3", "gdirect_q", "gdirect_q04", "gdirect_x4", "igemm_32x32_w2x1_s4_k1", None, 4):
        assert grouped.parse_gdirect(bad) is None


def test_packed_weights_layout(rng):
    groups, cg, kg = 3, 4, 8
    w = rng.standard_normal((groups * kg, cg, 3, 3)).astype(np.float32)
    packed = grouped.pack_grouped_weights(w, groups)
    assert packed.shape == (groups, 3, 3, cg, kg) and packed.dtype == np.float16
    for gi, r, s, ci, ki in [(0, 0, 0, 0, 0), (2, 1, 2, 3, 7), (1, 2, 0, 1, 4)]:
        assert packed[gi, r, s, ci, ki] == np.float16(w[gi * kg + ki, ci, r, s])
