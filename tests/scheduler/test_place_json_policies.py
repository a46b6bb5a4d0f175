"""``hetrt place --json`` for every policy: the keys each document has, and that its numbers add up
(totals are the sums of their parts, per-layer costs match the layer's own cost table, stage and
segment times match the placement modules' own times)."""

from __future__ import annotations

import json

import pytest

from engine.cli import main
from engine.ir.dtypes import Precision
from engine.model_loading import load_network
from scheduler.cost import build_cost_model
from scheduler.studies.throughput_json import concurrent_json, pipeline_json
from scheduler.studies.throughput_report import concurrent_report, pipeline_report
from tests.scheduler.gelu_net import gelu_net

HEADER = {"model", "platform", "power_mode", "precision", "policy", "clock", "units", "static_power_w"}
LAYER = {"name", "kind", "device", "time_us", "energy_uj", "reason", "devices"}
DEVICE_TOTAL = {"latency_us", "energy_uj", "layers_busy_us", "refused_layers", "fallback_device"}
REL = 1e-9


def _side(device: str) -> str:
    """The cost-table device of a reported one: a GPU-side layer run by the host CPU is labelled 'host'."""
    return "gpu" if device == "host" else device


def _json(capsys, *argv) -> dict:
    assert main(["place", *argv, "--int8", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _check_layer(x: dict) -> None:
    assert set(x) >= LAYER and x["reason"]
    own = x["devices"][_side(x["device"])]
    assert own["time_us"] == pytest.approx(x["time_us"], rel=REL)
    assert own["energy_uj"] == pytest.approx(x["energy_uj"], rel=REL)
    assert x["time_us"] >= 0 and x["energy_uj"] >= 0


def _check_device_totals(d: dict, devices=("gpu", "dla0", "dla1")) -> None:
    assert set(devices) <= set(d)
    for v in d.values():
        assert set(v) >= DEVICE_TOTAL and v["latency_us"] >= v["layers_busy_us"] > 0


@pytest.fixture(scope="module")
def gelu(tmp_path_factory):
    return gelu_net(tmp_path_factory.mktemp("gelu") / "gelu.onnx")


def test_optimal_json(capsys):
    d = _json(capsys, "resnet18_small")
    assert set(d) >= HEADER and d["policy"] == "optimal"
    for x in d["layers"]:
        _check_layer(x)
    chosen = d["totals"]["chosen"]
    assert sum(x["time_us"] for x in d["layers"]) <= chosen["latency_us"] * (1 + REL)
    assert chosen["dla_layers"] == sum(1 for x in d["layers"] if x["device"] != "gpu")
    _check_device_totals(d["devices"])
    assert d["devices"]["gpu"]["latency_us"] == pytest.approx(d["totals"]["gpu-only"]["latency_us"], rel=REL)


def _check_parts(layers: list[dict], parts: list[dict], key: str, kind: str) -> None:
    """Contiguous parts covering every layer once; each part's time and energy = its layers' + hand-offs."""
    assert [p["index"] for p in parts] == list(range(len(parts)))
    assert sum(p["layers"] for p in parts) == len(layers)
    start = 0
    for p in parts:
        mine = layers[start:start + p["layers"]]
        start += p["layers"]
        assert mine[0]["name"] == p["first_layer"] and mine[-1]["name"] == p["last_layer"]
        assert all(x[key] == p["index"] and _side(x["device"]) == p["device"] for x in mine)
        assert p["layer_time_us"] == pytest.approx(sum(x["time_us"] for x in mine), rel=REL)
        assert p["layer_energy_uj"] == pytest.approx(sum(x["energy_uj"] for x in mine), rel=REL)
        assert p[f"{kind}_time_us"] == pytest.approx(p["layer_time_us"] + p["inbound_transfer_us"], rel=REL)
        assert p["dynamic_energy_uj"] == pytest.approx(p["layer_energy_uj"] + p["inbound_transfer_energy_uj"],
                                                       rel=REL)
    assert parts[0]["inbound_transfer_us"] == 0.0


@pytest.mark.parametrize("model", ["resnet18_small", "gelu"])
def test_pipeline_json(capsys, gelu, model):
    d = _json(capsys, gelu if model == "gelu" else model, "--policy", "pipeline", "--frames", "20")
    assert set(d) >= HEADER and d["policy"] == "pipeline"
    assert {"layers", "stages", "totals", "baselines", "devices"} <= set(d)
    for x in d["layers"]:
        _check_layer(x)
    stages, t = d["stages"], d["totals"]
    _check_parts(d["layers"], stages, "stage", "stage")
    assert len({s["device"] for s in stages}) == len(stages) <= 3
    times = [s["stage_time_us"] for s in stages]
    assert t["period_us"] == pytest.approx(max(times), rel=REL) and times[t["bottleneck_stage"]] == max(times)
    assert t["latency_us"] == pytest.approx(sum(times), rel=REL)
    assert t["makespan_us"] == pytest.approx(t["latency_us"] + (t["frames"] - 1) * t["period_us"], rel=REL)
    assert t["throughput_fps"] == pytest.approx(1e6 / t["period_us"], rel=REL)
    assert t["dynamic_energy_per_frame_uj"] == pytest.approx(sum(s["dynamic_energy_uj"] for s in stages), rel=REL)
    static_w = sum(d["static_power_w"].values())
    assert t["static_energy_per_frame_uj"] == pytest.approx(static_w * t["period_us"], rel=REL)
    assert t["energy_per_frame_uj"] == pytest.approx(
        t["dynamic_energy_per_frame_uj"] + t["static_energy_per_frame_uj"], rel=1e-6)
    assert t["average_power_w"] == pytest.approx(t["energy_per_frame_uj"] / t["period_us"], rel=REL)
    assert t["throughput_fps"] >= d["baselines"]["gpu-only"]["throughput_fps"] * (1 - REL)
    _check_device_totals(d["devices"])
    if model == "gelu":  # the GELU runs on the GPU, with its reason
        gelu_layer = next(x for x in d["layers"] if "Erf" in x["name"])
        assert gelu_layer["device"] == "gpu" and "only gpu can run it" in gelu_layer["reason"]
        assert "refused" in gelu_layer["devices"]["dla0"]


def test_pipeline_stage_times_match_the_plan():
    model = build_cost_model(load_network("resnet18_small"), "orin-agx-64gb", "MAXN", Precision.INT8)
    r = pipeline_report(model, 50)
    d = pipeline_json(r)
    assert len(r.plan.stages) >= 2  # hand-offs between stages are exercised
    for s, js in zip(r.plan.stages, d["stages"]):
        assert js["stage_time_us"] == pytest.approx(s.time * 1e3, rel=REL)
    assert d["totals"]["energy_per_frame_uj"] == pytest.approx(r.plan.energy_per_frame_mj * 1e3, rel=REL)
    assert sum(s["inbound_transfer_us"] for s in d["stages"]) > 0


def _check_concurrent(d: dict) -> None:
    assert HEADER - {"model"} <= set(d) and d["policy"] == "concurrent"
    assert {"models", "networks", "device_order", "totals", "baselines", "contention"} <= set(d)
    t = d["totals"]
    listed = sorted((o["network"], o["segment"]) for seq in d["device_order"].values() for o in seq)
    assert listed == sorted((n["index"], s["index"]) for n in d["networks"] for s in n["segments"])
    for dev, seq in d["device_order"].items():
        assert all(d["networks"][o["network"]]["segments"][o["segment"]]["device"] == dev for o in seq)
    for n in d["networks"]:
        for x in n["layers"]:
            _check_layer(x)
        _check_parts(n["layers"], n["segments"], "segment", "segment")
        # contention only slows: a network's latency is at least its segments' standalone chain
        assert n["latency_us"] >= sum(s["segment_time_us"] for s in n["segments"]) * (1 - REL)
        assert n["dynamic_energy_uj"] == pytest.approx(sum(s["dynamic_energy_uj"] for s in n["segments"]), rel=REL)
        _check_device_totals(n["devices"])
    assert t["makespan_us"] == pytest.approx(max(n["latency_us"] for n in d["networks"]), rel=REL)
    assert t["sum_latency_us"] == pytest.approx(sum(n["latency_us"] for n in d["networks"]), rel=REL)
    assert t["throughput_runs_per_s"] == pytest.approx(1e6 / t["makespan_us"], rel=REL)
    assert t["dynamic_energy_uj"] == pytest.approx(sum(n["dynamic_energy_uj"] for n in d["networks"]), rel=REL)
    assert t["static_energy_uj"] == pytest.approx(sum(d["static_power_w"].values()) * t["makespan_us"], rel=REL)
    assert t["energy_uj"] == pytest.approx(t["dynamic_energy_uj"] + t["static_energy_uj"], rel=REL)
    assert t["makespan_us"] <= d["baselines"]["naive"]["makespan_us"] * (1 + REL)


def test_concurrent_json(capsys, gelu):
    d = _json(capsys, "resnet18_small", gelu, "--policy", "concurrent")
    assert d["models"] == ["resnet18", "gelu_net"] and len(d["networks"]) == 2
    _check_concurrent(d)


def test_concurrent_segment_times_match_the_plan(gelu):
    models = [build_cost_model(load_network(m), "orin-agx-64gb", "MAXN", Precision.INT8)
              for m in ("resnet18_small", gelu)]
    r = concurrent_report(models)
    d = concurrent_json(r)
    _check_concurrent(d)
    for segs, n in zip(r.plan.segments, d["networks"]):
        for s, js in zip(segs, n["segments"]):
            assert js["segment_time_us"] == pytest.approx(s.work * 1e3, rel=REL)
            assert js["dram_share"] == pytest.approx(s.share)


@pytest.mark.parametrize("fallback", [False, True])
def test_replicate_json(capsys, gelu, fallback):
    d = _json(capsys, gelu, "--policy", "replicate", *(["--allow-gpu-fallback"] if fallback else []))
    assert set(d) >= HEADER and d["policy"] == "replicate" and d["gpu_fallback"] is fallback
    assert {"layers", "copies", "refused", "rows", "devices"} <= set(d)
    copies = d["copies"]
    assert set(copies) | set(d["refused"]) == {"gpu", "dla0", "dla1"}
    assert set(d["refused"]) == (set() if fallback else {"dla0", "dla1"})
    for x in d["layers"]:
        assert {"name", "kind", "copies"} <= set(x) and set(x["copies"]) == set(copies)
        for dev, c in x["copies"].items():
            assert c["device"] in (dev, "gpu", "host") and c["reason"] and c["time_us"] >= 0
    for dev, c in copies.items():
        mine = [x["copies"][dev] for x in d["layers"]]
        assert c["alone_us"] == pytest.approx(sum(m["time_us"] for m in mine) + c["handoff_us"], rel=REL)
        assert c["energy_uj"] == pytest.approx(sum(m["energy_uj"] for m in mine) + c["handoff_energy_uj"], rel=REL)
        assert c["alone_us"] == pytest.approx(c["device_us"] + c["gpu_us"] + c["wait_us"], rel=REL)
        assert c["fallback_layers"] == [x["name"] for x in d["layers"] if _side(x["copies"][dev]["device"]) != dev]
        if dev != "gpu":
            fb = sum(m["time_us"] for m in mine if _side(m["device"]) == "gpu")
            assert c["gpu_us"] + c["wait_us"] == pytest.approx(fb + c["handoff_us"], rel=REL)
    static = sum(d["static_power_w"].values())
    for row in d["rows"]:
        assert row["throughput_fps"] == pytest.approx(sum(row["per_device_fps"].values()), rel=REL)
        dyn = sum(copies[k]["energy_mj"] / 1e3 * f for k, f in row["per_device_fps"].items())
        assert row["power_w"] == pytest.approx(static + dyn, rel=REL)
        assert 0 < row["gpu_busy"] <= 1 + 1e-9
        if "gpu" in row["devices"]:
            assert row["gpu_busy"] == pytest.approx(1.0)
    _check_device_totals(d["devices"])
    assert d["devices"]["dla0"]["refused_layers"] > 0 and d["devices"]["dla0"]["fallback_device"] == "gpu"


def test_json_file_for_a_stream_policy_and_dla_layers_only_for_optimal(tmp_path, capsys):
    out = tmp_path / "pipe.json"
    assert main(["place", "resnet18_small", "--int8", "--policy", "pipeline", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Pipeline placement" in printed and f"wrote {out}" in printed
    assert json.loads(out.read_text())["policy"] == "pipeline"
    assert main(["place", "resnet18_small", "--int8", "--policy", "pipeline", "--dla-layers",
                 str(tmp_path / "x.csv")]) == 2
    assert "--policy optimal" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()


def test_stream_and_replicate_json_label_host_placed_layers(monkeypatch):
    """A layer without a GPU kernel that the DLA refuses runs on the host CPU on the GPU side: the
    pipeline and replicate documents call its device 'host' and carry the host time and hand-offs."""
    from backends.gpu.backend import GpuBackend
    from scheduler.dla_source import BackendDlaSource
    from scheduler.plan_placement import _RefusingDla
    from scheduler.platforms import get_platform
    from scheduler.studies.replicate import replicate_json, replicate_report
    from tests.scheduler_runtime.test_host_cost import _net

    real = GpuBackend.supports
    monkeypatch.setattr(GpuBackend, "supports",
                        lambda self, la, net: "no kernel in this test" if la.name == "pool" else real(self, la, net))
    orin = get_platform("orin-agx-64gb")
    dla = _RefusingDla(BackendDlaSource(orin, orin.mode()), {"pool": "refused in this test"})
    model = build_cost_model(_net(), orin, None, Precision.FP16, dla=dla)
    d = pipeline_json(pipeline_report(model, 10))
    for x in d["layers"]:
        _check_layer(x)
    _check_parts(d["layers"], d["stages"], "stage", "stage")
    pool = next(x for x in d["layers"] if x["name"] == "pool")
    assert pool["device"] == "host" and pool["host"]["handoffs"] == 2
    assert pool["time_us"] == pytest.approx(pool["host"]["host_us"] + pool["host"]["handoff_us"])
    rep = replicate_json(replicate_report(model, fallback=True))
    pool = next(x for x in rep["layers"] if x["name"] == "pool")
    assert {c["device"] for c in pool["copies"].values()} == {"host"} and "host" in pool
