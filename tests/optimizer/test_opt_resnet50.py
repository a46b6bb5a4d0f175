"""Acceptance on a real model: ONNX's light_resnet50, parsed and optimized.

The optimized network has no Scale left (every BatchNormalization folded into its convolution),
its ReLUs live in convolution epilogues, its residual adds in residual convolutions, and its
outputs equal the unoptimized network's. The light model's weights are all the same constant,
which makes every class equally likely; the equivalence test therefore also runs with seeded
random weights of the same shapes, and compares the logits (the FullyConnected output), not
just the softmax.

Tolerance is rel 1e-4 here instead of the passes' 1e-5: each of the 53 folded convolutions
rounds its (kernel * scale) and (bias * scale + shift) once, and those per-layer differences of
a few float32 ulps compound through 50 layers and 16 residual sums. (Measured: about 3e-7 of
the output's magnitude; the margin is for other BLAS builds and summation orders.)
"""

from __future__ import annotations

import os
from collections import Counter
from functools import cache

import numpy as np
import onnx
import pytest
from netgen import assert_equivalent, convs_with

from engine.ir.layers import ActivationType, ConvolutionParams, LayerKind
from engine.ir.network import Network
from engine.optimizer import optimize

MODEL = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_resnet50.onnx")

parser = pytest.importorskip("engine.onnx_parser", reason="engine.onnx_parser (the ONNX parser) is not importable yet")


@cache
def parsed() -> Network:
    if not os.path.exists(MODEL):
        pytest.skip(f"{MODEL} is not shipped with this onnx installation")
    return parser.parse(MODEL)


@cache
def optimized() -> tuple[Network, tuple[str, ...]]:
    lines: list[str] = []
    report = optimize(parsed(), log=lines.append, debug=True)
    return report.network, tuple(lines)


def kinds(net: Network) -> Counter:
    return Counter(layer.kind for layer in net.layers)


def test_no_batchnorm_left_and_relus_fused() -> None:
    before, (after, log) = parsed(), optimized()
    assert kinds(before)[LayerKind.SCALE] == 53  # the parser turns each BatchNormalization into a Scale
    assert kinds(after)[LayerKind.SCALE] == 0
    assert not [la for la in after.layers if any("BatchNormalization" in o for o in la.origin)
                and la.kind is not LayerKind.CONVOLUTION]
    relu_convs = sum(1 for la in after.layers if isinstance(la.params, ConvolutionParams)
                     and la.params.activation is not None and la.params.activation.type is ActivationType.RELU)
    assert relu_convs == kinds(before)[LayerKind.ACTIVATION] == 49
    producers = after.producers()
    assert not [la for la in after.layers if la.kind is LayerKind.ACTIVATION
                and producers.get(la.inputs[0]) is not None
                and producers[la.inputs[0]].kind is LayerKind.CONVOLUTION]
    assert convs_with(after, residual=True) == 16 and kinds(after)[LayerKind.ELEMENTWISE] == 0
    assert kinds(after)[LayerKind.CONVOLUTION] == 53
    assert sum("ConvScaleFusion: Fusing" in line for line in log) == 53
    assert log[-1] == f"After final dead-layer removal: {len(after.layers)} layers"


def test_outputs_equal_with_model_weights() -> None:
    assert_equivalent(parsed(), optimized()[0], seed=1, rtol=1e-4)


def _randomized(net: Network, seed: int) -> Network:
    """The same graph with seeded random weights (He-scaled kernels, BatchNorm-like scales)."""
    rng = np.random.default_rng(seed)
    out = net.copy()
    for layer in out.layers:
        w = layer.weights
        if layer.kind in (LayerKind.CONVOLUTION, LayerKind.FULLY_CONNECTED):
            k = w["kernel"]
            fan_in = int(np.prod(k.shape[1:]))
            gain = 2.0 if layer.kind is LayerKind.CONVOLUTION else 0.002  # logits of a few units: softmax not saturated
            w["kernel"] = (rng.standard_normal(k.shape) * np.sqrt(gain / fan_in)).astype(k.dtype)
            if "bias" in w:
                w["bias"] = (0.1 * rng.standard_normal(w["bias"].shape)).astype(w["bias"].dtype)
        elif layer.kind is LayerKind.SCALE:
            for name, lo, hi in (("scale", 0.5, 1.2), ("shift", -0.2, 0.2)):
                if name in w:
                    w[name] = rng.uniform(lo, hi, w[name].shape).astype(w[name].dtype)
    return out


def test_outputs_equal_with_random_weights() -> None:
    net = _randomized(parsed(), seed=7)
    fc = next(la for la in net.layers if la.kind is LayerKind.FULLY_CONNECTED)
    net.mark_output(fc.outputs[0])  # compare the logits too; FC's only reader is the softmax, nothing to fuse
    after = optimize(net, debug=True).network
    assert kinds(after)[LayerKind.SCALE] == 0
    assert_equivalent(net, after, seed=3, rtol=1e-4)
