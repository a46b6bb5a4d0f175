"""Layers TensorRT's DLA runs that real CNNs are made of: depthwise and grouped convolution, the
decomposed SiLU / hard-swish, INT8 network outputs. Each lowers to dla_sim and matches the
reference backend (INT8 integers exactly, FP16 within 1e-2)."""

from __future__ import annotations

import numpy as np
import pytest

from backends.dla import supports
from dla_sim import conv_core
from dla_sim.config import ORIN, XAVIER
from dla_sim.ops import ConvOp, CubeDesc, Precision
from engine.ir.network import Network

from .int8_nets import INT8, calibrated, dla_vs_reference
from .nets import FP16, conv, rel_err, run_both


def _grouped_net(rng, groups: int, c: int = 32) -> Network:
    net = Network(f"grouped{groups}")
    x = net.add_input("x", (1, c, 10, 10))
    y = conv(net, x, c, 1, rng, act="relu", name="pw0")
    y = conv(net, y, c, 3, rng, pad=1, groups=groups, act="relu", name="gconv")
    y = conv(net, y, 32, 1, rng, act="relu", name="pw1")
    net.mark_output(net.add_pooling(y, "max", (2, 2), name="pool"))
    return net


def _assert_int8_identical(part, out, ref):
    assert part.outputs
    for b in part.outputs:
        np.testing.assert_array_equal(out[b.name], ref[b.name], err_msg=b.name)
        assert len(np.unique(ref[b.name])) > 8


@pytest.mark.parametrize("cfg", [ORIN, XAVIER], ids=["orin", "xavier"])
@pytest.mark.parametrize("groups", [32, 8, 2], ids=["depthwise", "g8", "g2"])
def test_grouped_int8_runs_on_the_dla_and_matches_reference_integers(groups, cfg):
    net = calibrated(_grouped_net(np.random.default_rng(groups), groups), groups + 1)
    assert net.layer("gconv").precision is INT8
    s = supports(net.layer("gconv"), net, INT8, cfg)
    assert s.ok, s.reason
    part, out, ref = dla_vs_reference(net, cfg, groups + 2)
    assert "gconv" in part.layers and len(part.layers) == len(net.layers)
    _assert_int8_identical(part, out, ref)


@pytest.mark.parametrize("groups", [32, 4])
def test_grouped_fp16_matches_reference(groups):
    net = _grouped_net(np.random.default_rng(40 + groups), groups)
    out, ref, _, part = run_both(net, ORIN, 41)
    assert "gconv" in part.layers
    for name, y in out.items():
        assert rel_err(y, ref[name]) < 1e-2


def _conv_op(c: int, k: int, groups: int) -> ConvOp:
    x = CubeDesc(n=1, c=c, h=28, w=28, precision=Precision.INT8)
    y = CubeDesc(n=1, c=k, h=28, w=28, precision=Precision.INT8)
    return ConvOp(name="g", input=x, output=y, kernel=(3, 3), pad=(1, 1, 1, 1), groups=groups)


def test_grouped_convolution_packs_groups_into_one_atom():
    """ResNeXt's 4-channel groups: 8 groups share a 64x32 atomic op (not one padded atom each)."""
    op = _conv_op(128, 128, 32)
    assert conv_core.group_packing(32, 4, 4, 64, 32) == 8
    per_group = 32 * 9 * conv_core.stripe_cycles(28 * 28, XAVIER)  # one atom per group
    assert conv_core.compute_cycles(op, XAVIER) == pytest.approx(per_group / 8)
    dense = _conv_op(128, 128, 1)
    # packed grouped work is never slower than the dense layer with the same channels
    assert conv_core.compute_cycles(op, XAVIER) <= conv_core.compute_cycles(dense, XAVIER)


def test_depthwise_packs_min_atom_channels_on_xavier():
    op = _conv_op(64, 64, 64)
    assert conv_core.compute_cycles(op, XAVIER) == 2 * 9 * conv_core.stripe_cycles(28 * 28, XAVIER)


