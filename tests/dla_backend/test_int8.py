"""INT8 on the DLA backend: calibrated networks give the reference backend's integers exactly."""

from __future__ import annotations

import numpy as np
import pytest

from backends.dla import DlaBackend, supports
from dla_sim.config import ORIN, XAVIER
from engine.ir.dtypes import Precision
from engine.ir.errors import UnsupportedError
from engine.ir.network import Network
from engine.optimizer import optimize

from .int8_nets import (
    INT8,
    calibrated,
    dla_vs_reference,
    net_concat,
    net_conv_bn_relu_pools,
    net_fc,
    net_residual,
    share_concat_scales,
)
from .nets import conv


def _assert_identical(part, out, ref):
    """Every int8 boundary output equals the reference's q·scale exactly, and is not trivial."""
    assert part.outputs
    for b in part.outputs:
        y, r = out[b.name], ref[b.name]
        if y.dtype == np.float16:  # an INT8 layer's float network output: FP16 through the converter
            assert np.abs(y.astype(np.float64) - r).max() < 1e-2 * np.abs(r).max(), b.name
            continue
        assert y.dtype == np.float32 and y.shape == r.shape
        np.testing.assert_array_equal(y, r, err_msg=b.name)
        assert len(np.unique(r)) > 8, b.name  # many distinct integers, not a saturated or zero cube


NETS = {"conv_bn_relu_pools": net_conv_bn_relu_pools, "residual": net_residual, "fc": net_fc}


@pytest.mark.parametrize("cfg", [ORIN, XAVIER], ids=["orin", "xavier"])
@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("seed", [3, 4])
def test_int8_partition_matches_reference_integers(name, seed, cfg):
    net = calibrated(NETS[name](np.random.default_rng(seed)), seed + 100)
    assert sum(la.precision is not None and la.precision.value == "int8" for la in net.layers) >= 3
    part, out, ref = dla_vs_reference(net, cfg, seed + 200)
    assert len(part.layers) >= 3
    _assert_identical(part, out, ref)


@pytest.mark.parametrize("seed", [5, 6])
def test_int8_concat_with_shared_scales_is_exact(seed):
    net = calibrated(net_concat(np.random.default_rng(seed)), seed, edit=share_concat_scales)
    assert supports(net.layer("cat"), net, INT8, ORIN).ok
    part, out, ref = dla_vs_reference(net, ORIN, seed + 7)
    assert "cat" in part.layers
    _assert_identical(part, out, ref)


def _sqnr_db(y, r) -> float:
    r = np.asarray(r, np.float64)
    return float(10 * np.log10(np.sum(r ** 2) / max(np.sum((np.asarray(y, np.float64) - r) ** 2), 1e-30)))


def test_int8_concat_with_different_scales_requantizes_its_inputs():
    """TensorRT gives an INT8 concatenation one scale on the DLA: inputs at other scales pass an SDP
    requantization (INT pipeline converter) first. Hand-offs at the partition edges stay exact."""
    net = calibrated(net_concat(np.random.default_rng(8)), 9)
    assert supports(net.layer("cat"), net, INT8, ORIN).ok
    part = DlaBackend(ORIN).compile(net, [la.name for la in net.layers], INT8)
    from dla_sim.loadable import Loadable

    ops = Loadable.from_bytes(part.loadable).ops
    assert any(op.name.endswith(".requant") for op in ops)
    part, out, ref = dla_vs_reference(net, ORIN, 10)
    assert _sqnr_db(out["pool"], ref["pool"]) > 30
    for names in (["ba", "bb"], ["c3", "pool"]):
        part, out, ref = dla_vs_reference(net, ORIN, 10, names)
        _assert_identical(part, out, ref)


def test_partition_cut_between_every_layer_is_exact():
    """GPU <-> DLA hand-offs: any single layer alone on the DLA reproduces the reference."""
    net = calibrated(net_residual(np.random.default_rng(11)), 12)
    for layer in net.layers:
        part, out, ref = dla_vs_reference(net, ORIN, 13, [layer.name])
        _assert_identical(part, out, ref)


