"""Loadable round trips, costs against dla_sim's timing simulation, and refusals with reasons."""

from __future__ import annotations

import time

import numpy as np
import pytest

from backends.dla import DlaBackend
from dla_sim import simulator
from dla_sim.config import ORIN, XAVIER
from dla_sim.limits import DlaLimitError
from dla_sim.loadable import Loadable, LoadableError
from engine.ir.dtypes import Precision
from engine.ir.errors import ExecutionError, UnsupportedError
from engine.ir.layers import GatherParams, SoftMaxParams
from engine.ir.network import Network

from .nets import conv
from .test_functional import net_concat_twice, net_deconv, net_pools, net_residual

FP16 = Precision.FP16


# ------------------------------------------------------------------------------------- (c) loadable


@pytest.mark.parametrize("build", [net_residual, net_deconv, net_concat_twice], ids=["residual", "deconv", "concat"])
def test_loadable_bytes_round_trip_and_rerun_identically(build):
    net = build(np.random.default_rng(3))
    be = DlaBackend(XAVIER, 0)
    part = be.compile(net, [la.name for la in net.layers], FP16)
    ld = Loadable.from_bytes(part.loadable)
    assert ld.to_bytes() == part.loadable
    feeds = {n: np.random.default_rng(8).standard_normal(net.tensors[n].shape).astype(np.float32) for n in net.inputs}
    out1, st1 = be.execute(part, feeds)
    other = DlaBackend(XAVIER, 1)  # a fresh backend parses the bytes itself
    out2, st2 = other.execute(part, feeds)
    for k in out1:
        np.testing.assert_array_equal(out1[k], out2[k])
    assert st1.cycles == st2.cycles and st1.energy_j == st2.energy_j
    broken = bytearray(part.loadable)
    broken[-1] ^= 0xFF
    with pytest.raises(LoadableError, match="checksum"):
        Loadable.from_bytes(bytes(broken))


def test_loadable_memory_map_places_concat_parts_in_their_slots():
    net = net_concat_twice(np.random.default_rng(0))
    part = DlaBackend(XAVIER).compile(net, [la.name for la in net.layers], FP16)
    ld = Loadable.from_bytes(part.loadable)
    cat, a = ld.tensors["cat1"], ld.tensors["a"]
    assert cat.role == "view" and set(cat.parts) == {"a", "x"}
    assert a.offset == cat.offset  # 'a' is written straight into channels 0..15 of cat1
    assert ld.tensors["x"].offset == cat.offset + a.cube.surface_stride
    assert {t.role for t in ld.tensors.values()} >= {"input", "output", "weight", "view"}


# ------------------------------------------------------------------------------------- (d) cost


def _conv_net(k: int, size: int) -> Network:
    net = Network("c")
    x = net.add_input("x", (1, 32, size, size))
    net.mark_output(conv(net, x, k, 3, np.random.default_rng(0), pad=1, name="c"))
    return net


@pytest.mark.parametrize("cfg", [XAVIER, ORIN], ids=["xavier", "orin"])
def test_bigger_conv_costs_more(cfg):
    be = DlaBackend(cfg)
    small = be.cost(_conv_net(32, 16), ["c"], FP16)
    wider = be.cost(_conv_net(128, 16), ["c"], FP16)
    larger = be.cost(_conv_net(32, 64), ["c"], FP16)
    assert 0 < small[0] < wider[0] and small[0] < larger[0]
    assert 0 < small[1] < wider[1] and small[1] < larger[1]


@pytest.mark.parametrize("build", [net_residual, net_pools, net_deconv], ids=["residual", "pools", "deconv"])
def test_costs_agree_with_timing_simulation(build):
    net = build(np.random.default_rng(1))
    be = DlaBackend(XAVIER)
    names = [la.name for la in net.layers]
    part = be.compile(net, names, FP16)
    _, stats = be.execute(part, {}, timing_only=True)
    direct = simulator.simulate(Loadable.from_bytes(part.loadable), XAVIER, timing_only=True)
    assert stats.cycles == pytest.approx(direct.cycles, rel=1e-12)
    t, e, details = be.cost(net, names, FP16)
    assert t == pytest.approx(stats.time_s, rel=1e-9) and e == pytest.approx(stats.energy_j, rel=1e-9)
    per_layer = be.layer_costs(net, FP16)
    assert set(per_layer) == set(names)
    assert sum(v[0] for v in per_layer.values()) == pytest.approx(stats.time_s, rel=1e-9)
    assert sum(v[1] for v in per_layer.values()) == pytest.approx(stats.energy_j, rel=1e-9)
    emitting = {tr.layer for tr in stats.trace}
    for name, (tl, el) in per_layer.items():
        assert (tl > 0 and el > 0) if name in emitting else (tl == 0 and el == 0)
    assert details["groups"] and all(g["cycles"] > 0 for g in details["groups"])