def _act_net(rng, act: str, standalone: bool) -> Network:
    """conv -> act -> conv (pool output); the activation fused into the conv or a layer of its own
    (after an element-wise add, where nothing can absorb it)."""
    from engine.ir.layers import ActivationParams, ActivationSpec, ActivationType

    net = Network(f"act_{act}")
    x = net.add_input("x", (1, 16, 8, 8))
    t = ActivationType(act)
    spec = ActivationSpec(t, 0.2, 0.5) if t is ActivationType.HARD_SIGMOID else ActivationSpec(t)
    y = conv(net, x, 32, 3, rng, pad=1, name="c0")
    if standalone:
        y = net.add_elementwise(y, conv(net, x, 32, 1, rng, name="c1"), "sum", name="add")
        y = net.tensor(net.add_layer(ActivationParams(spec), [y], name="act").outputs[0])
    else:
        net.layer("c0").params = type(net.layer("c0").params)(**{**net.layer("c0").params.__dict__,
                                                                 "activation": spec})
    y = conv(net, y, 32, 3, rng, pad=1, act="relu", name="c2")
    net.mark_output(net.add_pooling(y, "max", (2, 2), name="pool"))
    return net


@pytest.mark.parametrize("standalone", [False, True], ids=["fused", "layer"])
@pytest.mark.parametrize("act", ["silu", "hard_swish", "hard_sigmoid"])
def test_fused_activations_lower_decomposed_fp16(act, standalone):
    net = _act_net(np.random.default_rng(7), act, standalone)
    for la in net.layers:
        assert supports(la, net, FP16, ORIN).ok, (la.name, supports(la, net, FP16, ORIN).reason)
    out, ref, _, part = run_both(net, ORIN, 8)
    assert len(part.layers) == len(net.layers)
    for name, y in out.items():
        assert rel_err(y, ref[name]) < 1e-2, name


@pytest.mark.parametrize("act", ["silu", "hard_swish"])
def test_int8_build_with_fp16_activation_runs_wholly_on_the_dla(act):
    """The FP16 activation's result is requantized to the INT8 reader's scale on the SDP: no GPU
    hand-off. Integers downstream of an FP16 value can differ by one step from the reference (the
    FP16 values themselves differ by fp16 rounding), so compare by SQNR. The activation is pinned to
    FP16 (left alone, the builder gives the fused conv + add + activation an INT8 epilogue)."""
    net = calibrated(_act_net(np.random.default_rng(9), act, True), 10, pins={"act": FP16})
    fp16 = [la for la in net.layers if la.precision is FP16]
    assert net.layer("c2").precision is INT8 and len(fp16) == 1  # conv + add + activation, fused
    assert fp16[0].params.activation.type.value == act
    for la in net.layers:
        assert supports(la, net, INT8, ORIN).ok, (la.name, supports(la, net, INT8, ORIN).reason)
    part, out, ref = dla_vs_reference(net, ORIN, 11)
    assert len(part.layers) == len(net.layers)
    y, r = out["pool"], ref["pool"]
    sqnr = 10 * np.log10(np.sum(r.astype(np.float64) ** 2) / max(np.sum((y - r).astype(np.float64) ** 2), 1e-30))
    assert sqnr > 30, sqnr
    assert np.mean(y == r) > 0.5


def _resize_net(rng, factor: int, ctm: str = "asymmetric", nearest: str = "floor", mode: str = "nearest",
                c: int = 32) -> Network:
    from engine.ir.layers import ResizeMode, ResizeParams

    net = Network("resize")
    x = net.add_input("x", (1, 16, 6, 6))
    y = conv(net, x, c, 3, rng, pad=1, act="relu", name="c0")
    p = ResizeParams(output_shape=(1, c, 6 * factor, 6 * factor), mode=ResizeMode(mode),
                     coordinate_transformation=ctm, nearest_mode=nearest)
    y = net.tensor(net.add_layer(p, [y], name="up").outputs[0])
    y = conv(net, y, 32, 3, rng, pad=1, act="relu", name="c1")
    net.mark_output(net.add_pooling(y, "max", (2, 2), name="pool"))
    return net