def test_clip_below_int8_range_takes_an_exact_sdp_pass():
    rng = np.random.default_rng(14)
    net = Network("clip")
    x = net.add_input("x", (1, 8, 8, 8))
    y = conv(net, x, 32, 3, rng, pad=1, name="c1")
    y = net.add_activation(y, "clip", 0.0, 1.0, name="relu1")
    net.mark_output(net.add_pooling(y, "max", (2, 2), name="pool"))

    def widen(opt, scales):  # the clipped tensor's range is 3x the clip: the bound is 42 < 127
        t = opt.layer("c1 + relu1").outputs[0]
        scales[t] = np.float32(3.0 / 127)
        scales[opt.layer("pool").outputs[0]] = scales[t]

    net = calibrated(net, 15, edit=widen)
    part, out, ref = dla_vs_reference(net, ORIN, 16)
    ops = DlaBackend(ORIN).cost(net, part.layers, INT8)[2]["groups"]
    assert any("c1 + relu1.clip" in g["ops"] for g in ops)
    _assert_identical(part, out, ref)
    q = np.rint(out[net.layer("pool").outputs[0]] / np.float32(3.0 / 127))
    assert q.max() == 42


def test_fp16_layer_inside_an_int8_partition_converts_both_ways():
    rng = np.random.default_rng(17)
    net = Network("mixed")
    x = net.add_input("x", (1, 8, 8, 8))
    y = conv(net, x, 32, 3, rng, pad=1, act="relu", name="c1")
    s = net.add_activation(y, "sigmoid", name="sig")
    net.mark_output(s)
    z = conv(net, s, 32, 1, rng, name="c2")
    net.mark_output(net.add_pooling(z, "max", (2, 2), name="pool"))
    net = calibrated(net, 18)
    assert net.layer("sig").precision.value == "fp16"
    assert supports(net.layer("sig"), net, INT8, ORIN).ok
    part, out, ref = dla_vs_reference(net, ORIN, 19, ["c1", "sig", "c2", "pool"])
    assert _sqnr_db(out["pool"], ref["pool"]) > 30  # FP16 -> INT8 on the SDP converter
    part, out, ref = dla_vs_reference(net, ORIN, 19, ["c1", "sig"])
    y16 = out[net.layer("sig").outputs[0]]
    r16 = ref[net.layer("sig").outputs[0]]
    assert y16.dtype == np.float16
    # the DLA dequantizes with the scale rounded to fp16: FP16 accuracy, not the host's float32 product
    np.testing.assert_allclose(y16.astype(np.float32), r16.astype(np.float32), rtol=0, atol=2e-3)


def test_un_annotated_network_costs_in_int8_but_never_runs():
    rng = np.random.default_rng(20)
    net = net_residual(rng)
    opt = optimize(net).network
    be = DlaBackend(ORIN)
    costs = be.layer_costs(opt, INT8)
    assert set(costs) == {la.name for la in opt.layers}
    assert all(t > 0 and e > 0 for t, e in costs.values())
    cal = calibrated(net_residual(np.random.default_rng(20)), 21)
    costs8 = be.layer_costs(cal, INT8)
    assert costs8.keys() == costs.keys()  # scales change values, not time
    for name, (t, e) in costs.items():
        assert costs8[name] == (pytest.approx(t), pytest.approx(e)), name
    fp16 = be.layer_costs(opt, "fp16")
    assert sum(t for t, _ in costs.values()) < sum(t for t, _ in fp16.values())
    with pytest.raises(UnsupportedError, match="calibrated scales"):
        be.compile(opt, [la.name for la in opt.layers], INT8)


def test_fp32_layer_of_an_int8_build_without_fp16_is_refused():
    net = calibrated(net_fc(np.random.default_rng(22)), 23)
    layer = net.layer("fc0")
    layer.precision = Precision.FP32  # what an INT8 build without fp16 gives a layer INT8 cannot run
    s = supports(layer, net, INT8, ORIN)
    assert not s.ok and "fp16" in s.reason
