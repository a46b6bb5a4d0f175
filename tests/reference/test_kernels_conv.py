"""Convolution and deconvolution against onnxruntime's Conv / ConvTranspose."""

from __future__ import annotations

import numpy as np
import pytest
from refhelp import assert_close, assert_fp16_close, ort_single, randn, rng, run_single, seed_of

from engine.ir.dtypes import Precision
from engine.ir.layers import ActivationSpec, ActivationType, ConvolutionParams, DeconvolutionParams

# (input shape, out maps, kernel, stride, pre, post, dilation, groups)
CONV_CASES = {
    "1d": ((2, 3, 17), 5, (3,), (1,), (1,), (1,), (1,), 1),
    "1d_stride_dil_asym": ((1, 4, 23), 6, (4,), (3,), (2,), (0,), (2,), 2),
    "2d_plain": ((2, 3, 9, 11), 4, (3, 3), (1, 1), (0, 0), (0, 0), (1, 1), 1),
    "2d_stride_pad": ((1, 5, 12, 10), 7, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 1),
    "2d_asym_pads": ((2, 4, 8, 9), 6, (3, 2), (1, 2), (2, 0), (0, 1), (1, 1), 1),
    "2d_dilation": ((1, 3, 13, 14), 4, (3, 3), (1, 2), (2, 1), (1, 3), (2, 3), 1),
    "2d_groups": ((2, 6, 10, 9), 9, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 3),
    "2d_depthwise": ((2, 8, 11, 10), 8, (3, 3), (2, 1), (1, 1), (1, 0), (1, 1), 8),
    "2d_depthwise_mult": ((1, 4, 9, 9), 8, (5, 3), (1, 1), (2, 1), (2, 1), (1, 2), 4),
    "2d_1x1": ((2, 16, 7, 6), 12, (1, 1), (1, 1), (0, 0), (0, 0), (1, 1), 1),
    "2d_1x1_stride": ((1, 8, 9, 8), 5, (1, 1), (2, 3), (0, 0), (0, 0), (1, 1), 1),
    "2d_1x1_pad": ((1, 6, 5, 5), 4, (1, 1), (1, 1), (1, 0), (0, 2), (1, 1), 1),
    "2d_7x7_s2": ((1, 3, 32, 30), 8, (7, 7), (2, 2), (3, 3), (3, 3), (1, 1), 1),
    "3d": ((1, 3, 6, 7, 8), 4, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), (1, 1, 1), 1),
    "3d_stride_groups_asym": ((2, 4, 7, 6, 9), 6, (2, 3, 3), (2, 1, 2), (1, 0, 2), (0, 1, 1), (1, 2, 1), 2),
}


