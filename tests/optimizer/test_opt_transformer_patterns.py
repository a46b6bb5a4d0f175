"""The exported forms of a Linear layer's bias, a layer scale and GELU fold into the GEMM before
them (engine/optimizer/passes/gemm_constants.py, gelu.py), exactly, and only where they may."""

from __future__ import annotations

import math

import numpy as np
import pytest
from netgen import assert_equivalent

from engine.ir.layers import (
    ActivationType,
    FullyConnectedParams,
    LayerKind,
    UnaryOp,
    UnaryParams,
)
from engine.ir.network import Network
from engine.optimizer import optimize

K = LayerKind


def _fc(net: Network, x, k: int, rng: np.random.Generator, name: str):
    c = net.tensors[x.name if hasattr(x, "name") else x].shape[-1]
    w = (rng.standard_normal((k, c)) / math.sqrt(c)).astype(np.float32)
    return net.tensor(net.add_layer(FullyConnectedParams(num_outputs=k), [x], {"kernel": w}, name=name).outputs[0])


def _gelu(net: Network, x, order: str):
    """0.5·x·(1 + erf(x/√2)) the way PyTorch ('torch') or TensorFlow/HF ('hf') export it."""
    ew = net.add_elementwise
    if order == "torch":
        d = ew(x, net.add_constant(np.array(math.sqrt(2.0), np.float32)), "div")
    else:
        d = ew(net.add_constant(np.array([1 / math.sqrt(2.0)], np.float32)), x, "prod")
    e = net.tensor(net.add_layer(UnaryParams(UnaryOp.ERF), [d]).outputs[0])
    t = ew(e, net.add_constant(np.array(1.0, np.float32)), "sum")
    if order == "torch":
        return ew(ew(x, t, "prod"), net.add_constant(np.array(0.5, np.float32)), "prod")
    return ew(ew(x, net.add_constant(np.array(0.5, np.float32)), "prod"), t, "prod")


def _mlp(rng: np.random.Generator, order: str, scale_shape=(32,)) -> Network:
    net = Network("mlp")
    x = net.add_input("x", (2, 5, 16))
    h = _fc(net, x, 64, rng, "fc1")
    h = net.add_elementwise(net.add_constant(rng.standard_normal(64).astype(np.float32)), h, "sum")
    h = _gelu(net, h, order)
    y = _fc(net, h, 32, rng, "fc2")
    y = net.add_elementwise(y, net.add_constant(rng.standard_normal(32).astype(np.float32)), "sum")
    y = net.add_elementwise(y, net.add_constant(rng.uniform(0.5, 1.5, scale_shape).astype(np.float32)), "prod")
    net.mark_output(y)
    net.validate()
    return net


@pytest.mark.parametrize("order", ["torch", "hf"])
def test_linear_bias_gelu_and_layer_scale_become_two_fused_fc_layers(order: str) -> None:
    net = _mlp(np.random.default_rng(3), order)
    report = optimize(net, debug=True)
    out = report.network
    assert_equivalent(net, out)
    fcs = [la for la in out.layers if la.kind is K.FULLY_CONNECTED]
    assert len(fcs) == 2
    assert fcs[0].params.activation.type is ActivationType.GELU_ERF and "bias" in fcs[0].weights
    assert "bias" in fcs[1].weights
    assert not any(la.kind is K.UNARY for la in out.layers)
    labels = {r.pass_name for r in report.rewrites}
    assert {"GemmBiasFusion", "GemmScaleFusion", "GeluFusion"} <= labels


def test_gelu_fusion_alone_is_exact_and_leaves_other_constants() -> None:
    net = Network("g")
    x = net.add_input("x", (3, 7))
    y = net.add_activation(x, "tanh")  # x must not be a network input for the check below to mean anything
    net.mark_output(_gelu(net, y, "torch"))
    net.validate()
    report = optimize(net, passes=["gelu"], debug=True)
    out = report.network
    assert_equivalent(net, out)
    acts = [la for la in out.layers if la.kind is K.ACTIVATION]
    assert [a.params.activation.type for a in acts] == [ActivationType.TANH, ActivationType.GELU_ERF]
    assert not any(la.kind is K.CONSTANT for la in out.layers)