def test_partition_boundary_breaks_fusion_and_costs_more():
    """layer_costs assume the fused context; a partition cut between conv and pool loses the fusion:
    the pool then runs off-line (reads its input back from DRAM) and the conv writes its full output."""
    net = net_pools(np.random.default_rng(2))
    be = DlaBackend(XAVIER)
    per = be.layer_costs(net, FP16)
    alone = be.cost(net, ["c1"], FP16)[0] + be.cost(net, ["maxpool"], FP16)[0]
    fused = be.cost(net, ["c1", "maxpool"], FP16)[0]
    assert fused == pytest.approx(per["c1"][0] + per["maxpool"][0], rel=1e-9)
    assert alone > fused


def test_costing_a_large_network_is_fast():
    rng = np.random.default_rng(0)
    net = Network("big")
    y = net.add_input("x", (1, 64, 28, 28))
    for i in range(100):
        z = conv(net, y, 64, 3, rng, pad=1, act="relu", name=f"a{i}")
        y = conv(net, z, 64, 1, rng, residual=y, act="relu", name=f"b{i}")
        y = net.add_activation(y, "sigmoid", name=f"s{i}")
    net.mark_output(y)
    assert len(net) == 300
    be = DlaBackend(ORIN)
    names = [la.name for la in net.layers]
    t0 = time.perf_counter()
    per = be.layer_costs(net, FP16)
    groups = [be.cost(net, names[s:s + 30], FP16)[0] for s in range(0, 300, 10)]
    elapsed = time.perf_counter() - t0
    assert len(per) == 300 and all(g > 0 for g in groups)
    assert elapsed < 5.0  # typically ~0.2 s; generous for a shared CI core
    assert sum(v[0] for v in per.values()) == pytest.approx(be.cost(net, names, FP16)[0], rel=1e-9)


# ------------------------------------------------------------------------------------- (e) refusals


def test_outside_limits_raises_never_runs():
    net = Network("k33")
    x = net.add_input("x", (1, 4, 40, 40))
    net.mark_output(conv(net, x, 8, 33, np.random.default_rng(0), name="big"))
    be = DlaBackend(XAVIER)
    with pytest.raises(DlaLimitError, match="conv kernel 33×33 exceeds 32"):
        be.compile(net, ["big"], FP16)
    with pytest.raises(DlaLimitError, match="33"):
        be.cost(net, ["big"], FP16)


def test_unsupported_layers_raise_with_reason():
    be = DlaBackend(XAVIER)
    net = Network("g")
    x = net.add_input("x", (1, 16, 4, 4))
    g = net.add_layer(GatherParams(axis=1), [x], {"indices": np.array([1, 0])}, name="gather")
    s = net.add_layer(SoftMaxParams(axis=1), [x], name="softmax")
    net.mark_output(g.outputs[0])
    net.mark_output(s.outputs[0])
    with pytest.raises(UnsupportedError, match="no DLA lowering for gather"):
        be.compile(net, ["gather"], FP16)
    with pytest.raises(UnsupportedError, match="Orin only"):
        be.compile(net, ["softmax"], FP16)
    with pytest.raises(UnsupportedError, match="FP32 requested"):
        be.compile(net, ["softmax"], Precision.FP32)


def test_bad_inputs_and_foreign_partitions_are_refused():
    net = net_residual(np.random.default_rng(0))
    part = DlaBackend(XAVIER).compile(net, [la.name for la in net.layers], FP16)
    with pytest.raises(ExecutionError, match="expected shape"):
        DlaBackend(XAVIER).execute(part, {"x": np.zeros((1, 32, 4, 4), np.float32)})
    with pytest.raises(ExecutionError, match="missing"):
        DlaBackend(XAVIER).execute(part, {})
    with pytest.raises(ExecutionError, match="compiled for DLA 'xavier'"):
        DlaBackend(ORIN).execute(part, {"x": np.zeros((1, 32, 8, 8), np.float32)})
    with pytest.raises(ValueError, match="core 2"):
        DlaBackend(XAVIER, 2)
