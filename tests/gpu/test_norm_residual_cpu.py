"""A normalization whose only reader adds a residual (``lowering/norm_residual.py``), without CUDA.

Swin V2's post-norm step (x + LayerNorm(f(x))) over rows that take each of the group kernel's
forms (a warp with the row in 16-byte vectors, a warp caching scalars, a block per row, a thread
per row), in FP16 and FP32 and over the channels of an NHWC producer: the fused kernels must
give, in the CUDA emulator on fresh random data, the bits of the norm-then-add lowering, and
float64 numpy at the precision's tolerance. One network holds several branches, so that each
lowering compiles once in the emulator.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emu import compiler
from emu_lowered import run_lowered, run_without

from backends.gpu.lower import lower
from engine.ir.dtypes import Precision
from engine.ir.layers import NormalizationParams
from engine.ir.network import Network

needs_emulator = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")

# (shape, normalized axes, residual as the add's first input)
FP16_ROWS = [((3, 5, 96), (2,), False),  # a warp per row, the row in 16-byte vectors
             ((2, 3, 100), (2,), True),  # a warp per row, cached scalars
             ((2, 4100), (1,), False)]   # a block per row
FP32_ROWS = [((2, 4, 12), (2,), False)]  # a thread per row
NHWC_ROWS = [((2, 16, 3, 5), (1,), True)]  # over the channels of a convolution's NHWC output


def post_norm_net(rng, rows, precision: Precision, also_read: bool = False) -> tuple[Network, dict]:
    """Per row i: f(x_i) and relu(r_i), LayerNorm over its axes of the first, plus the second; f is
    a ReLU, or for a norm over the channels of a 4-d tensor a 1x1 convolution (an NHWC producer)."""
    net = Network("post_norm")
    data: dict = {"feeds": {}}
    for i, (shape, axes, residual_first) in enumerate(rows):
        if len(shape) == 4 and axes == (1,):
            k = (rng.standard_normal((shape[1], shape[1], 1, 1)) / 4).astype(np.float16).astype(np.float32)
            x = net.add_convolution(net.add_input(f"x{i}", shape), k, None, name=f"fx{i}")
        else:
            x = net.add_activation(net.add_input(f"x{i}", shape), "relu", name=f"fx{i}")
        r = net.add_activation(net.add_input(f"r{i}", shape), "relu", name=f"res{i}")
        wshape = tuple(shape[a] if a in axes else 1 for a in range(len(shape)))[min(axes):]
        w = {"scale": rng.uniform(0.5, 2, wshape).astype(np.float32),
             "bias": rng.standard_normal(wshape).astype(np.float32)}
        n = net.add_layer(NormalizationParams(axes=axes, epsilon=1e-5), [x], dict(w), name=f"norm{i}").outputs[0]
        pair = (r, n) if residual_first else (n, r)
        net.mark_output(net.add_elementwise(*pair, "sum", name=f"add{i}"))
        if also_read:
            net.mark_output(n)
        data[i] = w
        data["feeds"].update({f"{k}{i}": rng.standard_normal(shape).astype(np.float32) for k in ("x", "r")})
    for la in net.layers:
        la.precision = precision
    return net, data


def numpy_result(net: Network, d: dict, i: int, axes: tuple[int, ...]) -> np.ndarray:
    x = d["feeds"][f"x{i}"].astype(np.float64)
    fx = net.layer(f"fx{i}")
    if "kernel" in fx.weights:
        x = np.einsum("nchw,kc->nkhw", x, fx.weights["kernel"][:, :, 0, 0].astype(np.float64))
    else:
        x = np.maximum(x, 0)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    w = d[i]
    return (x - mean) / np.sqrt(var + 1e-5) * w["scale"] + w["bias"] + np.maximum(d["feeds"][f"r{i}"], 0)


def test_the_add_has_no_launch_of_its_own():
    net, _ = post_norm_net(np.random.default_rng(), FP16_ROWS[:1], Precision.FP16)
    labels = [op.label for op in lower(net, net.layers, list(net.outputs)).ops]
    assert "add0" not in labels and "norm0 + add0" in labels, labels


def test_a_norm_that_is_also_an_output_keeps_its_own_store():
    net, _ = post_norm_net(np.random.default_rng(), FP16_ROWS[:1], Precision.FP16, also_read=True)
    labels = [op.label for op in lower(net, net.layers, list(net.outputs)).ops]
    assert "add0" in labels and "norm0" in labels, labels


@needs_emulator
@pytest.mark.parametrize("rows,precision", [(FP16_ROWS, Precision.FP16), (FP32_ROWS, Precision.FP32),
                                            (NHWC_ROWS, Precision.FP16)])
def test_fused_store_matches_the_add_and_numpy(tmp_path, monkeypatch, rows, precision):
    rng = np.random.default_rng()
    net, d = post_norm_net(rng, rows, precision)
    fused = lower(net, net.layers, list(net.outputs))
    labels = [op.label for op in fused.ops]
    assert not [lab for lab in labels if lab.startswith("add")], labels
    if rows is NHWC_ROWS:
        assert fused.slots[net.outputs[0]].layout == "nhwc"
    got = run_lowered(fused, d["feeds"], tmp_path / "fused")
    plain = run_without(net, d["feeds"], tmp_path / "plain", monkeypatch, "find_norm_residuals", "add0")
    tol = 1e-2 if precision is Precision.FP16 else 1e-5
    for i, (y, (_, axes, _)) in enumerate(zip(net.outputs, rows)):
        np.testing.assert_array_equal(got[y], plain[y], err_msg=y)
        want = numpy_result(net, d, i, axes)
        np.testing.assert_allclose(got[y], want, rtol=tol, atol=tol * np.abs(want).max(), err_msg=y)