def test_gelu_is_not_fused_when_an_intermediate_has_another_reader() -> None:
    net = Network("g2")
    x = net.add_input("x", (4, 8))
    y = net.add_activation(x, "tanh")
    ew = net.add_elementwise
    d = ew(y, net.add_constant(np.array(math.sqrt(2.0), np.float32)), "div")
    e = net.tensor(net.add_layer(UnaryParams(UnaryOp.ERF), [d]).outputs[0])
    t = ew(e, net.add_constant(np.array(1.0, np.float32)), "sum")
    g = ew(ew(y, t, "prod"), net.add_constant(np.array(0.5, np.float32)), "prod")
    net.mark_output(g)
    net.mark_output(e)  # the erf is needed on its own
    net.validate()
    out = optimize(net, passes=["gelu"]).network
    assert any(la.kind is K.UNARY for la in out.layers)


def test_gelu_with_a_wrong_constant_is_left_alone() -> None:
    net = Network("g3")
    x = net.add_input("x", (4, 8))
    y = net.add_activation(x, "tanh")
    ew = net.add_elementwise
    d = ew(y, net.add_constant(np.array(1.5, np.float32)), "div")  # not sqrt(2)
    e = net.tensor(net.add_layer(UnaryParams(UnaryOp.ERF), [d]).outputs[0])
    t = ew(e, net.add_constant(np.array(1.0, np.float32)), "sum")
    net.mark_output(ew(ew(y, t, "prod"), net.add_constant(np.array(0.5, np.float32)), "prod"))
    net.validate()
    out = optimize(net, passes=["gelu"]).network
    assert not any(la.kind is K.ACTIVATION and la.params.activation.type is ActivationType.GELU_ERF
                   for la in out.layers)


@pytest.mark.parametrize("shape", [(1, 1, 32), (5, 32), (2, 5, 1)])
def test_gemm_constants_fold_only_per_channel_values(shape) -> None:
    """A constant varying along the channel axis folds; one varying along another axis stays."""
    rng = np.random.default_rng(7)
    net = Network("s")
    x = net.add_input("x", (2, 5, 16))
    y = _fc(net, x, 32, rng, "fc")
    net.mark_output(net.add_elementwise(y, net.add_constant(rng.uniform(0.5, 2, shape).astype(np.float32)), "prod"))
    net.validate()
    report = optimize(net, passes=["gemm_constants"], debug=True)
    assert_equivalent(net, report.network)
    folded = shape[-1] == 32 and all(d == 1 for d in shape[:-1])
    assert (len(report.rewrites) == 1) is folded


def test_conv_bias_add_folds_per_output_channel() -> None:
    rng = np.random.default_rng(11)
    net = Network("c")
    x = net.add_input("x", (1, 4, 6, 6))
    y = net.add_convolution(x, rng.standard_normal((8, 4, 3, 3)).astype(np.float32), padding=(1, 1))
    y = net.add_elementwise(y, net.add_constant(rng.standard_normal((1, 8, 1, 1)).astype(np.float32)), "sum")
    net.mark_output(net.add_elementwise(y, net.add_constant(rng.uniform(0.5, 2, (8, 1, 1)).astype(np.float32)),
                                        "prod"))
    net.validate()
    report = optimize(net, passes=["gemm_constants"], debug=True)
    assert_equivalent(net, report.network)
    assert [la.kind for la in report.network.layers] == [K.CONVOLUTION]


