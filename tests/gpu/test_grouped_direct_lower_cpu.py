"""The direct grouped tactic in the lowering, without CUDA: a 'gdirect_…' tactic from the build
makes a grouped convolution a 'conv_gdirect' launch with unmerged [G][R][S][Cg][Kg] weights, which
the CUDA emulator then runs against float64 numpy; without it (or where it does not apply) the
tensor-core path stays; a layer no merge makes tensor-core sized takes the direct kernel with the
heuristic columns; the tactic names pass the plan checks and the timing cache keys the true group
count."""

from __future__ import annotations

import grouped_nets
import numpy as np
import pytest
from cuda_emu import compiler
from emu_lowered import run_lowered
from gpu_reference import conv_ref

from backends.gpu.backend import split_segments
from backends.gpu.kernels.conv import ConvGeometry
from backends.gpu.kernels.grouped import GroupedDirectTactic, pack_grouped_weights
from backends.gpu.lower import lower
from backends.gpu.tactics import compiled_tactic, signature
from engine.builder import Builder, BuilderConfig
from engine.ir.dtypes import Precision
from engine.ir.layers import ActivationSpec, ActivationType, ConvolutionParams
from engine.ir.logger import Logger, Severity
from engine.ir.network import Network
from engine.onnx_parser import parse

needs_emu = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")


