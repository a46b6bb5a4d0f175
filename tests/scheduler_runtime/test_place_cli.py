import json

import pytest

from engine.cli import main


def test_place_prints_the_table_and_totals(capsys):
    rc = main(["place", "resnet18_small", "--platform", "orin-agx-64gb", "--power-mode", "30W", "--objective",
               "edp", "--fp16"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "on orin-agx-64gb at 30W, fp16, objective edp" in out
    for policy in ("chosen (optimal[", "gpu-only", "dla-first", "best-single-cut"):
        assert policy in out
    assert "clock: every number is on the simulated target clock" in out and "soc " in out
    table = out.split("reason\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(table) == 24 and all(row.split("  ")[-1].strip() for row in table)  # a reason on every layer
    assert "simulated timeline" in out


@pytest.mark.parametrize("argv, message", [
    (["--platform", "orin-nano", "--fp16"], "unknown platform 'orin-nano'"),
    (["--power-mode", "7W", "--fp16"], "no power mode '7W'"),
    (["--deadline", "0.001", "--fp16"], "deadline 0.001 ms is below the fastest placement"),
    ([], "the DLA runs FP16 and INT8 only"),
])
def test_bad_requests_are_clear_errors(capsys, argv, message):
    rc = main(["place", "resnet18_small", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err


def test_sweep_writes_json_plots_and_trace(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rc = main(["sweep", "resnet18_small", "--platform", "orin-agx-64gb", "--power-modes", "15W,30W", "--fp16",
               "--lambdas", "0.1,1", "--workers", "2", "-o", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "sweep.json").read_text())
    assert {p["power_mode"] for p in res["points"]} == {"15W", "30W"}
    front = res["front"]
    for p in res["points"]:
        assert any(q["latency_ms"] <= p["latency_ms"] * (1 + 1e-9) and q["energy_mj"] <= p["energy_mj"] * (1 + 1e-9)
                   for q in front)
    for f in ("pareto.png", "placement.png", "gantt.png"):
        assert (tmp_path / f).stat().st_size > 1000
    trace = json.loads((tmp_path / "trace.json").read_text())
    assert any(e.get("ph") == "X" for e in trace["traceEvents"])
