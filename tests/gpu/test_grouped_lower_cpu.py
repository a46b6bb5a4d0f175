"""Grouped convolutions on the tensor-core kernel, without CUDA: the merge rule, the block-diagonal
merged weights (checked against a float64 grouped convolution), the lowering's geometry, packing
and fallbacks, the tactics' grid, and the INT8 lowering left as it was."""

from __future__ import annotations

import grouped_nets
import int8_nets as nets
import numpy as np
import pytest
from gpu_reference import conv_ref

from backends.gpu.backend import split_segments
from backends.gpu.kernels.conv import TILES, ConvGeometry, ConvTactic, Tile, candidate_tactics, heuristic_tactic
from backends.gpu.layout import group_merge_factor, merge_groups
from backends.gpu.lower import lower, supports
from backends.gpu.tactics import signature
from engine.builder import Builder, BuilderConfig
from engine.ir.dtypes import Precision
from engine.ir.layers import ActivationSpec, ActivationType, ConvolutionParams
from engine.ir.logger import Logger, Severity
from engine.ir.network import Network
from engine.onnx_parser import parse


@pytest.mark.parametrize("groups,cg,kg,m", [
    (32, 4, 4, 2),  # ResNeXt-50 32x4d, first stage: pairs
    (16, 8, 8, 1), (8, 16, 32, 1), (64, 64, 64, 1),
    (8, 4, 12, 2),
    (4, 2, 2, 4),
    (64, 1, 1, 8), (16, 1, 2, 8),  # depthwise with a channel multiplier of 2
    (3, 4, 4, None),  # no m dividing 3 makes 4-channel groups a multiple of 8
    (2, 2, 2, None),
    (32, 1, 1, 8), (6, 4, 4, 2),
    (48, 3, 3, 8), (12, 3, 3, None),  # 3-channel groups need m = 8, which must divide G
])
def test_merge_factor_rule(groups, cg, kg, m):
    assert group_merge_factor(groups, cg, kg) == m