@pytest.mark.parametrize("factor,ctm,nearest", [(2, "asymmetric", "floor"), (2, "half_pixel", "round_prefer_floor"),
                                                (3, "asymmetric", "floor")])
def test_nearest_resize_fp16_matches_reference(factor, ctm, nearest):
    net = _resize_net(np.random.default_rng(factor), factor, ctm, nearest)
    assert supports(net.layer("up"), net, FP16, ORIN).ok
    out, ref, _, part = run_both(net, ORIN, 5)
    assert "up" in part.layers
    for name, y in out.items():
        assert rel_err(y, ref[name]) < 1e-2, name


@pytest.mark.parametrize("cfg", [ORIN, XAVIER], ids=["orin", "xavier"])
def test_nearest_resize_int8_moves_the_integers(cfg):
    net = calibrated(_resize_net(np.random.default_rng(12), 2), 13)
    assert net.layer("c1").precision is INT8
    assert supports(net.layer("up"), net, INT8, cfg).ok
    part, out, ref = dla_vs_reference(net, cfg, 14)
    assert len(part.layers) == len(net.layers)
    _assert_int8_identical(part, out, ref)


def test_resize_refusals_name_the_limit():
    bil = _resize_net(np.random.default_rng(1), 2, "half_pixel", mode="linear")
    s = supports(bil.layer("up"), bil, FP16, ORIN)
    assert not s.ok and "linear Resize" in s.reason and "dla_sim" in s.reason
    big = _resize_net(np.random.default_rng(1), 5, mode="linear")
    assert "1-4" in supports(big.layer("up"), big, FP16, ORIN).reason


def test_int8_network_output_runs_on_the_dla_in_fp16():
    """A classifier's last FC (INT8, float network output) writes FP16 through the SDP converter."""
    from .int8_nets import net_fc

    net = calibrated(net_fc(np.random.default_rng(30)), 31)
    last = net.layers[-1]
    assert last.precision is INT8 and last.outputs[0] in net.outputs
    assert supports(last, net, INT8, ORIN).ok
    part, out, ref = dla_vs_reference(net, ORIN, 32)
    assert last.name in part.layers
    y, r = out[last.outputs[0]], ref[last.outputs[0]]
    assert y.dtype == np.float16
    assert rel_err(y, r) < 1e-2


def _gate_net(rng) -> Network:
    """Sigmoid and ElementWise PROD as layers of their own (a gate from another branch: nothing fuses)."""
    net = Network("gate")
    x = net.add_input("x", (1, 16, 8, 8))
    a = conv(net, x, 32, 3, rng, pad=1, act="relu", name="ca")
    b = conv(net, x, 32, 1, rng, name="cb")
    s = net.add_activation(b, "sigmoid", name="sig")
    y = net.add_elementwise(a, s, "prod", name="mul")
    y = conv(net, y, 32, 3, rng, pad=1, act="relu", name="c2")
    net.mark_output(net.add_pooling(y, "max", (2, 2), name="pool"))
    return net


def test_sigmoid_and_mul_layers_fp16_match_reference():
    net = _gate_net(np.random.default_rng(50))
    kinds = {la.kind.value for la in net.layers}
    assert {"activation", "elementwise"} <= kinds or "pointwise" in kinds
    out, ref, _, part = run_both(net, ORIN, 51)
    assert len(part.layers) == len(net.layers)
    for name, y in out.items():
        assert rel_err(y, ref[name]) < 1e-2, name


