"""One test module for the passes' own behaviour: each pass rewrites the pattern it is for (a
pass that does nothing fails here), leaves alone what it must not touch, and stays exact."""

from __future__ import annotations

import numpy as np
import pytest
from netgen import Gen, assert_equivalent, build, convs_with, kind_counts, nonzero

from engine.ir.dtypes import DataType
from engine.ir.layers import (
    ActivationType,
    CastParams,
    ConcatenationParams,
    ConvolutionParams,
    ElementWiseOp,
    IdentityParams,
    LayerKind,
    PointwiseParams,
    ScaleMode,
    ShuffleParams,
)
from engine.ir.network import Network
from engine.optimizer import optimize

K = LayerKind
INCEPTION = lambda g, x: g.relu(g.inception(x))  # noqa: E731 (the concat output is not a network output)


def run(net: Network, stage: str):
    report = optimize(net, passes=[stage], debug=True)
    assert_equivalent(net, report.network)
    return report, report.network


def consumers_of(net: Network, tensor: str) -> list:
    return net.consumers().get(tensor, [])


# ------------------------------------------------------------------ constant folding

@pytest.mark.parametrize("seed", range(3))
def test_constant_folding_replaces_constant_subgraphs(seed: int) -> None:
    net = build(seed, ["constants"])
    before = kind_counts(net)
    report, out = run(net, "constant_folding")
    producers = out.producers()
    for layer in out.layers:
        if layer.kind is not K.CONSTANT and layer.inputs:
            assert not all(t in producers and producers[t].kind is K.CONSTANT for t in layer.inputs), layer.name
    after = kind_counts(out)
    assert after.get(K.UNARY, 0) == before[K.UNARY] - 1
    assert after.get(K.SCALE, 0) == before[K.SCALE] - 1  # the head's Scale reads a computed tensor
    assert after.get(K.MATRIX_MULTIPLY, 0) == 0 and after[K.FULLY_CONNECTED] == 1  # constant weight absorbed
    assert any(r.action == "fold" for r in report.rewrites)


# ------------------------------------------------------------------ identity and dead layers

def test_identity_removal_drops_dropout_cast_and_noop_shuffle() -> None:
    net = build(0, ["identities", lambda g, x: g.shuffles(x, choice=3)])
    report, out = run(net, "identity_removal")
    assert kind_counts(net)[K.IDENTITY] == 1 and K.IDENTITY not in kind_counts(out)
    assert K.CAST not in kind_counts(out)
    assert kind_counts(out)[K.SHUFFLE] == kind_counts(net)[K.SHUFFLE] - 1  # the identity reshape
    assert [r.message for r in report.rewrites][0].startswith("Removing identity")


def test_identity_producing_an_output_renames_its_producer() -> None:
    g = Gen(1)
    y = g.relu(g.conv(g.x, 3))
    out = g.layer(IdentityParams(), [y], origin=["Dropout"])
    g.net.mark_output(out)
    _, opt = run(g.net, "identity_removal")
    assert opt.outputs == [out.name] and opt.producer(out.name).kind is K.ACTIVATION
    assert K.IDENTITY not in kind_counts(opt)


def test_identity_from_input_to_output_stays() -> None:
    net = Network("io")
    x = net.add_input("x", (1, 2, 3))
    y = net.tensor(net.add_layer(IdentityParams(), [x]).outputs[0])
    z = net.tensor(net.add_layer(CastParams(x.dtype), [x]).outputs[0])
    net.mark_output(y)
    net.mark_output(z)
    report, out = run(net, "identity_removal")
    assert not report.rewrites and len(out.layers) == 2


def test_dead_layer_removal_drops_unread_branches() -> None:
    net = build(2, ["dead_branch", "conv_bn_act"])
    report, out = run(net, "dead_layer_removal")
    assert len(out.layers) == len(net.layers) - 2
    assert [r.action for r in report.rewrites] == ["remove", "remove"]
    live = set(out.outputs)
    for layer in reversed(out.layers):
        assert set(layer.outputs) & live, f"{layer.name} is dead"
        live.update(layer.inputs)


# ------------------------------------------------------------------ scale (BatchNorm) folding