def _net(rng, n: int, c: int, k: int, groups: int, hw: tuple[int, int], stride: int = 1) -> Network:
    net = Network("g")
    net.add_input("x", (n, c, *hw))
    w = (rng.standard_normal((k, c // groups, 3, 3)) / np.sqrt(9 * c // groups)).astype(np.float32)
    b = rng.uniform(-0.3, 0.3, k).astype(np.float32)
    params = ConvolutionParams(num_output_maps=k, kernel=(3, 3), stride=(stride, stride), pre_padding=(1, 1),
                               post_padding=(1, 1), dilation=(1, 1), groups=groups,
                               activation=ActivationSpec(ActivationType.RELU))
    layer = net.add_layer(params, ["x"], {"kernel": w, "bias": b}, name="conv")
    layer.precision = Precision.FP16
    net.mark_output(layer.outputs[0])
    return net


@pytest.mark.parametrize("tactic,kind", [("gdirect_q4", "conv_gdirect"), ("gdirect_q2", "conv_gdirect"),
                                         (None, "conv"), ("igemm_64x32_w2x1_s4_k1", "conv"),
                                         ("gdirect_q3", "conv")])
def test_tactic_name_chooses_the_launch(tactic, kind):
    rng = np.random.default_rng()
    net = _net(rng, 2, 64, 64, 16, (10, 12))  # 16 groups of 4 channels: merged in pairs on tensor cores
    low = lower(net, net.layers, list(net.outputs), {"conv": tactic} if tactic else None)
    (op,) = [op for op in low.ops if op.label == "conv"]
    assert op.kind == kind
    layer = net.layers[0]
    if kind == "conv":
        assert op.info["geom"].groups == 8 and op.info["groups"] == 16  # merged; the timing sees the true count
        return
    assert op.info["tactic"] == GroupedDirectTactic(int(tactic[-1])) and op.info["groups"] == 16
    packed = low.slots[op.info["w"]].const
    assert packed.dtype == np.float16 and packed.shape == (16, 3, 3, 4, 4)
    np.testing.assert_array_equal(packed, pack_grouped_weights(layer.weights["kernel"], 16))
    np.testing.assert_array_equal(packed[5, 1, 2, 3, 0], np.float16(layer.weights["kernel"][5 * 4, 3, 1, 2]))
    bias = low.slots[op.info["b"]].const
    assert bias.dtype == np.float32 and bias.shape == (64,)
    np.testing.assert_array_equal(bias, layer.weights["bias"].astype(np.float16).astype(np.float32))


def test_a_tactic_the_layer_cannot_take_keeps_the_tensor_cores():
    rng = np.random.default_rng()
    net = _net(rng, 1, 128, 128, 2, (8, 8))  # 64-channel groups: past the direct kernel's 32
    low = lower(net, net.layers, list(net.outputs), {"conv": "gdirect_q4"})
    assert [op.kind for op in low.ops if op.label == "conv"] == ["conv"]


@needs_emu
@pytest.mark.parametrize("c,k,groups,hw,stride,tactic", [
    (64, 64, 16, (10, 12), 1, "gdirect_q4"),
    (64, 128, 8, (9, 11), 2, "gdirect_q2"),  # 8 -> 16 channels a group, stride 2
    (12, 12, 3, (9, 7), 1, None),  # no merge fits 3 groups of 4: the direct kernel untimed, C padded to 16
])
def test_lowered_direct_launch_runs_in_the_emulator(tmp_path, c, k, groups, hw, stride, tactic):
    rng = np.random.default_rng()
    net = _net(rng, 2, c, k, groups, hw, stride)
    low = lower(net, net.layers, list(net.outputs), {"conv": tactic} if tactic else None)
    assert "conv_gdirect" in [op.kind for op in low.ops]
    x = rng.uniform(-1, 1, (2, c, *hw)).astype(np.float32)
    out = run_lowered(low, {"x": x}, tmp_path)[net.outputs[0]]
    layer = net.layers[0]
    w16 = layer.weights["kernel"].astype(np.float16)
    xh = x.astype(np.float16).transpose(0, 2, 3, 1)
    ref = conv_ref(xh, w16, (stride, stride), (1, 1), groups=groups)
    ref = np.maximum(ref + layer.weights["bias"].astype(np.float16).astype(np.float64), 0).transpose(0, 3, 1, 2)
    assert out.shape == ref.shape
    rel = float(np.linalg.norm(out.astype(np.float64) - ref) / np.linalg.norm(ref))
    assert rel < 5e-3, rel


@needs_emu
def test_resnext_block_with_the_direct_tactic_forced(tmp_path):
    """The grouped network of the GPU tests up to its features (its convolutions: every grouped one
    on the direct kernel, residual epilogues included), emulated end to end against the same
    layers on the tensor-core path."""
    rng = np.random.default_rng()
    model = grouped_nets.resnext_model(rng, batch=1, size=8)
    net = Builder(Logger(Severity.ERROR)).build(parse(model), BuilderConfig(fp16=True)).network
    (_, layers), = split_segments(net, [la.name for la in net.layers])
    convs = layers[:[la.outputs[0] for la in layers].index("features") + 1]
    grouped = [la.name for la in convs if getattr(la.params, "groups", 1) > 1]
    forced = lower(net, convs, ["features"], dict.fromkeys(grouped, "gdirect_q2"))
    assert sum(op.kind == "conv_gdirect" for op in forced.ops) == len(grouped) == 4
    plain = lower(net, convs, ["features"])
    assert not [op for op in plain.ops if op.kind == "conv_gdirect"]
    x = rng.uniform(-1, 1, (1, 32, 8, 8)).astype(np.float32)
    a = run_lowered(forced, {"input": x}, tmp_path / "direct")["features"].astype(np.float64)
    b = run_lowered(plain, {"input": x}, tmp_path / "tc")["features"].astype(np.float64)
    rel = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    assert rel < 5e-3 and np.abs(b).max() > 0, rel


def test_plan_checks_and_timing_cache_keys():
    assert compiled_tactic("gdirect_q4") and compiled_tactic("gdirect_q2")
    assert not compiled_tactic("gdirect_q8") and not compiled_tactic("gdirect_q4 ")
    merged = ConvGeometry(2, 56, 56, 128, 128, 3, 3, (1, 1), (1, 1), groups=16)  # 32 groups of 4, merged
    eights = signature(merged, (1, 0.0, 0.0), False, 16)
    fours = signature(merged, (1, 0.0, 0.0), False, 32)
    assert eights != fours and fours.endswith(" g16 of32") and eights.endswith(" g16")
    assert signature(merged, (1, 0.0, 0.0), False) == eights
