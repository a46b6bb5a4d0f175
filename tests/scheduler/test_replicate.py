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
