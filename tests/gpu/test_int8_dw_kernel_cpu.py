"""The INT8 depthwise kernel (``int8_dw_src.dwconv_s8``) run on the CPU through the CUDA emulator,
bit for bit against the reference backend's INT8 depthwise convolution on fresh random data.

The kernel text is the one the GPU compiles (the epilogue's two PTX instructions take their C++
fallback here; ``test_int8_epilogue_cpu.py`` checks that rewrite's integers separately and the
GPU tests check the PTX). Inputs go in as the GPU path has them: int8 NHWC with channels padded to
16, quantized with the reference's own ``quantize``; outputs are compared after the reference's
``dequantize`` (float32 bits), padded channels must come out zero.
"""

from __future__ import annotations

import shutil
import subprocess

import int8_nets as nets
import numpy as np
import pytest
from cuda_emu import EmulatedModule, compiler

from backends.gpu.kernels.conv import ConvGeometry
from backends.gpu.kernels.int8 import DeviceEpilogue, cp16, epilogue_params, quantized_kernel
from backends.gpu.kernels.int8_dw import DW8_NAMES, dw_args, dw_launch8, dw_threads, dw_tiled8, pack_dw_weights8
from backends.gpu.kernels.int8_dw_src import DW8_SRC
from backends.gpu.layout import round_up
from backends.reference import int8 as ref8
from engine.ir import int8_annotation as annotation
from engine.ir.int8_math import dequantize, quantize

pytestmark = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")


@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> EmulatedModule:
    return EmulatedModule(DW8_SRC, tmp_path_factory.mktemp("emu_dw8"), name_expressions=DW8_NAMES, opt="-O1")


def _run(emu: EmulatedModule, net, feeds: dict[str, np.ndarray], force_sat: bool = False,
         tiled: bool = False) -> tuple[np.ndarray, ...]:
    """(the reference's output, the emulated kernel's output as the same float32 NCHW, the kernel's
    raw output buffer, the epilogue's flags); ``tiled``: through ``dw_launch8``'s tiled kernel,
    else the one-thread-per-pixel ``dwconv_s8``."""
    layer = net.layers[0]
    spec = annotation.read(layer)
    p = layer.params
    x = feeds["x"]
    res = feeds.get("res")
    want = ref8.convolution(layer, [x] + ([res] if p.residual else []))[0]
    n, c, h, w = x.shape
    _, _, oh, ow = want.shape
    g = ConvGeometry(n, h, w, c, c, *p.kernel, tuple(p.stride), tuple(p.pre_padding), tuple(p.dilation),
                     tuple(p.post_padding))
    assert (g.p, g.q) == (oh, ow)
    wq = quantized_kernel(layer)
    rs = spec.input_scales[1] if p.residual else None
    epi = DeviceEpilogue.upload(epilogue_params(layer, p.activation, rs, wq), np)
    if force_sat:
        epi.flags |= 2
    xs = nets.nhwc16(quantize(x, np.float32(spec.input_scales[0])))
    rq = nets.nhwc16(quantize(res, np.float32(rs))) if p.residual else None
    if spec.output_scale is None:
        ldy = round_up(c, 8)
        y = np.full((n, oh, ow, ldy), np.nan, np.float32)
    else:
        ldy = cp16(c)
        y = np.full((n, oh, ow, ldy), 0x5A, np.int8)  # padded channels must be overwritten with 0
    if tiled:
        assert dw_tiled8(g)
        name, grid, threads, args = dw_launch8(xs, pack_dw_weights8(wq), y, g, epi, rq, ldy)
        emu.run(name, grid, threads, [np.uint64(0) if a is None else a for a in args])
    else:
        args = dw_args(xs, pack_dw_weights8(wq), y, g, epi, rq, ldy)
        emu.launch("dwconv_s8", dw_threads(g), [a if a is None or isinstance(a, np.ndarray) and a.ndim
                                                 else np.array([a]) for a in args])
    got = y[..., :c].transpose(0, 3, 1, 2)
    if spec.output_scale is not None:
        got = dequantize(np.ascontiguousarray(got), np.float32(spec.output_scale))
    return want, got, y, epi.flags


