"""Row-parallel group kernels without CUDA: which row mapping the generator picks, the shape of the
source it writes, the launch grid the lowering gives it, and (with a host C++ compiler) the kernels
themselves run by the CPU emulator against float64 numpy on fresh random data.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emu import EmulatedModule, compiler
from group_cases import CASES, Case, check, prepare

from backends.gpu.kernels import gen, gen_group
from backends.gpu.lower import lower
from backends.gpu.lowering.slots import Slot
from engine.ir.dtypes import Precision
from engine.ir.layers import NormalizationParams, ReduceOp, ReduceParams, SoftMaxParams
from engine.ir.network import Network


def _src(shape, axes, kind="reduce", layout="linear", op="sum", **kw):
    x = Slot("x", shape, "float16", layout).operand()
    rank = len(shape)
    ys = gen.row_major(shape) if kind != "reduce" else tuple(
        0 if d in {a % rank for a in axes} else s for d, s in enumerate(gen.row_major(shape)))
    return gen_group.group_kernel("k", shape, axes, x, gen.Operand("float16", ys), kind,
                                  op=op if kind == "reduce" else "", **kw)


def _balanced(src: str) -> bool:
    depth = {"(": 0, "{": 0, "[": 0}
    close = {")": "(", "}": "{", "]": "["}
    for ch in src:
        if ch in depth:
            depth[ch] += 1
        elif ch in close:
            depth[close[ch]] -= 1
            if depth[close[ch]] < 0:
                return False
    return not any(depth.values())


@pytest.mark.parametrize("kind", ["reduce", "softmax", "logsoftmax", "norm"])
def test_long_rows_get_a_warp_each(kind):
    src, threads = _src((2, 197, 768), (2,), kind)
    assert threads == 2 * 197 * 32
    assert _balanced(src)
    assert "__shfl_xor_sync(0xffffffffu" in src and "blockIdx.x * 8" in src
    # a reduce strides scalar loads; softmax / norm hold the 768-half row in registers (3 uint4 a lane)
    assert ("r += 32" in src) == (kind == "reduce")
    assert ("float f[24];" in src and "reinterpret_cast<const uint4*>(xr + c)" in src) == (kind != "reduce")
    # one butterfly per pass that reduces: reduce 1, softmax max + sum, norm sum + squared deviations
    assert src.count("__shfl_xor_sync") == (1 if kind == "reduce" else 2)
    assert "__syncthreads" not in src


@pytest.mark.parametrize("kind", ["reduce", "softmax", "norm"])
def test_short_rows_keep_a_thread_each(kind):
    for r in (7, 31):
        src, threads = _src((64, r), (1,), kind)
        assert threads == 64 and _balanced(src)
        assert "__shfl" not in src and "lane" not in src and "++r" in src


def test_very_long_rows_with_few_of_them_get_a_block_each():
    src, threads = _src((3, 6400), (1,), "norm")
    assert threads == 3 * 256 and _balanced(src)
    assert "r += 256" in src and src.count("__syncthreads") == 4 and "__shared__ float part[8]" in src
    # many long rows: a warp each is enough to fill the GPU
    assert _src((4096, 6400), (1,))[1] == 4096 * 32


def test_mapping_follows_the_memory_layout():
    # NHWC slot, reduced over C (stride 1): a warp per pixel reads contiguous channels
    assert gen_group.group_lanes((8, 96, 56, 56), (1,), Slot("x", (8, 96, 56, 56), "float16", "nhwc").operand()) == 32
    # linear NCHW, reduced over C (stride H*W): with 25088 rows, threads over W already read coalesced
    assert gen_group.group_lanes((8, 96, 56, 56), (1,), Slot("x", (8, 96, 56, 56), "float16").operand()) == 1
    # ... but with few rows a warp each still wins (the thread mapping would leave most SMs idle)
    assert gen_group.group_lanes((1, 96, 4, 4), (1,), Slot("x", (1, 96, 4, 4), "float16").operand()) == 32
    # the reduced dim the fastest: always row-parallel once it has >= 32 elements
    big = (100000, 32)
    assert gen_group.group_lanes(big, (1,), gen.Operand("float16", gen.row_major(big))) == 32
    assert gen_group.group_lanes((100000, 31), (1,), gen.Operand("float16", gen.row_major((100000, 31)))) == 1


def test_vector_rows_only_where_a_row_is_aligned_contiguous_fp16():
    src, _ = _src((4, 96, 5, 6), (1,), "norm", layout="nhwc")  # over C of an NHWC slot: Cp = C = 96
    assert "reinterpret_cast<const uint4*>" in src
    assert "reinterpret_cast<uint4*>(y" not in src  # into a linear NCHW output: scalar stores
    for shape, layout, cached in (((4, 90, 5, 6), "nhwc", 3), ((4, 197), "linear", 7), ((4, 2056), "linear", 0)):
        src, _ = _src(shape, (1,), "softmax", layout=layout)  # Cp != C; 197 % 8; longer than 2048
        assert "uint4" not in src
        # rows of <= 1024 are loaded once element-wise into registers, longer ones re-read each pass
        assert (f"float f[{cached}] = {{}};" in src) == bool(cached) and ("r += 32" in src) == (not cached)
    assert "uint4" not in _src((4, 768), (1,), "norm", vec=False)[0]
    with pytest.raises(ValueError, match="vector rows"):
        _src((4, 197), (1,), "norm", vec=True)


def test_lanes_other_than_1_32_256_are_refused():
    with pytest.raises(ValueError, match="lanes"):
        _src((4, 64), (1,), lanes=64)


def _lowered_gen_ops(params, shape, weights=None):
    net = Network("t")
    net.add_input("x", shape)
    layer = net.add_layer(params, ["x"], weights or {})
    layer.precision = Precision.FP16
    net.mark_output(layer.outputs[0])
    low = lower(net, [layer], list(net.outputs))
    return [op for op in low.ops if op.kind == "gen"], low.source


@pytest.mark.parametrize("params,shape,rows,lanes", [
    (SoftMaxParams(axis=-1), (3, 197, 197), 3 * 197, 32),
    (NormalizationParams(axes=(2,)), (2, 197, 768), 2 * 197, 32),
    (ReduceParams(ReduceOp.MEAN, (1,), keep_dims=False), (5, 20), 5, 1),
    (ReduceParams(ReduceOp.SUM, (1,)), (2, 9000), 2, 256),
])
def test_lowering_launches_the_threads_the_kernel_maps(params, shape, rows, lanes):
    ops, source = _lowered_gen_ops(params, shape)
    op = ops[-1]
    assert op.grid == (-(-rows * lanes // 256),)
    assert f"void __launch_bounds__(256) {op.kernel}(" in source


# ------------------------------------------------------------------------ the kernels, emulated on the CPU

# The emulator runs 256 fibers per block: cases over ~10^5 elements are left to the GPU tests.
EMU_CASES = [c for c in CASES if np.prod(c.shape) <= 120_000]


@pytest.fixture(scope="module")
def emulated(tmp_path_factory) -> tuple[EmulatedModule, dict[str, int]]:
    if compiler() is None:
        pytest.skip("no host C++ compiler (g++ with C++20, _Float16, ucontext) for the CUDA emulator")
    names = {c.id: i for i, c in enumerate(EMU_CASES)}
    rng = np.random.default_rng(0)  # the sources do not depend on the data
    src = "".join(prepare(c, rng, f"g{i}").source for c, i in zip(EMU_CASES, names.values()))
    return EmulatedModule(src, tmp_path_factory.mktemp("emu")), names


@pytest.mark.parametrize("case", EMU_CASES, ids=lambda c: c.id)
def test_group_kernel_emulated(emulated, rng, case: Case):
    mod, names = emulated
    p = prepare(case, rng, f"g{names[case.id]}")
    mod.launch(p.name, p.threads, p.arrays)
    check(p, p.arrays[1])


def test_layer_norm_over_channels_of_a_convolution_output_reads_the_nhwc_slot_half_a_warp_per_pixel():
    from engine.ir.layers import ConvolutionParams

    rng = np.random.default_rng(1)
    net = Network("t")
    net.add_input("x", (2, 8, 9, 10))
    w = {"kernel": rng.standard_normal((96, 8, 1, 1)).astype(np.float32),
         "bias": rng.standard_normal(96).astype(np.float32)}
    conv = net.add_layer(ConvolutionParams(96, (1, 1), (1, 1), (0, 0), (0, 0), (1, 1)), ["x"], w)
    norm = net.add_layer(NormalizationParams(axes=(1,)), conv.outputs)
    net.mark_output(norm.outputs[0])
    for la in net.layers:
        la.precision = Precision.FP16
    low = lower(net, list(net.layers), list(net.outputs))
    op = next(op for op in low.ops if op.label == norm.name)
    assert low.slots[op.reads[0]].layout == "nhwc"
    assert low.slots[op.writes[0]].layout == "nhwc"  # a following convolution reads it as it is
    # 96 halves a pixel are 12 uint4: 16 lanes a pixel (gen_group.short_row_lanes), two pixels a warp
    assert op.grid == (-(-2 * 9 * 10 * 16 // 256),)
    body = low.source.split(f"{op.kernel}(", 1)[1].split("\n}\n", 1)[0]
    assert "__shfl_xor_sync" in body and "threadIdx.x & 15u" in body
    # lanes over C, the unit stride: 96 channels of a pixel are 12 uint4 loads and 12 uint4 stores
    assert "reinterpret_cast<const uint4*>(xr + c)" in body and "reinterpret_cast<uint4*>(y +" in body


def test_rows_that_share_a_warp_clamp_to_the_last_row_and_an_empty_tensor_returns():
    src, threads = _src((5, 64), (1,), "softmax")
    assert threads == 5 * 8 and "if (t >= (IT)5) t = (IT)4;" in src  # 8 lanes a row; the last row redone
    src, threads = _src((0, 64), (1,), "softmax")
    assert threads == 0 and "return;  // no rows" in src and "(IT)-1" not in src