def test_sigmoid_and_mul_layers_in_an_int8_build_stay_on_the_dla():
    net = calibrated(_gate_net(np.random.default_rng(52)), 53)
    for la in net.layers:
        assert supports(la, net, INT8, ORIN).ok, (la.name, supports(la, net, INT8, ORIN).reason)
    part, out, ref = dla_vs_reference(net, ORIN, 54)
    assert len(part.layers) == len(net.layers)
    y, r = out["pool"].astype(np.float64), ref["pool"].astype(np.float64)
    assert 10 * np.log10(np.sum(r ** 2) / max(np.sum((y - r) ** 2), 1e-30)) > 30


def _hardswish_chain_onnx(path, divide: bool = True) -> None:
    """x * clip(x + 3, 0, 6) / 6 as older exporters write hard-swish: the optimizer fuses the Add, Clip,
    Div and Mul into one pointwise layer with constant operands."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(60)
    w1 = numpy_helper.from_array((rng.standard_normal((32, 16, 3, 3)) * 0.2).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((32, 32, 1, 1)) * 0.2).astype(np.float32), "w2")
    c = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("three", 3.0), ("zero", 0.0),
                                                                          ("six", 6.0), ("sixth", 1 / 6))]
    last = helper.make_node("Div", ["cl", "six"], ["d"]) if divide else helper.make_node("Mul", ["cl", "sixth"], ["d"])
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["a", "three"], ["b"]), helper.make_node("Clip", ["b", "zero", "six"], ["cl"]),
             last, helper.make_node("Mul", ["a", "d"], ["h"]), helper.make_node("Conv", ["h", "w2"], ["y"])]
    g = helper.make_graph(nodes, "hs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 8, 8])], [w1, w2, *c])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)


@pytest.mark.parametrize("divide", [True, False], ids=["div", "mul"])
def test_fused_pointwise_chain_with_constants_runs_on_the_dla(tmp_path, divide):
    """Fusion must not hide DLA-capable layers: the chain's constants become SDP operands."""
    from engine.model_loading import load_network

    path = tmp_path / "hs.onnx"
    _hardswish_chain_onnx(path, divide)
    net = load_network(str(path))
    assert any(la.kind.value == "pointwise" for la in net.layers)
    for la in net.layers:
        assert supports(la, net, FP16, ORIN).ok, (la.name, supports(la, net, FP16, ORIN).reason)
    out, ref, _, part = run_both(net, ORIN, 61)
    assert len(part.layers) == len(net.layers)
    for name, y in out.items():
        assert rel_err(y, ref[name]) < 1e-2, name


def _split_concat_net(rng, c: int = 58) -> Network:
    """ShuffleNet's unit without the shuffle: a channel split and a concatenation at offset ``c``,
    off the 32-byte atom (58 channels)."""
    from engine.ir.layers import ConcatenationParams, SplitParams

    net = Network("split_concat")
    x = net.add_input("x", (1, 16, 8, 8))
    y = conv(net, x, 2 * c, 1, rng, act="relu", name="c0")
    a, b = net.add_layer(SplitParams(axis=1, sizes=(c, c)), [y], name="split").outputs
    b = conv(net, net.tensor(b), c, 3, rng, pad=1, act="relu", name="cb")
    a = conv(net, net.tensor(a), c, 1, rng, act="relu", name="ca")
    y = net.tensor(net.add_layer(ConcatenationParams(axis=1), [a, b], name="cat").outputs[0])
    y = conv(net, y, 32, 1, rng, act="relu", name="c2")
    net.mark_output(net.add_pooling(y, "max", (2, 2), name="pool"))
    return net


def test_misaligned_split_and_concat_fp16_match_reference():
    net = _split_concat_net(np.random.default_rng(70))
    for la in net.layers:
        assert supports(la, net, FP16, ORIN).ok, (la.name, supports(la, net, FP16, ORIN).reason)
    out, ref, _, part = run_both(net, ORIN, 71)
    assert len(part.layers) == len(net.layers)
    for name, y in out.items():
        assert rel_err(y, ref[name]) < 1e-2, name


