"""A normalization whose only reader adds a residual (``lowering/norm_residual.py``), without CUDA.

Swin V2's post-norm step (x + LayerNorm(f(x))) over rows that take each of the group kernel's
forms (a thread, a warp with the row in 16-byte vectors, a warp caching scalars, a block per
row), in FP16 and FP32: the fused kernel must give, in the CUDA emulator on fresh random data,
the bits of the norm-then-add lowering, and float64 numpy at the precision's tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emu import compiler
from emu_lowered import run_lowered

from backends.gpu.lower import lower
from backends.gpu.lowering import lowerer
from engine.ir.dtypes import Precision
from engine.ir.layers import NormalizationParams
from engine.ir.network import Network

needs_emulator = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")


def post_norm_net(rng, shape: tuple[int, ...], axes: tuple[int, ...], precision: Precision,
                  residual_first: bool = False, also_read: bool = False) -> tuple[Network, dict]:
    """f(x) and relu(r), LayerNorm over ``axes`` of the first, plus the second; f is a ReLU, or
    for a norm over the channels of a 4-d tensor a 1x1 convolution (an NHWC producer)."""
    net = Network("post_norm")
    if len(shape) == 4 and axes == (1,):
        k = (rng.standard_normal((shape[1], shape[1], 1, 1)) / 4).astype(np.float16).astype(np.float32)
        x = net.add_convolution(net.add_input("x", shape), k, None, name="fx")
    else:
        x = net.add_activation(net.add_input("x", shape), "relu", name="fx")
    r = net.add_activation(net.add_input("r", shape), "relu", name="res")
    wshape = tuple(shape[a] if a in axes else 1 for a in range(len(shape)))[min(axes):]
    w = {"scale": rng.uniform(0.5, 2, wshape).astype(np.float32),
         "bias": rng.standard_normal(wshape).astype(np.float32)}
    n = net.add_layer(NormalizationParams(axes=axes, epsilon=1e-5), [x], dict(w), name="norm").outputs[0]
    y = net.add_elementwise(r, n, "sum", name="add") if residual_first else net.add_elementwise(n, r, "sum", name="add")
    net.mark_output(y)
    if also_read:
        net.mark_output(n)
    for la in net.layers:
        la.precision = precision
    feeds = {k: rng.standard_normal(shape).astype(np.float32) for k in ("x", "r")}
    return net, {"feeds": feeds, **w}


def numpy_result(net: Network, d: dict, axes: tuple[int, ...]) -> np.ndarray:
    x = d["feeds"]["x"].astype(np.float64)
    fx = net.layer("fx")
    if "kernel" in fx.weights:
        x = np.einsum("nchw,kc->nkhw", x, fx.weights["kernel"][:, :, 0, 0].astype(np.float64))
    else:
        x = np.maximum(x, 0)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * d["scale"] + d["bias"] + np.maximum(d["feeds"]["r"], 0)


def test_the_add_has_no_launch_of_its_own():
    net, _ = post_norm_net(np.random.default_rng(), (2, 7, 96), (2,), Precision.FP16)
    labels = [op.label for op in lower(net, net.layers, list(net.outputs)).ops]
    assert "add" not in labels and "norm + add" in labels, labels


def test_a_norm_that_is_also_an_output_keeps_its_own_store():
    net, _ = post_norm_net(np.random.default_rng(), (2, 7, 96), (2,), Precision.FP16, also_read=True)
    labels = [op.label for op in lower(net, net.layers, list(net.outputs)).ops]
    assert "add" in labels and "norm" in labels, labels


@needs_emulator
@pytest.mark.parametrize("shape,axes,precision,residual_first", [
    ((3, 5, 96), (2,), Precision.FP16, False),      # a warp per row, the row in 16-byte vectors
    ((2, 3, 100), (2,), Precision.FP16, True),      # a warp per row, cached scalars
    ((2, 4, 12), (2,), Precision.FP32, False),      # a thread per row
    ((2, 4100), (1,), Precision.FP16, False),       # a block per row
    ((2, 16, 3, 5), (1,), Precision.FP16, True),    # over the channels of an NHWC producer
])
def test_fused_store_matches_the_add_and_numpy(tmp_path, monkeypatch, shape, axes, precision, residual_first):
    rng = np.random.default_rng()
    net, d = post_norm_net(rng, shape, axes, precision, residual_first)
    fused = lower(net, net.layers, list(net.outputs))
    assert "add" not in [op.label for op in fused.ops]
    if len(shape) == 4:
        assert fused.slots[net.outputs[0]].layout == "nhwc"
    got = run_lowered(fused, d["feeds"], tmp_path / "fused")
    with monkeypatch.context() as m:
        m.setattr(lowerer, "find_norm_residuals", lambda lw, absorbed: {})
        plain_low = lower(net, net.layers, list(net.outputs))
        assert "add" in [op.label for op in plain_low.ops]
        plain = run_lowered(plain_low, d["feeds"], tmp_path / "plain")
    y = net.outputs[0]
    np.testing.assert_array_equal(got[y], plain[y])
    want = numpy_result(net, d, axes)
    tol = 1e-2 if precision is Precision.FP16 else 1e-5
    np.testing.assert_allclose(got[y], want, rtol=tol, atol=tol * np.abs(want).max())