def test_an_activated_gemm_keeps_its_add() -> None:
    rng = np.random.default_rng(13)
    net = Network("a")
    x = net.add_input("x", (2, 16))
    y = net.tensor(net.add_layer(FullyConnectedParams(num_outputs=8), [x],
                                 {"kernel": rng.standard_normal((8, 16)).astype(np.float32)}).outputs[0])
    y = net.add_activation(y, "relu")
    net.mark_output(net.add_elementwise(y, net.add_constant(rng.standard_normal(8).astype(np.float32)), "sum"))
    net.validate()
    out = optimize(net, debug=True).network
    assert_equivalent(net, out)
    assert any(la.kind in (K.ELEMENTWISE, K.POINTWISE) for la in out.layers)



def test_dla_aware_optimization_keeps_gelu_out_of_the_gemm_so_the_fc_can_stay_on_the_dla() -> None:
    """A DLA runs the FC but not GELU: for a build that may use a DLA, the GELU becomes its own
    activation layer instead of the FC's epilogue (ReLU still fuses)."""
    net = _mlp(np.random.default_rng(17), "torch")
    out = optimize(net, debug=True, for_dla=True).network
    assert_equivalent(net, out)
    fcs = [la for la in out.layers if la.kind is K.FULLY_CONNECTED]
    assert fcs[0].params.activation is None and "bias" in fcs[0].weights
    gelus = [la for la in out.layers if la.kind is K.ACTIVATION]
    assert [g.params.activation.type for g in gelus] == [ActivationType.GELU_ERF]
    relu_net = Network("relu")
    x = relu_net.add_input("x", (2, 16))
    y = _fc(relu_net, x, 8, np.random.default_rng(1), "fc")
    relu_net.mark_output(relu_net.add_activation(y, "relu"))
    relu_net.validate()
    fused = optimize(relu_net, for_dla=True).network
    assert [la.kind for la in fused.layers] == [K.FULLY_CONNECTED]


def test_studies_and_dla_builds_load_networks_dla_aware(monkeypatch) -> None:
    import engine.optimizer as opt
    from engine.builder import BuilderConfig, wants_dla

    seen = []
    real = opt.optimize
    monkeypatch.setattr(opt, "optimize", lambda *a, **k: seen.append(k.get("for_dla")) or real(*a, **k))
    from engine.model_loading import load_network

    load_network("resnet18_small")
    assert seen == [True]
    assert wants_dla(BuilderConfig(default_device="dla")) and not wants_dla(BuilderConfig())


def test_layer_scale_after_the_permute_back_folds_through_the_transpose() -> None:
    """torchvision's ConvNeXt: fc2 on (N, H, W, C), permute to (N, C, H, W), times gamma (C, 1, 1),
    plus the block input. gamma goes into fc2; the permute stays and writes the scaled tensor."""
    from netgen import build

    net = build(5, ["channel_mlp_late_scale"], head=False)
    report = optimize(net, debug=True)
    assert_equivalent(net, report.network)
    scaled = [r for r in report.rewrites if r.pass_name == "GemmScaleFusion" and "through the transpose" in r.detail]
    assert len(scaled) == 1
    prods = [la for la in report.network.layers if la.kind is K.ELEMENTWISE and la.params.op.value == "prod"]
    assert prods == []


def test_a_transpose_that_reshapes_is_not_looked_through() -> None:
    rng = np.random.default_rng(0)
    net = Network("r")
    x = net.add_input("x", (2, 3, 4, 8))
    y = _fc(net, net.add_activation(x, "relu"), 8, rng, "fc")
    from engine.ir.layers import ShuffleParams

    t = net.add_layer(ShuffleParams(first_perm=(0, 3, 1, 2), reshape=(2, 8, 12)), [y]).outputs[0]
    net.mark_output(net.add_elementwise(t, net.add_constant(rng.uniform(0.5, 1.5, (8, 1)).astype(np.float32)), "prod"))
    report = optimize(net, passes=["gemm_constants"], debug=True)
    assert report.rewrites == []