@pytest.mark.parametrize("groups,cg,kg,m", [(12, 4, 4, 2), (8, 4, 12, 2), (16, 1, 2, 8), (4, 2, 6, 4)])
def test_merged_weights_are_block_diagonal_and_exact(groups, cg, kg, m):
    rng = np.random.default_rng()
    w = rng.standard_normal((groups * kg, cg, 3, 3))
    merged = merge_groups(w, groups, m)
    assert merged.shape == (groups * kg, m * cg, 3, 3)
    for gi in range(groups):
        rows = merged[gi * kg:(gi + 1) * kg]
        j = gi % m
        np.testing.assert_array_equal(rows[:, j * cg:(j + 1) * cg], w[gi * kg:(gi + 1) * kg])
        mask = np.ones(m * cg, bool)
        mask[j * cg:(j + 1) * cg] = False
        assert not rows[:, mask].any(), "weights outside a group's own channels must be zero"
    x = rng.uniform(-1, 1, (2, 7, 6, groups * cg))
    ref = conv_ref(x, w, (2, 1), (1, 1), groups=groups)
    got = conv_ref(x, merged, (2, 1), (1, 1), groups=groups // m)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def _grouped_conv_by_packed(x: np.ndarray, packed: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """The kernel's view of packed weights: group j reads input channels j*Cg.. with block j of the
    (G, Kg, R, S, Cg) array and writes output channels j*Kg.."""
    blocks = packed.reshape(g.groups, g.kg, g.r, g.s, g.cg).astype(np.float64)
    outs = [conv_ref(x[..., j * g.cg:(j + 1) * g.cg], blocks[j].transpose(0, 3, 1, 2), g.stride, g.pad, g.dilation,
                     g.pad_end) for j in range(g.groups)]
    return np.concatenate(outs, axis=-1)


def test_resnext_block_lowers_grouped_convs_to_the_tensor_core_kernel():
    rng = np.random.default_rng()
    model = grouped_nets.resnext_model(rng)
    net = Builder(Logger(Severity.ERROR)).build(parse(model), BuilderConfig(fp16=True)).network
    segs = split_segments(net, [la.name for la in net.layers])
    assert len(segs) == 1 and segs[0][0]
    low = lower(net, segs[0][1], list(net.outputs))
    convs = [op for op in low.ops if op.kind == "conv"]
    assert len(convs) == 5 and not [op for op in low.ops if op.kind == "gen" and op.label.startswith("Conv")]
    grouped = [op for op in convs if op.info["geom"].groups > 1]
    # 16 groups of 4 channels run as 8 groups of 8; the others keep their groups
    assert [(op.info["geom"].c, op.info["geom"].k, op.info["geom"].r, op.info["geom"].stride[0],
             op.info["geom"].groups) for op in grouped] == [(64, 64, 3, 1, 8), (64, 32, 1, 1, 2), (32, 64, 3, 2, 4),
                                                            (64, 64, 3, 1, 8)]
    assert [op.info["res"] is not None for op in grouped] == [False, True, False, True]
    layers = {la.name: la for la in net.layers}
    for op, (c, k, ks, stride, groups) in zip(grouped, grouped_nets.GROUPED):
        g = op.info["geom"]
        assert g.stride == (stride, stride) and (g.cg, g.kg) == (c // g.groups, k // g.groups)
        packed = low.slots[op.info["w"]].const
        assert packed.dtype == np.float16 and packed.shape == (k, ks, ks, g.cg)
        assert low.slots[op.info["b"]].const.shape == (k,)
        assert op.info["act"][0] == 1  # the ReLU is the epilogue
        kernel = layers[op.label].weights["kernel"]  # the IR's grouped kernel, BN folded
        x = rng.uniform(-1, 1, (2, 9, 8, c))
        ref = conv_ref(x, kernel.astype(np.float16), g.stride, g.pad, groups=groups)
        np.testing.assert_allclose(_grouped_conv_by_packed(x, packed, g), ref, rtol=1e-9, atol=1e-9)


def _conv_net(c: int, k: int, groups: int, precision: Precision) -> Network:
    net = Network("g")
    net.add_input("x", (2, c, 6, 6))
    w = np.random.default_rng().standard_normal((k, c // groups, 3, 3)).astype(np.float32)
    params = ConvolutionParams(num_output_maps=k, kernel=(3, 3), stride=(1, 1), pre_padding=(1, 1),
                               post_padding=(1, 1), dilation=(1, 1), groups=groups,
                               activation=ActivationSpec(ActivationType.RELU))
    layer = net.add_layer(params, ["x"], {"kernel": w}, name="conv")
    layer.precision = precision
    net.mark_output(layer.outputs[0])
    return net


@pytest.mark.parametrize("c,k,groups,precision,kind", [
    (64, 128, 8, Precision.FP16, "conv"),
    (24, 24, 12, Precision.FP16, "conv"),  # 2-channel groups merged by 4
    (12, 12, 3, Precision.FP16, "conv_gdirect"),  # 4-channel groups, 3 of them: no merge fits, direct grouped
    (18, 18, 9, Precision.FP16, "gen"),  # 2-channel groups would need m = 4, which does not divide 9
    (32, 32, 32, Precision.FP16, "depthwise"),
    (64, 128, 8, Precision.FP32, "gen"),  # FP32 keeps the direct kernel
])
def test_grouped_lowering_decisions(c, k, groups, precision, kind):
    net = _conv_net(c, k, groups, precision)
    low = lower(net, net.layers, list(net.outputs))
    assert [op.kind for op in low.ops if op.label == "conv"] == [kind]


def test_grouped_geometry_grid_and_tactics():
    g = ConvGeometry(2, 14, 14, 256, 512, 3, 3, (1, 1), (1, 1), groups=32)
    assert (g.cg, g.kg, g.cgp, g.cp, g.kp, g.ktot) == (8, 16, 8, 256, 512, 72)
    assert g.flops == 2 * g.m * 512 * 9 * 8
    assert ConvTactic(Tile(64, 32, 2, 1, 4)).grid(g) == (-(-g.m // 64), 32, 1)
    assert ConvTactic(Tile(128, 128, 2, 4, 3), 3).grid(g) == (-(-g.m // 128), 32, 3)
    ws = ConvTactic(Tile(32, 32, 2, 1, 4), 3)
    assert ws.workspace_bytes(g) == 3 * g.m * 512 * 4  # [z][M][all K]
    cands = candidate_tactics(g)
    assert cands and all(t.tile in TILES for t in cands)
    assert all(t.tile.bn <= 32 for t in cands), "16-channel groups: wider tiles would be mostly zeros"
    h = heuristic_tactic(g)
    assert h.tile in TILES and h.tile.bn == 32
    wide = ConvGeometry(1, 7, 7, 1024, 1024, 3, 3, (1, 1), (1, 1), groups=32)
    assert heuristic_tactic(wide).tile.bn == 32 and heuristic_tactic(ConvGeometry(
        1, 7, 7, 2048, 2048, 3, 3, (1, 1), (1, 1), groups=16)).tile.bn == 128
    assert signature(g, (1, 0.0, 0.0), True).endswith(" g32")
    one = ConvGeometry(2, 14, 14, 256, 512, 3, 3, (1, 1), (1, 1))
    assert " g" not in signature(one, (1, 0.0, 0.0), True) and heuristic_tactic(one).tile.bn >= 64


def test_grouped_geometry_rejects_unaligned_groups():
    with pytest.raises(ValueError, match="multiples of 8"):
        ConvGeometry(1, 8, 8, 64, 64, 3, 3, groups=16)  # 4-channel groups: merge them first
    with pytest.raises(ValueError, match="do not divide"):
        ConvGeometry(1, 8, 8, 64, 60, 3, 3, groups=8)


def test_int8_lowering_is_unaffected():
    rng = np.random.default_rng()
    net, _ = nets.conv_net(rng, 2, 16, 8, 8, 24, 3, 1, 1)
    low = lower(net, net.layers, list(net.outputs))
    op = next(op for op in low.ops if op.kind == "conv8")
    assert op.info["geom"].groups == 1 and op.info["geom"].ktot == 9 * 16
    grouped, _ = nets.conv_net(rng, 2, 64, 8, 8, 64, 3, 1, 1, groups=2)  # two groups of 32 channels
    ok, why = supports(grouped.layers[0], grouped)
    assert ok, why
    op = next(op for op in lower(grouped, grouped.layers, list(grouped.outputs)).ops if op.kind == "conv8")
    assert op.info["geom"].groups == 2 and op.info["geom"].ktot == 9 * 32
