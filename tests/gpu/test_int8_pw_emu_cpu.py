"""The INT8 pointwise kernel (``int8_pw_src.pw_s8``) run on the CPU through the CUDA emulator, bit
for bit against the reference backend's INT8 convolution on fresh random data, with exactly the
launcher's arguments (``int8_pw.pointwise8_launch``).

Cases cover every compiled input width (16, 32, 48, 64 channels), output widths from 16 to 208
channels (one to 52 threads a pixel), a pixel count that leaves a partial block, ReLU, clip, SiLU
and hard-swish epilogues, a residual, the saturating adds and a float output.
"""

from __future__ import annotations

from dataclasses import dataclass

import int8_nets as nets
import pytest
from conv8_emu import conv8_case
from cuda_emu import EmulatedModule, compiler

from backends.gpu.kernels.conv import ConvGeometry
from backends.gpu.kernels.int8 import cp16, pack_weights8
from backends.gpu.kernels.int8_pw import PW8_NAMES, pointwise8_fits, pointwise8_launch
from backends.gpu.kernels.int8_pw_src import PW8_SRC

pytestmark = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")


@dataclass(frozen=True)
class CasePw:
    id: str
    n: int
    c: int
    h: int
    k: int
    act: object = nets.RELU
    residual: bool = False
    float_out: bool = False
    force_sat: bool = False


CASES = [
    CasePw("c16_k96_silu", 2, 16, 9, 96, nets.SILU),
    CasePw("c32_k16_relu_residual", 1, 32, 13, 16, nets.RELU, True),
    CasePw("c40_k24_linear_float_out", 2, 40, 7, 24, None, False, True),
    CasePw("c64_k200_clip6", 1, 64, 6, 200, nets.CLIP6),
    CasePw("c24_k144_hswish_residual", 1, 24, 5, 144, nets.HSWISH, True),
    CasePw("c48_k32_saturating_residual", 1, 48, 7, 32, nets.RELU, True, False, True),
    CasePw("c16_k1024_linear", 1, 16, 3, 1024, None),
]


@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> EmulatedModule:
    return EmulatedModule(PW8_SRC, tmp_path_factory.mktemp("emu_pw8"), name_expressions=PW8_NAMES, opt="-O1")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_pointwise_s8_emulated_bit_exact(emu, rng, case: CasePw) -> None:
    cc = conv8_case(rng, case.n, case.c, case.h, case.k, 1, 1, 0, case.act, case.residual, case.float_out)
    g = ConvGeometry(case.n, case.h, case.h, case.c, case.k, 1, 1)
    if case.force_sat:
        cc.epi.flags |= 2
    y = cc.output(g.n, g.p, g.q)
    assert pointwise8_fits(g, cc.ldy)
    launch = pointwise8_launch(cc.xq, pack_weights8(cc.wq), y, g, cc.epi, cc.rq, cc.ldy)
    emu.run(launch.kernel, launch.grid, launch.block, launch.args, launch.shared_mem)
    cc.check(y)


@pytest.mark.parametrize("g, ldy, why", [
    (ConvGeometry(1, 8, 8, 32, 32, 3, 3, pad=(1, 1)), None, "a 3x3 window"),
    (ConvGeometry(1, 8, 8, 32, 32, 1, 1, stride=(2, 2)), None, "stride 2"),
    (ConvGeometry(1, 8, 8, 32, 32, 1, 1, groups=2), None, "two groups"),
    (ConvGeometry(1, 8, 8, 80, 32, 1, 1), None, "80 input channels"),
    (ConvGeometry(1, 8, 8, 32, 1040, 1, 1), None, "1040 output channels"),
    (ConvGeometry(1, 8, 8, 32, 24, 1, 1), 40, "a float row wider than Kp"),
])
def test_pointwise_s8_declines_what_it_does_not_run(g, ldy, why) -> None:
    assert not pointwise8_fits(g, ldy), why
    with pytest.raises(ValueError, match="does not take"):
        pointwise8_launch(None, None, None, g, None, None, ldy or cp16(g.k))
