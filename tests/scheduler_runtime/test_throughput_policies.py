"""Pipeline and concurrent policies through ``hetrt place`` and the builder."""

import re

import numpy as np
import pytest
from scheduler_runtime_plans import QUIET

from engine.builder import Builder, BuilderConfig
from engine.cli import main
from engine.ir.errors import BuildError
from engine.models import build_model
from engine.onnx_parser import parse
from engine.runtime import Runtime

ORIN30 = ["--platform", "orin-agx-64gb", "--power-mode", "30W", "--fp16"]


def _number(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    assert m, pattern
    return float(m.group(1))


def test_place_pipeline_prints_stages_and_throughput(capsys):
    assert main(["place", "resnet18_small", *ORIN30, "--policy", "pipeline", "--frames", "50"]) == 0
    out = capsys.readouterr().out
    assert "Pipeline placement of 'resnet18'" in out and "50 frames" in out
    rows = re.findall(r"^\s+\d+\s+(gpu|dla0|dla1)\s+(\d+)\s", out, re.M)
    assert rows and sum(int(n) for _, n in rows) == 24  # every layer in exactly one stage
    assert len({d for d, _ in rows}) == len(rows)  # one stage per device
    fps = _number(r"throughput ([\d.]+) fps", out)
    gpu = _number(r"vs gpu-only ([\d.]+) fps", out)
    assert fps >= gpu * (1 - 1e-9)  # gpu-only is one of the candidate pipelines


def test_place_concurrent_prints_switch_points_and_baselines(capsys):
    assert main(["place", "resnet18_small", "mobilenet_v2", *ORIN30, "--policy", "concurrent"]) == 0
    out = capsys.readouterr().out
    assert "contention model:" in out and "thresholds" in out
    assert re.search(r"^\s+resnet18\s+24\s+", out, re.M)
    makespan = _number(r"makespan ([\d.]+) ms", out)
    serial = _number(r"gpu-only serial ([\d.]+) ms", out)
    naive = _number(r"best naive baseline ([\d.]+) ms", out)
    assert makespan <= naive * (1 + 1e-9) and makespan <= serial * (1 + 1e-9)


@pytest.mark.parametrize("argv, message", [
    (["resnet18_small", *ORIN30, "--policy", "concurrent"], "places 2 or 3 models at once, got 1"),
    (["resnet18_small", "resnet18_small", *ORIN30], "several models need --policy concurrent"),
    (["resnet18_small", *ORIN30, "--policy", "pipeline", "--frames", "0"], "--frames must be >= 1"),
    (["resnet18_small", "--policy", "pipeline"], "the DLA runs FP16 and INT8 only"),
    (["resnet18_small", "resnet18_small", "--platform", "orin-nano", "--fp16", "--policy", "concurrent"],
     "unknown platform 'orin-nano'"),
])
def test_bad_throughput_requests_are_clear_errors(capsys, argv, message):
    assert main(["place", *argv]) == 2
    assert message in capsys.readouterr().err


def test_builder_pipeline_records_stages_and_the_executor_pipelines_frames(feeds, gpu_plan):
    cfg = BuilderConfig(fp16=True, platform="orin-agx-64gb", power_mode="30W", placement_policy="pipeline")
    data = Builder(QUIET).build_serialized_network(parse(build_model("resnet18_small")), cfg)
    engine = Runtime(QUIET, platform="orin-agx-64gb").deserialize(data)
    p = engine.placement
    assert p["policy"] == "pipeline" and p["stages"]
    staged = [name for st in p["stages"] for name in st["layers"]]
    assert staged == [la.name for la in engine.network.layers]
    for st in p["stages"]:
        assert {p["devices"][n] for n in st["layers"]} == {st["device"]}
    assert p["objective_values"]["period_ms"] == max(st["time_ms"] for st in p["stages"])
    ctx = engine.create_execution_context()
    outs = ctx.execute_frames(feeds)
    ref = Runtime(QUIET).deserialize(gpu_plan).create_execution_context()
    for f, out in zip(feeds, outs):
        want = ref.execute(f)
        for k in want:
            np.testing.assert_allclose(out[k], want[k], atol=0.05 * np.abs(want[k]).max())
    assert {e.frame for e in ctx.last_events} == set(range(len(feeds)))


def test_builder_refuses_concurrent():
    with pytest.raises(BuildError, match="several networks at once"):
        BuilderConfig(fp16=True, platform="orin-agx-64gb", placement_policy="concurrent").validate()
