"""The replicate policy: whole images on every device at once, DRAM contention, throughput and power."""

from __future__ import annotations

import json

import pytest

from engine.cli import main
from engine.ir.dtypes import Precision
from engine.model_loading import load_network
from scheduler.cost import build_cost_model
from scheduler.studies.replicate import replicate_report


@pytest.fixture(scope="module")
def report():
    return replicate_report(build_cost_model(load_network("resnet18_small"), "orin-agx-64gb", "MAXN",
                                             Precision.INT8))


def test_every_combination_of_copies_is_reported(report):
    assert set(report.copies) == {"gpu", "dla0", "dla1"} and not report.refused
    assert len(report.rows) == 7
    static = sum(report.model.graph.static_power_w.values())
    for row in report.rows:
        demand = sum(report.copies[d].demand_gbps for d in row.devices)
        assert row.slowdown == pytest.approx(max(1.0, demand / report.bandwidth_gbps))
        for d, fps in row.per_device_fps.items():
            assert fps == pytest.approx(1e3 / (report.copies[d].alone_ms * row.slowdown))
        dyn = sum(report.copies[d].energy_mj / 1e3 * f for d, f in row.per_device_fps.items())
        assert row.power_w == pytest.approx(static + dyn)
        assert row.throughput_fps == pytest.approx(sum(row.per_device_fps.values()))


def test_contention_slows_every_device_when_demand_exceeds_bandwidth(report):
    from dataclasses import replace

    plat = report.model.platform
    squeezed = replace(report.model, platform=replace(plat, gpu=replace(plat.gpu, bandwidth_efficiency=0.02)))
    r = replicate_report(squeezed)
    everyone = next(x for x in r.rows if len(x.devices) == 3)
    assert everyone.slowdown > 1
    alone = {x.devices[0]: x.throughput_fps for x in r.rows if len(x.devices) == 1}
    assert all(everyone.per_device_fps[d] < alone[d] for d in alone)