@pytest.mark.parametrize("cfg", [ORIN, XAVIER], ids=["orin", "xavier"])
def test_misaligned_split_and_concat_int8_are_exact(cfg):
    from .int8_nets import share_concat_scales

    net = calibrated(_split_concat_net(np.random.default_rng(72)), 73, edit=share_concat_scales)
    for la in net.layers:
        assert supports(la, net, INT8, cfg).ok, (la.name, supports(la, net, INT8, cfg).reason)
    part, out, ref = dla_vs_reference(net, cfg, 74)
    assert len(part.layers) == len(net.layers)
    _assert_int8_identical(part, out, ref)


def _channel_shuffle_onnx(path, c: int = 116) -> None:
    """conv -> Reshape(1, 2, c/2, H, W) -> Transpose(0, 2, 1, 3, 4) -> Reshape(1, c, H, W) -> conv -> pool."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(80)
    w1 = numpy_helper.from_array((rng.standard_normal((c, 16, 1, 1)) * 0.3).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((32, c, 3, 3)) * 0.05).astype(np.float32), "w2")
    s1 = numpy_helper.from_array(np.array([1, 2, c // 2, 8, 8], np.int64), "s1")
    s2 = numpy_helper.from_array(np.array([1, c, 8, 8], np.int64), "s2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a0"]), helper.make_node("Relu", ["a0"], ["a"]),
             helper.make_node("Reshape", ["a", "s1"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t", "s2"], ["u"]),
             helper.make_node("Conv", ["u", "w2"], ["b"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["b"], ["br"]),
             helper.make_node("MaxPool", ["br"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    g = helper.make_graph(nodes, "shuffle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 4, 4])], [w1, w2, s1, s2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)


def _shuffle_net(tmp_path) -> Network:
    from backends.dla.shuffle import channel_shuffle_pair
    from engine.model_loading import load_network

    path = tmp_path / "shuffle.onnx"
    _channel_shuffle_onnx(path)
    net = load_network(str(path))
    assert any(channel_shuffle_pair(net, la) is not None for la in net.layers)
    return net


def test_channel_shuffle_fp16_matches_reference(tmp_path):
    net = _shuffle_net(tmp_path)
    for la in net.layers:
        assert supports(la, net, FP16, ORIN).ok, (la.name, supports(la, net, FP16, ORIN).reason)
    out, ref, _, part = run_both(net, ORIN, 81)
    assert len(part.layers) == len(net.layers)
    for name, y in out.items():
        assert rel_err(y, ref[name]) < 1e-2, name


def test_channel_shuffle_int8_is_exact_and_never_split(tmp_path):
    from backends.dla import DlaBackend
    from backends.dla.shuffle import channel_shuffle_pair
    from engine.ir.errors import UnsupportedError

    net = calibrated(_shuffle_net(tmp_path), 82)
    part, out, ref = dla_vs_reference(net, XAVIER, 83)
    assert len(part.layers) == len(net.layers)
    _assert_int8_identical(part, out, ref)
    first = next(la for la in net.layers if channel_shuffle_pair(net, la) is not None)
    with pytest.raises(UnsupportedError, match="rank-5"):
        DlaBackend(ORIN).compile(net, [first.name], INT8)


def test_a_placement_never_splits_a_channel_shuffle(tmp_path):
    from engine.ir.logger import Logger, Severity
    from scheduler.plan_placement import _keep_channel_shuffles_whole

    net = _shuffle_net(tmp_path)
    devices = {la.name: "dla0" for la in net.layers}
    from backends.dla.shuffle import channel_shuffle_pair

    first, second, _ = next(p for la in net.layers if (p := channel_shuffle_pair(net, la)) is not None)
    devices[second.name] = "gpu"
    _keep_channel_shuffles_whole(net, devices, Logger(Severity.ERROR))
    assert devices[first.name] == devices[second.name] == "gpu"