@pytest.mark.parametrize("seed", range(4))
def test_scale_folds_into_conv_and_deconv(seed: int) -> None:
    net = build(seed, ["conv_bn_act", "residual", "deconv_bn"], head=False)
    report, out = run(net, "scale_folding")
    assert kind_counts(net)[K.SCALE] >= 4 and K.SCALE not in kind_counts(out)
    assert len(out.layers) == len(net.layers) - kind_counts(net)[K.SCALE]
    fused = [la for la in out.layers if "BatchNormalization" in la.origin]
    assert fused and all(la.kind in (K.CONVOLUTION, K.DECONVOLUTION) and " + " in la.name for la in fused)
    assert all("bias" in la.weights for la in fused)


@pytest.mark.parametrize("choice, folds", [(0, True), (1, True), (2, False)])
def test_scale_before_conv_folds_only_when_exact(choice: int, folds: bool) -> None:
    net = build(3, [lambda g, x: g.scale_then_conv(x, choice)], head=False)
    report, out = run(net, "scale_folding")
    assert (K.SCALE not in kind_counts(out)) == folds
    assert [r.pass_name for r in report.rewrites] == (["ScaleConvFusion"] if folds else [])


def test_scale_not_folded_when_conv_output_has_another_reader_or_power() -> None:
    g = Gen(4)
    y = g.conv(g.x, 3)
    a = g.scale(y)
    b = g.net.add_activation(y, ActivationType.TANH)  # second reader of the conv output
    c = g.scale(g.conv(g.x, 1), power=True)
    g.net.mark_output(g.net.add_elementwise(a, b, ElementWiseOp.SUM))
    g.net.mark_output(c)
    net = g.net
    powered = next(la for la in net.layers if "power" in la.weights)
    powered.weights["power"] = np.full_like(powered.weights["power"], 2.0)  # never the neutral 1
    report, out = run(net, "scale_folding")
    assert not report.rewrites and kind_counts(out)[K.SCALE] == 2


def test_scale_folds_into_fully_connected_head() -> None:
    net = build(5, ["conv_bn_act"])
    folded = optimize(net, passes=["constant_folding"]).network  # MatMul + constant -> FC
    report, out = run(folded, "scale_folding")
    assert any(r.layers[0].startswith("matrix_multiply") for r in report.rewrites)
    assert K.SCALE not in kind_counts(out)


# ------------------------------------------------------------------ conv + residual (+ activation)

@pytest.mark.parametrize("seed", range(6))
def test_conv_residual_fusion(seed: int) -> None:
    net = build(seed, ["residual_plain"], head=False)
    report, out = run(net, "conv_residual")
    assert convs_with(out, residual=True) == 1
    assert kind_counts(out).get(K.ELEMENTWISE, 0) == kind_counts(net)[K.ELEMENTWISE] - 1
    fused = next(la for la in out.layers if getattr(la.params, "residual", False))
    assert len(fused.inputs) == 2 and fused.inputs[1] == "x"
    tail_act = net.producer(net.outputs[0]).kind is K.ACTIVATION
    assert (fused.params.activation is not None) == tail_act
    assert len(report.rewrites[0].layers) == (3 if tail_act else 2)


def test_conv_residual_skips_broadcast_and_activated_convs() -> None:
    g = Gen(6)
    c = g.channels(g.x)
    y = g.conv(g.x, 1, out=c)
    bcast = g.net.add_elementwise(y, g.const(nonzero(g.rng, (1, c, 1, 1))), ElementWiseOp.SUM)
    z = g.net.add_elementwise(g.relu(g.conv(g.x, 3, out=c)), g.x, ElementWiseOp.SUM)
    g.net.mark_output(g.net.add_elementwise(bcast, z, ElementWiseOp.PROD))
    report, _ = run(g.net, "conv_residual")
    assert not report.rewrites


# ------------------------------------------------------------------ conv + activation

@pytest.mark.parametrize("seed", range(4))
def test_conv_activation_fusion(seed: int) -> None:
    net = build(seed, ["inception", "residual_plain"], head=False)
    report, out = run(net, "conv_activation")
    fused = convs_with(out, activation=True)
    assert fused >= 4
    assert kind_counts(out).get(K.ACTIVATION, 0) == kind_counts(net)[K.ACTIVATION] - fused
    assert all(" + " in la.name for la in out.layers
               if isinstance(la.params, ConvolutionParams) and la.params.activation is not None)
    assert any(r.pass_name == "ConvReluFusion" for r in report.rewrites)


def test_conv_activation_keeps_network_output_and_shared_outputs() -> None:
    net = build(7, ["side_output"], head=False)
    report, out = run(net, "conv_activation")
    assert not report.rewrites and convs_with(out, activation=True) == 0


