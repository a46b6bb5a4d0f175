"""A reduction whose only reader maps each row with its result, as one group kernel, without CUDA.

Swin V2's cosine attention normalizes rows as ``x / max(||x||_2, eps)`` (a ReduceL2 with kept dims,
then a pointwise chain reading the norm and x); a mean subtraction (``x - mean(x)``) is the same
shape of pattern with an element-wise reader. Each must lower to one launch writing the reader's
output, and give, in the CUDA emulator on fresh random data, the result of the two separate
launches and of float64 numpy at fp16 tolerance; rows in registers as vectors (32 and 200 halves),
cached element-wise (49) and re-read (1100) are covered.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emu import compiler
from emu_lowered import run_lowered, run_without

from backends.gpu.lower import lower
from engine.ir.dtypes import Precision
from engine.ir.layers import ElementWiseOp, ElementWiseParams, PointwiseParams, PointwiseStep, ReduceOp, ReduceParams
from engine.ir.network import Network

needs_emulator = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")
EPS = 1e-3


def l2_normalize(shape: tuple[int, ...], also_read: bool = False) -> Network:
    """x / max(||x||_2 over the last axis, EPS): ReduceL2 (keep_dims) -> pointwise (max, div)."""
    net = Network("cosine")
    x = net.add_input("x", shape)
    r = net.add_layer(ReduceParams(ReduceOp.L2, (len(shape) - 1,), True), [x], name="norm").outputs[0]
    steps = (PointwiseStep("elementwise", "max", operand_weight="w0"),
             PointwiseStep("elementwise", "div", operand_input=1, reverse=True))
    y = net.add_layer(PointwiseParams(steps), [r, x], {"w0": np.full((1,) * len(shape), EPS, np.float32)},
                      name="div").outputs[0]
    net.mark_output(y)
    if also_read:
        net.mark_output(r)
    for la in net.layers:
        la.precision = Precision.FP16
    return net


def centered(shape: tuple[int, ...], axes: tuple[int, ...] = (-1,)) -> Network:
    """x - mean(x over ``axes``): ReduceMean (keep_dims) -> an element-wise SUB."""
    net = Network("centered")
    x = net.add_input("x", shape)
    m = net.add_layer(ReduceParams(ReduceOp.MEAN, tuple(a % len(shape) for a in axes), True), [x],
                      name="mean").outputs[0]
    net.mark_output(net.add_layer(ElementWiseParams(ElementWiseOp.SUB), [x, m], name="sub").outputs[0])
    for la in net.layers:
        la.precision = Precision.FP16
    return net


@pytest.mark.parametrize("shape", [(2, 3, 16, 32), (4, 49), (3, 200)])
def test_reduction_and_its_row_map_are_one_launch(shape):
    net = l2_normalize(shape)
    low = lower(net, net.layers, list(net.outputs))
    assert [op.label for op in low.ops if op.kind == "gen"] == ["norm + div"]
    assert low.ops[0].writes == [net.layer("div").outputs[0]]


def test_a_reduction_that_is_also_an_output_keeps_its_launch():
    net = l2_normalize((2, 32), also_read=True)
    labels = [op.label for op in lower(net, net.layers, list(net.outputs)).ops]
    assert "norm" in labels and "div" in labels


@needs_emulator
@pytest.mark.parametrize("shape", [(2, 3, 16, 32), (4, 49), (3, 200), (2, 1100)])
def test_l2_normalize_matches_the_two_launches_and_numpy(tmp_path, monkeypatch, shape):
    rng = np.random.default_rng()
    net = l2_normalize(shape)
    x = rng.standard_normal(shape).astype(np.float16).astype(np.float32)
    x[0, ..., :] = 0  # an all-zero row: the clamp to EPS keeps it finite (zeros)
    y = net.layer("div").outputs[0]
    got = run_lowered(lower(net, net.layers, list(net.outputs)), {"x": x}, tmp_path / "fused")[y]
    apart = run_without(net, {"x": x}, tmp_path / "apart", monkeypatch, "find_row_maps", "div")[y]
    x64 = x.astype(np.float64)
    want = x64 / np.maximum(np.sqrt((x64 * x64).sum(-1, keepdims=True)), EPS)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3 * np.abs(want).max())
    np.testing.assert_allclose(got, apart, rtol=2e-3, atol=2e-3 * np.abs(want).max())


@needs_emulator
@pytest.mark.parametrize("shape,axes", [((5, 64), (-1,)), ((2, 3, 6, 7), (2, 3)), ((2, 3, 3, 3), (2, 3))])
def test_mean_subtraction_matches_numpy(tmp_path, shape, axes):
    """Over the last axis (vector rows), and over (H, W) of NCHW: 42 values a row (cached, rows
    sharing a warp) and 9 (a thread a row, re-read)."""
    rng = np.random.default_rng()
    net = centered(shape, axes)
    low = lower(net, net.layers, list(net.outputs))
    assert [op.label for op in low.ops if op.kind == "gen"] == ["mean + sub"]
    x = (rng.standard_normal(shape) + 3).astype(np.float16).astype(np.float32)
    got = run_lowered(low, {"x": x}, tmp_path)[net.outputs[0]]
    mean = np.float16(x.astype(np.float64).mean(axes, keepdims=True)).astype(np.float64)  # stored as fp16 between
    np.testing.assert_allclose(got, x - mean, rtol=1e-2, atol=1e-2)