CASES = [  # c, h, w, r, stride, pad, dilation, activation, residual, float output
    (24, 9, 10, 3, 1, 1, 1, nets.RELU, False, False),
    (40, 9, 9, 3, 2, 1, 1, nets.CLIP6, False, False),
    (24, 8, 7, 5, 1, 2, 1, None, True, False),
    (40, 11, 9, 5, 2, 2, 1, nets.RELU, True, False),
    (16, 9, 9, 3, 1, 2, 2, None, False, False),
    (8, 6, 6, 3, 1, 0, 1, nets.CLIP6, True, False),
    (24, 9, 8, 3, 2, 0, 1, nets.CLIP6, False, True),
    (40, 7, 7, 5, 1, 2, 1, nets.RELU, True, True),
    (20, 6, 6, 3, 1, 1, 1, None, False, True),
    (16, 10, 9, 7, 1, 3, 1, nets.RELU, True, False),  # 49 taps: 12 full quads and one of a single tap
    (40, 9, 9, 3, 1, 1, 1, nets.SILU, False, False),  # the non-linear epilogues (int8_rules.quantize_nonlinear)
    (24, 8, 7, 5, 2, 2, 1, nets.SILU, True, False),
    (24, 9, 8, 3, 1, 1, 1, nets.HSWISH, True, False),
    (40, 7, 7, 5, 1, 2, 1, nets.SILU, False, True),
    (20, 6, 6, 3, 1, 1, 1, nets.HSWISH, False, True),
    # several tiles of the tiled kernel: rows past 8, columns past 16 (and 8), two channel blocks
    (40, 19, 21, 3, 1, 1, 1, nets.RELU, True, False),
    (48, 18, 35, 5, 1, 2, 1, nets.CLIP6, False, False),
    (24, 17, 12, 7, 1, 3, 1, None, True, False),
    (72, 10, 26, 3, 1, 0, 1, nets.SILU, True, False),
    (40, 12, 19, 5, 1, 2, 1, nets.HSWISH, False, True),
    (40, 23, 38, 3, 2, 1, 1, nets.RELU, True, False),  # stride 2 over several tiles
    (24, 20, 37, 5, 2, 2, 1, nets.SILU, False, False),
    (16, 19, 18, 7, 2, 3, 1, nets.CLIP6, False, True),
]


@pytest.mark.parametrize("case", CASES, ids=[f"c{c[0]}_{c[3]}x{c[3]}_s{c[4]}_p{c[5]}_d{c[6]}"
                                               f"{'_' + c[7].type.value if c[7] else ''}"
                                               f"{'_res' if c[8] else ''}{'_f32' if c[9] else ''}" for c in CASES])
@pytest.mark.parametrize("force_sat", [False, True])
@pytest.mark.parametrize("tiled", [False, True], ids=["generic", "tiled"])
def test_dw_kernel_matches_reference_bitwise(emu, case, force_sat, tiled):
    c, h, w, r, stride, pad, dil, act, res, f32 = case
    if tiled and not (stride in (1, 2) and dil == 1 and r in (3, 5, 7)):
        pytest.skip("the tiled kernel takes stride 1 or 2, dilation 1 and 3x3, 5x5 or 7x7 windows")
    rng = np.random.default_rng([c, h, w, r, stride, pad, dil, int(res), int(f32)])
    net, feeds = nets.dw_net(rng, 2, c, h, w, r, stride, pad, dil, act, res, None if f32 else "auto")
    want, got, y, flags = _run(emu, net, feeds, force_sat, tiled)
    assert np.count_nonzero(want) > want.size // 4  # a real result, not a degenerate one
    assert bool(flags & 12) == (act in (nets.SILU, nets.HSWISH))  # the non-linear epilogue where it applies
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    if y.dtype == np.int8 or y.shape[-1] > c:
        assert not np.any(y[..., c:]), "padded output channels must be zero"
    if y.dtype == np.int8 and act is None:
        assert y.min() == -128 and y.max() == 127  # int8 saturation exercised


def test_dw_kernel_saturating_sums(emu):
    """Biases near the +-2**33 clamp: the int32 sums saturate (the SAT path, chosen by the host)."""
    rng = np.random.default_rng(7)
    net, feeds = nets.dw_net(rng, 1, 40, 7, 7, 3, 1, 1, 1, None, True)
    layer = net.layers[0]
    b = layer.weights["bias"]
    layer.weights["bias"] = (b / np.abs(b).max() * 3e9 * float(np.max(annotation.read(layer).kernel_scales))
                             * annotation.read(layer).input_scales[0]).astype(np.float32)
    want, got, _, flags = _run(emu, net, feeds)
    assert flags & 2
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_dw_source_compiles_for_sm90(tmp_path):
    src = tmp_path / "dw8.cu"
    src.write_text(DW8_SRC)
    done = subprocess.run(["nvcc", "-arch=sm_90", "-c", str(src), "-o", str(tmp_path / "dw8.o")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_tiled_kernel_keeps_its_sums_in_registers(tmp_path):
    """No tiled instance has local memory in its PTX: a runtime index into the QV x 4 sums (as the
    float / non-linear store once had) puts the whole array in local memory, which the compiler
    then writes after the mainloop on every path, 128 bytes a thread at QV = 8."""
    import re

    src = tmp_path / "dw8.cu"
    src.write_text(DW8_SRC + "\n" + "\n".join(f"static void* p{i} = (void*)&{n};" for i, n in enumerate(DW8_NAMES)))
    ptx = tmp_path / "dw8.ptx"
    done = subprocess.run(["nvcc", "-arch=sm_90", "-ptx", "-O3", str(src), "-o", str(ptx)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    entries = re.split(r"\n\.(?:visible|weak) \.entry ", ptx.read_text())[1:]
    assert len(entries) == len(DW8_NAMES) + 1  # the tiled instances and dwconv_s8
    local = [e[:e.index("(")] for e in entries if "__local_depot" in e or "st.local" in e]
    assert not local, f"local memory in {local}"