def _conv_case(case, seed, bias=True):
    shape, k, kernel, stride, pre, post, dil, groups = case
    g = rng(seed)
    x = randn(g, *shape)
    w = randn(g, k, shape[1] // groups, *kernel)
    weights = {"kernel": w}
    if bias:
        weights["bias"] = randn(g, k)
    params = ConvolutionParams(k, kernel, stride, pre, post, dil, groups)
    attrs = dict(kernel_shape=list(kernel), strides=list(stride), pads=list(pre) + list(post),
                 dilations=list(dil), group=groups)
    return x, weights, params, attrs


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name", sorted(CONV_CASES))
def test_convolution_matches_onnxruntime(name, bias):
    x, weights, params, attrs = _conv_case(CONV_CASES[name], seed=seed_of(name, bias), bias=bias)
    want = ort_single("Conv", [x, weights["kernel"], weights.get("bias")], attrs, const_inputs=[1, 2])[0]
    got = run_single(params, [x], weights)[0]
    assert_close(got, want, atol=1e-5 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("name", ["1d", "2d_groups", "2d_depthwise", "3d"])
def test_convolution_fp16_against_fp32_oracle(name):
    x, weights, params, attrs = _conv_case(CONV_CASES[name], seed=7)
    want = ort_single("Conv", [x, weights["kernel"], weights["bias"]], attrs, const_inputs=[1, 2])[0]
    got = run_single(params, [x], weights, precision=Precision.FP16)[0]
    assert_fp16_close(got, want)


def _act64(x: np.ndarray, spec: ActivationSpec) -> np.ndarray:
    if spec.type is ActivationType.RELU:
        return np.maximum(x, 0.0)
    if spec.type is ActivationType.LEAKY_RELU:
        return np.where(x >= 0, x, spec.alpha * x)
    if spec.type is ActivationType.CLIP:
        return np.clip(x, spec.alpha, spec.beta)
    raise AssertionError(spec)


@pytest.mark.parametrize("act", [None, ActivationSpec(ActivationType.RELU),
                                 ActivationSpec(ActivationType.LEAKY_RELU, 0.1),
                                 ActivationSpec(ActivationType.CLIP, -0.5, 6.0)])
@pytest.mark.parametrize("residual", [False, True])
def test_fused_epilogue(act, residual):
    """activation(conv(x) + bias + residual), the residual read as the layer's second input."""
    x, weights, params, attrs = _conv_case(CONV_CASES["2d_stride_pad"], seed=3)
    conv = ort_single("Conv", [x, weights["kernel"], weights["bias"]], attrs, const_inputs=[1, 2])[0]
    r = randn(rng(4), *conv.shape)
    want = conv.astype(np.float64) + (r if residual else 0.0)
    if act is not None:
        want = _act64(want, act)
    params = params.replace(activation=act, residual=residual)
    got = run_single(params, [x, r] if residual else [x], weights)[0]
    assert_close(got, want.astype(np.float32), atol=1e-5 * float(np.abs(want).max()))
    got16 = run_single(params, [x, r] if residual else [x], weights, precision=Precision.FP16)[0]
    assert_fp16_close(got16, want.astype(np.float32))


# (input shape, out maps, kernel, stride, pre, post, dilation, output_padding, groups)
DECONV_CASES = {
    "1d": ((2, 3, 7), 4, (3,), (2,), (1,), (1,), (1,), (1,), 1),
    "2d_plain": ((1, 4, 5, 6), 3, (3, 3), (1, 1), (0, 0), (0, 0), (1, 1), (0, 0), 1),
    "2d_stride2": ((2, 3, 5, 4), 6, (4, 4), (2, 2), (1, 1), (1, 1), (1, 1), (0, 0), 1),
    "2d_outpad_asym": ((1, 4, 5, 6), 5, (3, 2), (3, 2), (1, 0), (2, 1), (1, 1), (2, 1), 1),
    "2d_groups_dil": ((2, 6, 4, 5), 9, (3, 3), (2, 1), (1, 2), (0, 1), (2, 2), (1, 0), 3),
    "2d_depthwise": ((1, 4, 6, 6), 4, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), (1, 1), 4),
    "3d": ((1, 2, 3, 4, 3), 3, (2, 3, 2), (2, 1, 2), (0, 1, 1), (1, 0, 0), (1, 1, 2), (1, 0, 1), 1),
}


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name", sorted(DECONV_CASES))
def test_deconvolution_matches_onnxruntime(name, bias):
    shape, k, kernel, stride, pre, post, dil, opad, groups = DECONV_CASES[name]
    g = rng(seed_of(name))
    x = randn(g, *shape)
    w = randn(g, shape[1], k // groups, *kernel)
    b = randn(g, k) if bias else None
    weights = {"kernel": w} if b is None else {"kernel": w, "bias": b}
    attrs = dict(kernel_shape=list(kernel), strides=list(stride), pads=list(pre) + list(post),
                 dilations=list(dil), output_padding=list(opad), group=groups)
    want = ort_single("ConvTranspose", [x, w, b], attrs, const_inputs=[1, 2])[0]
    params = DeconvolutionParams(k, kernel, stride, pre, post, dil, opad, groups)
    got = run_single(params, [x], weights)[0]
    assert_close(got, want, atol=1e-5 * max(1.0, float(np.abs(want).max())))
    got16 = run_single(params, [x], weights, precision=Precision.FP16)[0]
    assert_fp16_close(got16, want)


def test_deconvolution_fused_activation():
    g = rng(11)
    x, w, b = randn(g, 1, 3, 4, 4), randn(g, 3, 2, 3, 3), randn(g, 2)
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    want = np.maximum(ort_single("ConvTranspose", [x, w, b], attrs, const_inputs=[1, 2])[0], 0)
    params = DeconvolutionParams(2, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1),
                                 activation=ActivationSpec(ActivationType.RELU))
    assert_close(run_single(params, [x], {"kernel": w, "bias": b})[0], want)
