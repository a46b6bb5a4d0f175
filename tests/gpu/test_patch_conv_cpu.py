"""Patch-embedding convolutions (kernel = stride, no padding) lowered as a patch gather and a 1x1
convolution, without CUDA: the gather runs in the CUDA emulator on fresh random data, from an fp32
NCHW input and from an fp16 NHWC one, and its patches times the reshaped weights equal a float64
direct convolution of the input."""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emu import EmulatedModule, compiler
from gpu_reference import conv_ref

from backends.gpu.kernels import gen
from backends.gpu.lower import lower
from engine.ir.dtypes import Precision
from engine.ir.layers import ConvolutionParams
from engine.ir.network import Network


def _net(shape, k: int, kernel: tuple[int, int], relu_first: bool) -> tuple[Network, np.ndarray]:
    net = Network("patches")
    x = net.add_input("x", shape)
    if relu_first:  # an fp16 NHWC tensor computed on the device, not the fp32 network input
        x = net.add_activation(x, "relu", name="relu")
    w = np.random.default_rng().standard_normal((k, shape[1], *kernel)).astype(np.float32)
    params = ConvolutionParams(k, kernel, kernel, (0, 0), (0, 0), (1, 1), 1)
    net.mark_output(net.add_layer(params, [x], {"kernel": w}, name="embed").outputs[0])
    for la in net.layers:
        la.precision = Precision.FP16
    return net, w


@pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")
@pytest.mark.parametrize("shape, kernel, relu_first", [((2, 3, 16, 12), (4, 4), False),
                                                       ((1, 8, 9, 8), (2, 2), True),  # 9 rows: the last dropped
                                                       ((2, 3, 16, 16), (16, 16), False)])
def test_patch_gather_and_1x1_weights_equal_the_convolution(tmp_path, shape, kernel, relu_first):
    net, w = _net(shape, 16, kernel, relu_first)
    low = lower(net, net.layers, list(net.outputs))
    gather = next(op for op in low.ops if op.label.startswith("to_patches_"))
    conv = next(op for op in low.ops if op.label == "embed")
    g = conv.info["geom"]
    assert (g.r, g.s, g.stride, g.c) == (1, 1, (1, 1), shape[1] * kernel[0] * kernel[1])
    assert conv.info["x"] == gather.writes[0]
    x = np.random.default_rng().standard_normal(shape).astype(np.float16)
    src = np.maximum(x, 0) if relu_first else x.astype(np.float32)
    src_slot = low.slots[gather.args[1]]
    src_buf = src.transpose(0, 2, 3, 1) if src_slot.layout == "nhwc" else src  # the slot's physical layout
    src_buf = np.ascontiguousarray(src_buf, dtype=src_slot.dtype)
    out_slot = low.slots[gather.writes[0]]
    out = np.full(out_slot.phys_shape, np.nan, np.float16)
    emu = EmulatedModule(low.source.replace(gen.GEN_PRELUDE[len(gen.COMMON_SRC):], "\n", 1), tmp_path)
    emu.run(gather.kernel, gather.grid, gather.block, [out, src_buf])
    patches = out.astype(np.float64)  # (N, P, Q, C·R·S)
    got = np.einsum("npqj,kj->nkpq", patches, w.astype(np.float16).reshape(16, -1).astype(np.float64))
    want = conv_ref(src.astype(np.float16).transpose(0, 2, 3, 1), w.astype(np.float16), kernel).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_padded_or_overlapping_windows_keep_the_convolution():
    net = Network("overlap")
    x = net.add_input("x", (1, 8, 8, 8))
    w = np.ones((8, 8, 3, 3), np.float32)
    net.mark_output(net.add_layer(ConvolutionParams(8, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 1), [x],
                                  {"kernel": w}, name="c").outputs[0])
    for la in net.layers:
        la.precision = Precision.FP16
    low = lower(net, net.layers, list(net.outputs))
    assert not any(op.label.startswith("to_patches_") for op in low.ops)
    assert next(op for op in low.ops if op.label == "c").info["geom"].r == 3