# ------------------------------------------------------------------ pointwise chains

@pytest.mark.parametrize("seed", range(6))
def test_pointwise_chain_fusion(seed: int) -> None:
    net = build(seed, ["pointwise"], head=False)
    report, out = run(net, "pointwise")
    counts = kind_counts(out)
    assert counts[K.POINTWISE] == 1
    assert not {K.ACTIVATION, K.UNARY, K.ELEMENTWISE, K.SCALE, K.CONSTANT} & set(counts)
    layer = next(la for la in out.layers if la.kind is K.POINTWISE)
    assert isinstance(layer.params, PointwiseParams) and len(layer.params.steps) >= 8
    assert layer.weights and layer.inputs.count("x") == 2  # constants became weights; x is the operand
    assert layer.name.startswith("PWN(")


def test_pointwise_extends_existing_fused_layer_and_handles_x_op_x() -> None:
    g = Gen(8)
    y = g.net.add_elementwise(g.x, g.x, ElementWiseOp.PROD)
    y = g.net.add_activation(y, ActivationType.TANH)
    g.net.mark_output(y)
    once = optimize(g.net, passes=["pointwise"], debug=True).network
    assert_equivalent(g.net, once)
    p = next(la for la in once.layers if la.kind is K.POINTWISE)
    net = once.copy()
    out = net.add_activation(p.outputs[0], ActivationType.SIGMOID)
    net.outputs = [out.name]
    twice = optimize(net, passes=["pointwise"], debug=True).network
    assert kind_counts(twice) == {K.POINTWISE: 1}
    assert len(next(iter(twice.layers)).params.steps) == 3
    assert_equivalent(net, twice)


def test_pointwise_drops_products_by_ones_that_only_broadcast() -> None:
    """x / expand(max(n, eps)) (ONNX Expand of a run-time tensor is a product by ones): the chain's
    division broadcasts already, so the full-size ones go; ones that shape the output stay."""
    net = Network("expand")
    x, n = net.add_input("x", (2, 3, 8)), net.add_input("n", (2, 3, 1))
    ones = net.add_constant(np.ones((2, 3, 8), np.float32))
    e = net.add_elementwise(net.add_elementwise(n, net.add_constant(np.float32([[[0.5]]])), ElementWiseOp.MAX),
                            ones, ElementWiseOp.PROD)
    net.mark_output(net.add_elementwise(x, e, ElementWiseOp.DIV))
    wide = net.add_constant(np.ones((2, 3, 4), np.float32))
    only = net.add_elementwise(net.add_activation(n, ActivationType.TANH), wide, ElementWiseOp.PROD)  # shapes it: kept
    net.mark_output(only)
    out = optimize(net, passes=["pointwise"], debug=True).network
    assert_equivalent(net, out)
    fused = [la for la in out.layers if la.kind is K.POINTWISE]
    assert sorted(tuple(w.shape for w in la.weights.values()) for la in fused) == [((1, 1, 1),), ((2, 3, 4),)]


def test_pointwise_needs_two_layers() -> None:
    net = build(10, [lambda g, x: g.net.add_activation(g.conv(x, 3), ActivationType.TANH)], head=False)
    report, _ = run(net, "pointwise")
    assert not report.rewrites


# ------------------------------------------------------------------ shuffles

@pytest.mark.parametrize("choice, left", [(0, 0), (1, 0), (2, 0), (3, 1)])
def test_shuffle_elimination(choice: int, left: int) -> None:
    net = build(11, [lambda g, x: g.relu(g.shuffles(g.relu(x), choice))], head=False)
    report, out = run(net, "shuffle_elimination")
    assert kind_counts(out).get(K.SHUFFLE, 0) == left < kind_counts(net)[K.SHUFFLE]
    assert report.rewrites


def test_shuffle_pair_that_is_not_one_shuffle_stays() -> None:
    g = Gen(12)
    y = g.layer(ShuffleParams(reshape=(1, 2, 2, 36)), [g.x])  # (1,4,6,6) -> split channels
    y = g.layer(ShuffleParams(first_perm=(0, 2, 1, 3), reshape=(1, 2, 72)), [y])
    y = g.layer(ShuffleParams(first_perm=(0, 2, 1)), [y])
    g.net.mark_output(y)
    report, out = run(g.net, "shuffle_elimination")
    assert kind_counts(out)[K.SHUFFLE] >= 2


# ------------------------------------------------------------------ horizontal merge

