"""Concatenations read in place by their element-wise reader (``lowering/concat_reads.py``), without CUDA.

DenseNet's pattern (a concatenation of earlier feature maps, then batch norm + ReLU as one
pointwise chain) and a few variants are lowered as the GPU lowers them: the concatenation must
lose its launch exactly where its only reader is an element-wise layer of its shape, and the
reader's kernel must give, in the CUDA emulator on fresh random data, the bits of the copy-then-map
lowering and float64 numpy at fp16 tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emu import compiler
from emu_lowered import run_lowered

from backends.gpu.lower import lower
from backends.gpu.lowering import lowerer
from engine.ir.dtypes import Precision
from engine.ir.layers import ConcatenationParams, PointwiseParams, PointwiseStep
from engine.ir.network import Network

needs_emulator = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")
N, H, W = 2, 4, 3


def dense_net(rng, widths: tuple[int, ...], also_read: bool = False, axis: int = 1) -> tuple[Network, dict]:
    """Inputs of ``widths`` channels through a ReLU each (NHWC producers when axis is 1), a
    concatenation, and BN + ReLU on it as one pointwise chain; ``also_read``: the concatenation is
    a network output too, so it must keep its own tensor."""
    net = Network("dense")
    parts, feeds = [], {}
    for i, c in enumerate(widths):
        shape = (N, c, H, W) if axis == 1 else (N, H, W, c)
        feeds[f"x{i}"] = rng.standard_normal(shape).astype(np.float16).astype(np.float32)
        parts.append(net.add_activation(net.add_input(f"x{i}", shape), "relu", name=f"r{i}"))
    cat = net.add_layer(ConcatenationParams(axis=axis), parts, name="cat").outputs[0]
    total = sum(widths)
    wshape = (total, 1, 1) if axis == 1 else (total,)
    w = {"w0": rng.uniform(0.5, 2, wshape).astype(np.float16).astype(np.float32),
         "w1": rng.standard_normal(wshape).astype(np.float16).astype(np.float32)}
    steps = (PointwiseStep("elementwise", "prod", operand_weight="w0"),
             PointwiseStep("elementwise", "sum", operand_weight="w1"), PointwiseStep("activation", "relu"))
    y = net.add_layer(PointwiseParams(steps), [cat], dict(w), name="bn_relu").outputs[0]
    net.mark_output(y)
    if also_read:
        net.mark_output(cat)
    for la in net.layers:
        la.precision = Precision.FP16
    return net, {"feeds": feeds, **w}


def numpy_result(net: Network, d: dict, axis: int) -> np.ndarray:
    xs = [np.maximum(d["feeds"][f"x{i}"].astype(np.float64), 0) for i in range(len(d["feeds"]))]
    return np.maximum(np.concatenate(xs, axis=axis) * d["w0"] + d["w1"], 0)


@pytest.mark.parametrize("widths", [(16, 8), (12, 20, 4), (3, 5)])
def test_concatenation_read_by_its_chain_has_no_launch(widths):
    net, _ = dense_net(np.random.default_rng(), widths)
    low = lower(net, net.layers, list(net.outputs))
    labels = [op.label for op in low.ops]
    assert "cat" not in labels and "bn_relu" in labels
    chain = next(op for op in low.ops if op.label == "bn_relu")
    producers = {net.layer(f"r{i}").outputs[0] for i in range(len(widths))}
    assert producers <= set(chain.reads), (chain.reads, producers)


def test_concatenation_that_is_also_an_output_keeps_its_launch():
    net, _ = dense_net(np.random.default_rng(), (16, 8), also_read=True)
    assert "cat" in [op.label for op in lower(net, net.layers, list(net.outputs)).ops]


@needs_emulator
@pytest.mark.parametrize("widths,axis", [((16, 8), 1), ((12, 20, 4), 1), ((3, 5), 1), ((8, 16), 3), ((5, 7, 4), 3)])
def test_in_place_read_matches_the_copy_and_numpy(tmp_path, monkeypatch, widths, axis):
    rng = np.random.default_rng()
    net, d = dense_net(rng, widths, axis=axis)
    fused = lower(net, net.layers, list(net.outputs))
    assert "cat" not in [op.label for op in fused.ops]
    got = run_lowered(fused, d["feeds"], tmp_path / "fused")
    with monkeypatch.context() as m:
        m.setattr(lowerer, "find_concat_reads", lambda lw, absorbed: {})
        copied = lower(net, net.layers, list(net.outputs))
        assert "cat" in [op.label for op in copied.ops]
        plain = run_lowered(copied, d["feeds"], tmp_path / "copied")
    y = net.outputs[0]
    np.testing.assert_array_equal(got[y], plain[y])
    want = numpy_result(net, d, axis)
    np.testing.assert_allclose(got[y], want, rtol=1e-2, atol=1e-2 * np.abs(want).max())
