"""Lowering of grouped INT8 convolutions whose group count no merge divides (RegNetY's 13 and 55
groups of 8 channels): the tensor-core kernel with a phantom group in the 16-channel padding, or a
precise refusal where the phantom channels would need constants the layer does not have. The
kernel's integers for such layers are checked in ``test_conv_igemm8_emu_cpu.py``."""

from __future__ import annotations

import int8_nets as nets
import numpy as np
import pytest

from backends.gpu.kernels.int8 import group_merge8, merge_plan8
from backends.gpu.lower import lower
from backends.gpu.lower_int8 import supports_int8


@pytest.mark.parametrize("groups,cg,kg,want", [
    (13, 8, 8, 2), (55, 8, 8, 2), (10, 4, 4, 4), (3, 4, 4, 4),
    (14, 8, 8, None),  # 14 groups merge exactly by 2: no ragged merge
    (3, 8, 24, None),  # 3 x 16 output channels would not fit the padding of 72 (80)
])
def test_ragged_merge_factor(groups, cg, kg, want):
    plan = merge_plan8(groups, cg, kg)  # (m, padded group count): phantom groups where it is past groups
    assert (plan[0] if plan is not None and plan[1] != groups else None) == want
    if want is not None:
        assert group_merge8(groups, cg, kg) is None


def test_regnety_group_count_lowers_to_the_tensor_core_kernel():
    net, _ = nets.conv_net(np.random.default_rng(0), 1, 104, 8, 8, 104, 3, 2, 1, nets.RELU, True, groups=13)
    layer = net.layers[0]
    assert supports_int8(layer, net) == (True, "")
    op = next(op for op in lower(net, net.layers, list(net.outputs)).ops if op.label == layer.name)
    g = op.info["geom"]
    assert op.kind == "conv8" and (g.groups, g.c, g.k) == (7, 112, 112) and op.info["ldy"] == 112
    assert op.info["epi"].k == 104  # the epilogue's constants are the layer's channels only


@pytest.mark.parametrize("act,s_out", [(nets.SILU, "auto"), (nets.RELU, None)])
def test_uneven_merge_refused_where_the_epilogue_has_per_channel_floats(act, s_out):
    net, _ = nets.conv_net(np.random.default_rng(1), 1, 104, 8, 8, 104, 3, 1, 1, act, False, s_out, groups=13)
    ok, why = supports_int8(net.layers[0], net)
    assert not ok and "uneven merge" in why and "13 groups of 8" in why
