"""Transposed convolutions whose kernel is their stride as a tensor-core GEMM and a depth-to-space
copy (``lowering/conv._deconv_as_gemm``), without CUDA.

U-Net decoders up-sample with 2x2/2 transposed convolutions. Lowered as the GPU lowers them, they
must become one tensor-core convolution launch and one copy, and give, in the CUDA emulator on
fresh random data, float64 numpy's transposed convolution at fp16 tolerance (channel counts that
are and are not multiples of 8, a 3x3/3 kernel, a fused ReLU); other geometries keep the direct
kernel.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emu import compiler
from emu_lowered import run_lowered

from backends.gpu.lower import lower
from engine.ir.dtypes import Precision
from engine.ir.layers import ActivationSpec, ActivationType, DeconvolutionParams
from engine.ir.network import Network

needs_emulator = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")


def deconv_net(rng, c: int, k: int, kernel: int, stride: int, pad: int = 0, relu: bool = False,
               precision: Precision = Precision.FP16) -> tuple[Network, dict]:
    net = Network("up")
    x = net.add_input("x", (2, c, 3, 4))
    w = (rng.standard_normal((c, k, kernel, kernel)) / np.sqrt(c)).astype(np.float16).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float16).astype(np.float32)
    act = ActivationSpec(ActivationType.RELU) if relu else None
    params = DeconvolutionParams(num_output_maps=k, kernel=(kernel, kernel), stride=(stride, stride),
                                 pre_padding=(pad, pad), post_padding=(pad, pad), dilation=(1, 1), activation=act)
    y = net.add_layer(params, [x], {"kernel": w, "bias": b}, name="up").outputs[0]
    net.mark_output(y)
    for la in net.layers:
        la.precision = precision
    return net, {"w": w, "b": b}


def numpy_deconv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, relu: bool) -> np.ndarray:
    n, c, h, wd = x.shape
    _, k, r, s = w.shape
    y = np.zeros((n, k, (h - 1) * stride + r, (wd - 1) * stride + s))
    for u in range(r):
        for v in range(s):
            y[:, :, u:u + (h - 1) * stride + 1:stride, v:v + (wd - 1) * stride + 1:stride] += \
                np.einsum("nchw,ck->nkhw", x, w[:, :, u, v])
    y += b[None, :, None, None]
    return np.maximum(y, 0) if relu else y


@pytest.mark.parametrize("c,k,kernel,relu", [(16, 8, 2, False), (24, 12, 2, True), (8, 5, 3, False)])
def test_kernel_equal_to_stride_is_one_gemm_and_one_copy(c, k, kernel, relu):
    net, _ = deconv_net(np.random.default_rng(), c, k, kernel, kernel, relu=relu)
    ops = lower(net, net.layers, list(net.outputs)).ops
    assert [op.kind for op in ops if op.label.startswith("up")] == ["conv", "gen"], [(op.kind, op.label) for op in ops]
    conv = next(op for op in ops if op.kind == "conv")
    assert conv.info["geom"].k == k * kernel * kernel and conv.info["act"][0] == (1 if relu else 0)


@pytest.mark.parametrize("kernel,stride,pad,precision", [(4, 2, 1, Precision.FP16), (2, 2, 0, Precision.FP32)])
def test_other_transposed_convolutions_keep_the_direct_kernel(kernel, stride, pad, precision):
    net, _ = deconv_net(np.random.default_rng(), 8, 8, kernel, stride, pad, precision=precision)
    ops = lower(net, net.layers, list(net.outputs)).ops
    assert not any(op.kind == "conv" for op in ops)


@needs_emulator
@pytest.mark.parametrize("c,k,kernel,relu", [(24, 12, 2, True), (8, 5, 3, False)])
def test_gemm_lowering_matches_numpy(tmp_path, c, k, kernel, relu):
    rng = np.random.default_rng()
    net, d = deconv_net(rng, c, k, kernel, kernel, relu=relu)
    x = rng.standard_normal((2, c, 3, 4)).astype(np.float16).astype(np.float32)
    got = run_lowered(lower(net, net.layers, list(net.outputs)), {"x": x}, tmp_path / "up")[net.outputs[0]]
    want = numpy_deconv(x.astype(np.float64), d["w"].astype(np.float64), d["b"].astype(np.float64), kernel, relu)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2 * np.abs(want).max())
