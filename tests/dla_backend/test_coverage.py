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
