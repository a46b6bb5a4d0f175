"""Residual adds folded into fully connected epilogues (``lowering/fc_residual.py``), without CUDA.

A ConvNeXt-style block (permute to NHWC, FC + GELU, FC, permute back, layer scale, residual add)
and a transformer-style one (FC + residual on the same layout) are optimized and lowered as the
GPU builds them; every launch, the tensor-core FC kernels included, then runs in the CUDA
emulator on fresh random data and the output is compared with float64 numpy at fp16 tolerance.
The structure is checked too: the add (and the permute before it) has no launch of its own, and
the FC reads the residual and writes the add's output.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from cuda_emu import compiler
from emu_lowered import run_lowered

from backends.gpu.lower import lower
from engine.ir.dtypes import Precision
from engine.ir.layers import ActivationSpec, ActivationType, FullyConnectedParams, ShuffleParams
from engine.ir.network import Network
from engine.optimizer import optimize

needs_emulator = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")
N, C, H, W = 2, 16, 3, 5


def _weights(rng, k: int, c: int) -> dict[str, np.ndarray]:
    return {"kernel": (rng.standard_normal((k, c)) / math.sqrt(c)).astype(np.float32),
            "bias": (0.3 * rng.standard_normal(k)).astype(np.float32)}


def convnext_block(rng, shape: tuple[int, int, int, int] = (N, C, H, W), widen: int = 2) -> tuple[Network, dict]:
    n, c, h, w = shape
    net = Network("convnext_block")
    x = net.add_activation(net.add_input("x", shape), "relu", name="block_in")
    t = net.add_layer(ShuffleParams(first_perm=(0, 2, 3, 1)), [x], name="to_nhwc").outputs[0]
    w1, w2 = _weights(rng, widen * c, c), _weights(rng, c, widen * c)
    gelu = ActivationSpec(ActivationType.GELU_ERF)
    hid = net.add_layer(FullyConnectedParams(widen * c, gelu), [t], w1, name="fc1").outputs[0]
    y = net.add_layer(FullyConnectedParams(c), [hid], w2, name="fc2").outputs[0]
    y = net.add_layer(ShuffleParams(first_perm=(0, 3, 1, 2)), [y], name="to_nchw").outputs[0]
    gamma = rng.uniform(0.5, 1.5, (c, 1, 1)).astype(np.float32)
    y = net.add_elementwise(y, net.add_constant(gamma, name="gamma"), "prod", name="layer_scale").name
    net.mark_output(net.add_elementwise(x, y, "sum", name="residual").name)
    return net, {"w1": w1, "w2": w2, "gamma": gamma}


def convnext_reference(x: np.ndarray, p: dict) -> np.ndarray:
    from scipy.special import erf

    xr = np.maximum(x.astype(np.float64), 0)
    t = xr.transpose(0, 2, 3, 1)
    h = t @ p["w1"]["kernel"].T.astype(np.float64) + p["w1"]["bias"]
    h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
    y = h @ p["w2"]["kernel"].T.astype(np.float64) + p["w2"]["bias"]
    return xr + y.transpose(0, 3, 1, 2) * p["gamma"]


def _fp16(net: Network) -> Network:
    out = optimize(net).network
    for la in out.layers:
        la.precision = Precision.FP16
    return out


def test_convnext_block_folds_scale_permute_and_residual_into_fc2():
    net = _fp16(convnext_block(np.random.default_rng(0))[0])
    low = lower(net, net.layers, list(net.outputs))
    labels = {op.label for op in low.ops}
    assert not {"residual", "to_nchw", "layer_scale"} & labels, labels
    fc2 = next(op for op in low.ops if op.kind == "conv" and "fc2" in op.label)
    assert fc2.info["res"] is not None
    assert low.slots[fc2.writes[0]].layout == "nhwc"
    assert fc2.writes[0] == net.layer("residual").outputs[0]  # the FC writes the add's output


@needs_emulator
def test_convnext_block_runs_like_numpy(tmp_path):
    rng = np.random.default_rng()
    original, params = convnext_block(rng)
    net = _fp16(original)
    x = rng.standard_normal((N, C, H, W)).astype(np.float16).astype(np.float32)
    (got,) = run_lowered(lower(net, net.layers, list(net.outputs)), {"x": x}, tmp_path).values()
    want = convnext_reference(x, params)
    rel = np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want)
    assert rel < 5e-3, rel


@needs_emulator
def test_transformer_residual_runs_like_numpy(tmp_path):
    """y = x + FC(x) on (N, T, C) rows: the add rides in the FC's epilogue on the linear layout."""
    rng = np.random.default_rng()
    net = Network("token_residual")
    x = net.add_activation(net.add_input("x", (N, 7, C)), "tanh", name="tokens")
    w = _weights(rng, C, C)
    y = net.add_layer(FullyConnectedParams(C), [x], w, name="proj").outputs[0]
    net.mark_output(net.add_elementwise(y, x, "sum", name="residual").name)
    net = _fp16(net)
    low = lower(net, net.layers, list(net.outputs))
    assert "residual" not in {op.label for op in low.ops}
    xv = rng.standard_normal((N, 7, C)).astype(np.float16).astype(np.float32)
    (got,) = run_lowered(low, {"x": xv}, tmp_path).values()
    t = np.tanh(xv.astype(np.float64))
    want = t + t @ w["kernel"].T.astype(np.float64) + w["bias"]
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 5e-3


@needs_emulator
def test_convnext_block_as_one_fused_mlp_runs_like_numpy(tmp_path, monkeypatch):
    """Both FCs as one fused launch (forced on these few rows), the residual and the permute in
    its epilogue: one launch fewer than the two FCs."""
    from backends.gpu.lowering import mlp

    monkeypatch.setattr(mlp, "MIN_BLOCKS", 1)
    rng = np.random.default_rng()
    original, params = convnext_block(rng)
    net = _fp16(original)
    low = lower(net, net.layers, list(net.outputs))
    (fused,) = [op for op in low.ops if "fc1" in op.label]
    assert fused.kind == "gen" and fused.label.startswith("fc1 + fc2 + ")
    assert fused.writes[0] == net.layer("residual").outputs[0]  # the launch writes the add's output
    assert low.slots[fused.writes[0]].layout == "nhwc"
    monkeypatch.setattr(mlp, "MIN_BLOCKS", 10 ** 9)
    assert len(lower(net, net.layers, list(net.outputs)).ops) == len(low.ops) + 1
    x = rng.standard_normal((N, C, H, W)).astype(np.float16).astype(np.float32)
    (got,) = run_lowered(low, {"x": x}, tmp_path).values()
    want = convnext_reference(x, params)
    rel = np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want)
    assert rel < 5e-3, rel


def test_mlp_fusion_needs_enough_rows_and_narrow_layers():
    """ConvNeXt's block fuses its MLP at the first stage's width on 8 images (196 blocks of 128
    rows), not on the test's few rows (too few blocks for the GPU) nor at the third stage's width."""
    def fc_kinds(shape):
        net = _fp16(convnext_block(np.random.default_rng(0), shape, 4)[0])
        return [op.kind for op in lower(net, net.layers, list(net.outputs)).ops if "fc" in op.label]

    assert fc_kinds((8, 96, 56, 56)) == ["gen"]
    assert fc_kinds((N, C, H, W)) == ["conv", "conv"]
    assert fc_kinds((32, 384, 14, 14)) == ["conv", "conv"]