def test_cli_replicate_json(capsys):
    assert main(["place", "resnet18_small", "--int8", "--policy", "replicate", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["policy"] == "replicate" and len(d["rows"]) == 7
    assert all(r["throughput_fps"] > 0 and r["power_w"] > 0 for r in d["rows"])


# ---------------------------------------------------------------- GPU fallback of the DLA copies


@pytest.fixture(scope="module")
def gelu_model(tmp_path_factory):
    from tests.scheduler.gelu_net import gelu_net

    path = gelu_net(tmp_path_factory.mktemp("gelu") / "gelu.onnx", channels=64, hw=56)
    return build_cost_model(load_network(path), "orin-agx-64gb", "MAXN", Precision.INT8)


def test_without_fallback_a_dla_copy_is_excluded_with_its_reason(gelu_model):
    r = replicate_report(gelu_model)
    assert set(r.copies) == {"gpu"} and set(r.refused) == {"dla0", "dla1"}
    for why in r.refused.values():
        assert "no GPU fallback" in why and "Erf" in why and "--allow-gpu-fallback" in why
    assert [row.devices for row in r.rows] == [("gpu",)]


def test_fallback_runs_the_refused_layers_on_the_gpu_with_hand_offs(gelu_model):
    r = replicate_report(gelu_model, fallback=True)
    g = gelu_model.graph.without_pseudo()
    refused = [n.name for n in g.nodes if not n.supports("dla0")]
    assert refused and not r.refused
    for d in ("dla0", "dla1"):
        c = r.copies[d]
        assert list(c.fallback_layers) == refused
        assert all(c.layer_devices[n] == "gpu" for n in refused)
        # hand-offs: every tensor crossing between the DLA and the GPU, once per destination device
        crossings = [(t, c.layer_devices[t.producer], dst) for t in g.tensors
                     for dst in {c.layer_devices[x] for x in t.consumers} - {c.layer_devices[t.producer]}]
        assert c.transitions == len(crossings) >= 2
        assert c.handoff_ms == pytest.approx(sum(g.tensor_transfer(t, s, x)[0] for t, s, x in crossings))
        assert c.handoff_mj == pytest.approx(sum(g.tensor_transfer(t, s, x)[1] for t, s, x in crossings))
        layers_t = sum(n.time[c.layer_devices[n.name]] for n in g.nodes)
        layers_e = sum(n.energy[c.layer_devices[n.name]] for n in g.nodes)
        assert c.alone_ms == pytest.approx(layers_t + c.handoff_ms)
        assert c.energy_mj == pytest.approx(layers_e + c.handoff_mj)
        fb_gpu = sum(n.time["gpu"] for n in g.nodes if n.name in refused)
        assert c.gpu_ms + c.wait_ms == pytest.approx(fb_gpu + c.handoff_ms) and 0 < c.wait_ms < c.handoff_ms
        assert c.device_ms == pytest.approx(sum(n.time[d] for n in g.nodes if n.name not in refused))


def test_fallback_shares_the_gpu_with_the_gpu_copy(gelu_model):
    r = replicate_report(gelu_model, fallback=True)
    rows = {row.devices: row for row in r.rows}
    gpu, dla = r.copies["gpu"], r.copies["dla0"]
    alone_gpu = rows[("gpu",)].per_device_fps["gpu"]
    alone_dla = rows[("dla0",)].per_device_fps["dla0"]
    assert alone_dla == pytest.approx(1e3 / dla.alone_ms)  # alone: nobody else on the GPU
    both = rows[("gpu", "dla0")]
    assert both.slowdown == 1.0  # no DRAM contention here: the GPU's sharing is what slows them
    # the fallback work slows the GPU copy and is itself slowed (the GPU copy always has work: s = 2)
    assert both.per_device_fps["gpu"] < alone_gpu and both.per_device_fps["dla0"] < alone_dla
    assert both.gpu_slowdown["dla0"] == pytest.approx(2.0)
    assert both.per_device_fps["dla0"] == pytest.approx(1e3 / (dla.device_ms + 2 * dla.gpu_ms + dla.wait_ms))
    # work conservation: the GPU is busy all the time, shared between the two copies' GPU work
    busy = (both.per_device_fps["gpu"] * gpu.alone_ms + both.per_device_fps["dla0"] * dla.gpu_ms) / 1e3
    assert busy == pytest.approx(1.0) and both.gpu_busy == pytest.approx(1.0)
    # three copies: each fallback copy's GPU work also shares with the other's GPU phase
    three = rows[("gpu", "dla0", "dla1")]
    p1 = three.gpu_slowdown["dla1"] * dla.gpu_ms / (dla.device_ms + three.gpu_slowdown["dla1"] * dla.gpu_ms
                                                    + dla.wait_ms)
    assert three.gpu_slowdown["dla0"] == pytest.approx(2.0 + p1, rel=1e-9)
    assert three.per_device_fps["gpu"] < both.per_device_fps["gpu"]
    assert sum(three.per_device_fps[d] * (gpu.alone_ms if d == "gpu" else dla.gpu_ms)
               for d in three.devices) / 1e3 == pytest.approx(1.0)


def test_fallback_copies_without_the_gpu_copy_share_only_with_each_other(gelu_model):
    r = replicate_report(gelu_model, fallback=True)
    row = next(x for x in r.rows if x.devices == ("dla0", "dla1"))
    assert 1.0 < row.gpu_slowdown["dla0"] < 2.0 and row.gpu_busy < 1.0


def test_cli_replicate_with_and_without_fallback(tmp_path, capsys):
    from tests.scheduler.gelu_net import gelu_net

    path = gelu_net(tmp_path / "gelu.onnx")
    assert main(["place", path, "--int8", "--policy", "replicate"]) == 0
    out = capsys.readouterr().out
    assert "GPU fallback: off" in out and "dla0   excluded" in out and "no GPU fallback" in out
    assert main(["place", path, "--int8", "--policy", "replicate", "--allow-gpu-fallback"]) == 0
    out = capsys.readouterr().out
    assert "GPU fallback: on" in out and "gpu+dla0+dla1" in out and "excluded" not in out
    assert main(["place", path, "--int8", "--allow-gpu-fallback"]) == 2
    assert "applies to --policy replicate" in capsys.readouterr().err
