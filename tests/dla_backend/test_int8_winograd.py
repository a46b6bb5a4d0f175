"""INT8 Winograd on the DLA: direct mode by default (NVIDIA's NVDLA compiler never picks Winograd for
INT8: nvdla/sw engine-ast/EngineNodeFactory.cpp), the hardware's lossy INT8 Winograd (PRA truncation
[PREC]) as an opt-in what-if, with the Winograd MAC rate of [IAS] where [PG]'s conditions hold."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from backends.dla import DlaBackend
from backends.dla.lower import lower
from backends.dla.throughput import network_throughput
from dla_sim import conv_core
from dla_sim.config import ORIN, XAVIER
from dla_sim.loadable import Loadable
from dla_sim.ops import ConvOp
from engine.ir.int8_math import sqnr_db
from engine.ir.network import Network

from .int8_nets import INT8, calibrated, dla_vs_reference
from .nets import conv


def _winograd(cfg):
    return replace(cfg, conv=replace(cfg.conv, winograd_int8=True))


def _net(rng, n: int = 1) -> Network:
    """A 3x3 stride-1 INT8 convolution whose int8 weights survive the Winograd transform: in every
    (k, c) slice the centre tap carries the weight (it enters U4 = (2G) g (2G)^T with coefficient
    +-1 only) and the other taps are small."""
    net = Network("wino")
    x = net.add_input("x", (n, 64, 16, 16))
    y = conv(net, x, 64, 1, rng, act="relu", name="c0")
    w = rng.standard_normal((64, 64, 3, 3)) * 0.01
    w[:, :, 1, 1] = rng.uniform(0.3, 0.7, (64, 64)) * rng.choice([-1, 1], (64, 64))
    w[:, 0, :, :] = 0.0
    w[:, 0, 1, 1] = 1.0  # the per-channel maximum: q = 127, alone in its slice
    p = conv(net, y, 64, 3, rng, pad=1, act="relu", name="c1")
    lay = net.layer("c1")
    lay.weights["kernel"] = (w / np.sqrt(64 * 0.25)).astype(np.float32)
    net.mark_output(net.add_pooling(p, "max", (2, 2), name="pool"))
    return net


def _convs(part) -> list[ConvOp]:
    return [op for op in Loadable.from_bytes(part.loadable).ops if isinstance(op, ConvOp)]


@pytest.mark.parametrize("cfg", [ORIN, XAVIER], ids=["orin", "xavier"])
def test_int8_convolutions_stay_in_direct_mode_by_default(cfg):
    net = calibrated(_net(np.random.default_rng(1)), 2)
    part = DlaBackend(cfg).compile(net, [la.name for la in net.layers], INT8)
    assert [op.mode for op in _convs(part)] == ["direct", "direct"]


def test_opt_in_lowers_qualifying_int8_convolutions_to_winograd():
    net = calibrated(_net(np.random.default_rng(3)), 4)
    cfg = _winograd(XAVIER)
    part = DlaBackend(cfg).compile(net, [la.name for la in net.layers], INT8)
    c0, c1 = _convs(part)
    assert c0.mode == "direct" and c1.mode == "winograd" and c1.pra_trunc == 2  # 1x1 stays direct
    # [IAS]: 4x4x4 input blocks x atomic_k kernels per cycle, one stripe per block: 2.25x direct at C % 64 == 0
    k, c, ho, wo = 64, 64, 16, 16
    _, ak = cfg.conv.atoms(c1.input.precision)
    assert conv_core.compute_cycles(c1, cfg) == math.ceil(k / ak) * math.ceil(c / 4) * \
        conv_core.stripe_cycles(ho // 2 * wo // 2, cfg)
    assert conv_core.compute_cycles(replace(c1, mode="direct"), cfg) / conv_core.compute_cycles(c1, cfg) == 2.25


def test_opt_in_winograd_is_lossy_as_the_hardware_is():
    """PRA truncation drops V's two low bits: close to, but not, the reference's exact integers."""
    net = calibrated(_net(np.random.default_rng(5)), 6)
    part, out, ref = dla_vs_reference(net, _winograd(ORIN), 7)
    assert [op.mode for op in _convs(part)] == ["direct", "winograd"]
    assert not np.array_equal(out["pool"], ref["pool"])
    assert sqnr_db(ref["pool"], out["pool"]) > 25  # 34-35 dB on the convolution itself
    part, out, ref = dla_vs_reference(net, ORIN, 7)  # the default lowering: exact
    np.testing.assert_array_equal(out["pool"], ref["pool"])


def test_weights_that_do_not_fit_after_the_transform_stay_direct():
    rng = np.random.default_rng(8)
    net = Network("dense")
    x = net.add_input("x", (1, 64, 16, 16))
    net.mark_output(net.add_pooling(conv(net, conv(net, x, 64, 1, rng, act="relu", name="c0"), 64, 3, rng,
                                         pad=1, act="relu", name="c1"), "max", (2, 2), name="pool"))
    net = calibrated(net, 9)
    part = DlaBackend(_winograd(ORIN)).compile(net, [la.name for la in net.layers], INT8)
    assert [op.mode for op in _convs(part)] == ["direct", "direct"]


def test_anchors_unchanged_by_int8_winograd_multi_batch_excludes_it():
    """Both anchors run batches (2 on Orin, 32 on Xavier); Winograd excludes multi-batch ([PG]
    feature crossing), so even the opt-in leaves them as calibrated. At batch 1 it is faster."""
    from engine.model_loading import load_network

    r50 = load_network("resnet50", 2)
    base = network_throughput(r50, "int8", ORIN, cores=2).fps
    assert network_throughput(r50, "int8", _winograd(ORIN), cores=2).fps == pytest.approx(base, rel=1e-9)
    one = load_network("resnet50", 1)
    ops = lower(one, [la.name for la in one.layers], "int8", _winograd(ORIN), with_weights=False).ops
    convs = [op for op in ops if isinstance(op, ConvOp)]
    qualify = [op for op in convs if op.kernel == (3, 3) and op.stride == (1, 1) and op.output.h % 4 == 0
               and op.output.h >= 8]  # 56x56 and 28x28; 14x14 and 7x7 are not multiples of 4 ([IAS])
    assert len(qualify) == 6 and all(op.mode == "winograd" for op in qualify)
    assert sum(op.mode == "winograd" for op in convs) == 6
    assert network_throughput(one, "int8", _winograd(ORIN), cores=1).fps > \
        network_throughput(one, "int8", ORIN, cores=1).fps