@pytest.mark.parametrize("seed", range(6))
def test_horizontal_merge_of_sibling_1x1_convs(seed: int) -> None:
    net = build(seed, ["siblings"], head=False)
    siblings = [la for la in net.layers if la.kind is K.CONVOLUTION and la.inputs == ["x"]]
    report, out = run(net, "horizontal_merge")
    assert kind_counts(out)[K.SPLIT] == 1
    assert kind_counts(out)[K.CONVOLUTION] == kind_counts(net)[K.CONVOLUTION] - len(siblings) + 1
    assert report.rewrites[0].message == "Merging layers: " + " || ".join(la.name for la in siblings)
    split = next(la for la in out.layers if la.kind is K.SPLIT)
    assert split.outputs == [la.outputs[0] for la in siblings]  # readers see the original tensors


def test_horizontal_merge_respects_pending_concat_elimination() -> None:
    net = build(13, [INCEPTION], head=False)
    report, out = run(net, "horizontal_merge")
    concat = next(la for la in out.layers if la.kind is K.CONCATENATION)
    producers = out.producers()
    assert all(producers[t].kind is not K.SPLIT for t in concat.inputs)
    eliminated = optimize(out, passes=["concat_elimination"]).network
    assert next(la for la in eliminated.layers if la.kind is K.CONCATENATION).params.in_place


# ------------------------------------------------------------------ concat elimination

def _in_place(net: Network) -> int:
    return sum(1 for la in net.layers if isinstance(la.params, ConcatenationParams) and la.params.in_place)


@pytest.mark.parametrize("seed", range(3))
def test_concat_elimination(seed: int) -> None:
    net = build(seed, [INCEPTION], head=False)
    report, out = run(net, "concat_elimination")
    assert _in_place(net) == 0 and _in_place(out) == 1
    assert report.rewrites[0].message.startswith("Eliminating concatenation concatenation")


def test_concat_elimination_skips_shared_inputs_network_inputs_and_strided_slices() -> None:
    g = Gen(14)
    a = g.relu(g.conv(g.x, 1))
    shared = g.layer(ConcatenationParams(axis=1), [a, g.x])  # network input
    b = g.conv(g.x, 1, out=4)
    c = g.conv(g.x, 1, out=4)
    again = g.layer(ConcatenationParams(axis=1), [b, c])
    g.net.mark_output(g.net.add_elementwise(b, g.x, ElementWiseOp.SUM))  # b has a second reader
    d = g.layer(ShuffleParams(reshape=(2, 2, 6, 6)), [g.conv(g.x, 1, out=4)])
    e = g.layer(ShuffleParams(reshape=(2, 2, 6, 6)), [g.conv(g.x, 1, out=4)])
    strided = g.layer(ConcatenationParams(axis=1), [d, e])  # leading dim 2: slices are not contiguous
    for t in (shared, again, strided):
        g.net.mark_output(g.relu(t))
    f = g.relu(g.conv(g.x, 1))
    h = g.relu(g.conv(g.x, 1))
    g.net.mark_output(g.layer(ConcatenationParams(axis=1), [f, h]))  # output in the caller's buffer
    report, out = run(g.net, "concat_elimination")
    assert not report.rewrites and _in_place(out) == 0


def test_concat_mark_is_cleared_when_no_longer_valid() -> None:
    net = build(15, [INCEPTION], head=False)
    out = optimize(net, passes=["concat_elimination"]).network
    concat = next(la for la in out.layers if la.kind is K.CONCATENATION)
    out.mark_output(concat.inputs[0])  # now an output: cannot alias the concat's buffer
    report = optimize(out, passes=["concat_elimination"])
    assert [r.action for r in report.rewrites] == ["restore"] and _in_place(report.network) == 0


# ------------------------------------------------------------------ the pipeline and its log

def test_pipeline_log_lists_every_rewrite_in_tensorrt_words() -> None:
    net = build(16, ["identities", "conv_bn_act", "residual", "siblings", "inception", "pointwise",
                     "constants", "dead_branch", lambda g, x: g.shuffles(x, 0)])
    lines: list[str] = []
    report = optimize(net, log=lines.append, debug=True)
    assert_equivalent(net, report.network)
    text = "\n".join(lines)
    assert lines[0] == f"Original: {len(net.layers)} layers"
    assert lines[-1] == f"After final dead-layer removal: {len(report.network.layers)} layers"
    for phrase in ("Folding constant layers: ", "Removing identity", "ConvScaleFusion: Fusing ",
                   "ConvEltwiseSumFusion: Fusing ", "ConvReluFusion: Fusing ", "PointWiseFusion: Fusing ",
                   "ShuffleShuffleFusion: Fusing ", "Merging layers: ", "Eliminating concatenation ",
                   "After vertical fusions: ", "After dead-layer removal: "):
        assert phrase in text, phrase
    assert all(r.message in lines for r in report.rewrites)
    assert K.SCALE not in kind_counts(report.network) and K.IDENTITY not in kind_counts(report.network)


def test_fused_layers_accumulate_origin() -> None:
    net = build(17, ["conv_bn_act"], head=False)
    out = optimize(net).network
    conv = next(la for la in out.layers if la.kind is K.CONVOLUTION)
    parts = [la for la in net.layers if la.kind in (K.CONVOLUTION, K.SCALE, K.ACTIVATION)]
    assert conv.name == " + ".join(la.name for la in parts)
    assert set(conv.origin) == {o for la in parts for o in la.origin}


def test_unknown_pass_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown optimizer pass"):
        optimize(build(0, []), passes=["no_such_pass"])


def test_conv_params_of_fused_layers_are_consistent() -> None:
    out = optimize(build(18, ["residual", "conv_bn_act"]), debug=True).network
    for layer in out.layers:
        if isinstance(layer.params, ConvolutionParams):
            assert len(layer.inputs) == (2 if layer.params.residual else 1)


def test_scale_uniform_mode_in_pointwise_chain() -> None:
    g = Gen(19)
    y = g.scale(g.net.add_activation(g.x, ActivationType.SIGMOID), ScaleMode.UNIFORM, power=True)
    g.net.mark_output(g.net.add_activation(y, ActivationType.TANH))
    _, out = run(g.net, "pointwise")
    assert kind_counts(out) == {K.POINTWISE: 1}


def test_cast_to_another_dtype_is_not_an_identity() -> None:
    g = Gen(20)
    y = g.relu(g.conv(g.x, 1))
    half = g.layer(CastParams(DataType.HALF), [y])
    back = g.layer(CastParams(DataType.FLOAT), [half])  # rounds to fp16: not a no-op either
    g.net.mark_output(g.layer(CastParams(DataType.INT32), [g.net.add_elementwise(back, y, ElementWiseOp.SUM)]))
    report, out = run(g.net, "identity_removal")
    assert not report.rewrites and kind_counts(out)[K.CAST] == 3


# ------------------------------------------------------------------ shuffles across fully connected layers


def _fc_kinds_in_order(net: Network) -> list[str]:
    return [la.kind.value for la in net.layers if la.kind in (K.SHUFFLE, K.FULLY_CONNECTED)]


def test_transpose_sinks_below_the_fc_and_a_leading_shuffle_rises_above_the_next() -> None:
    net = build(3, ["token_fc"], head=False)
    before = _fc_kinds_in_order(net)
    report, out = run(net, "transpose_sinking")
    assert [r.action for r in report.rewrites] == ["reorder", "reorder"]
    after = _fc_kinds_in_order(out)
    assert before.count("fully_connected") == after.count("fully_connected") == 2
    # the transpose now follows the first FC; the leading-axes shuffle now precedes the second
    assert before[:4] == ["shuffle", "shuffle", "fully_connected", "shuffle"]
    assert after[:5] == ["shuffle", "fully_connected", "shuffle", "shuffle", "shuffle"]
    assert after[5] == "fully_connected"
    # and shuffle elimination then composes the shuffles between the FCs into fewer layers
    full = optimize(net).network
    assert _fc_kinds_in_order(full).count("shuffle") < before.count("shuffle")
    assert_equivalent(net, full)


def test_shuffles_that_move_the_last_axis_stay_where_they_are() -> None:
    from engine.ir.layers import FullyConnectedParams

    g = Gen(0)
    x = g.relu(g.x)  # (N, C, H, W)
    n, c, h, w = g.net.tensor(x.name).shape
    t = g.layer(ShuffleParams(first_perm=(0, 1, 3, 2)), [x])  # W leaves the last axis: the FC mixes H
    f = g.layer(FullyConnectedParams(num_outputs=3), [t], {"kernel": nonzero(g.rng, (3, h))})
    g.net.mark_output(g.layer(ShuffleParams(first_perm=(0, 1, 3, 2)), [f]))  # after the FC: moves its last axis
    report, _ = run(g.net, "transpose_sinking")
    assert report.rewrites == []
