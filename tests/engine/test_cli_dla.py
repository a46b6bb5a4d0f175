"""``hetrt place --json / --dla-layers`` and ``hetrt inspect capability`` (engine.cli_dla)."""

from __future__ import annotations

import csv
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.cli import main


def test_place_json_has_layers_totals_and_device_totals(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert main(["place", "resnet18_small", "--int8", "--json", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    d = json.loads(out.read_text())
    assert d["precision"] == "int8" and d["units"] == {"time": "us", "energy": "uJ"}
    assert {"chosen", "gpu-only", "dla-first", "best-single-cut"} <= set(d["totals"])
    layers = d["layers"]
    assert layers and all({"name", "device", "time_us", "energy_uj", "reason"} <= set(x) for x in layers)
    chosen = sum(x["time_us"] for x in layers)
    assert chosen <= d["totals"]["chosen"]["latency_us"] + 1e-6  # layers plus hand-offs
    assert {"gpu", "dla0", "dla1"} <= set(d["devices"])
    gpu = d["devices"]["gpu"]
    assert gpu["latency_us"] == pytest.approx(d["totals"]["gpu-only"]["latency_us"])
    assert d["devices"]["dla0"]["refused_layers"] == 0


def test_place_json_to_stdout_is_json_only(capsys):
    assert main(["place", "resnet18_small", "--int8", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["model"] and d["layers"]


def test_place_dla_layers_csv(tmp_path):
    out = tmp_path / "layers.csv"
    assert main(["place", "resnet18_small", "--int8", "--dla-layers", str(out)]) == 0
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert rows and {"start_us", "end_us", "conv_busy_us", "rubik_busy_us", "bdma_busy_us", "sram_bytes",
                     "int8_conv", "sparse_2_4"} <= set(rows[0])
    ends = [float(r["end_us"]) for r in rows]
    starts = [float(r["start_us"]) for r in rows]
    assert all(s < e for s, e in zip(starts, ends)) and all(a <= b for a, b in zip(ends, starts[1:]))
    assert all(r["int8_conv"] == "1" for r in rows if float(r["conv_busy_us"]) > 0)
    assert all(0 <= float(r["mac_utilisation"]) <= 1 for r in rows)


def _gelu_model(path):
    """conv -> Erf-GELU -> conv: the GELU stays off the DLA with its reason."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 8, 1, 1)).astype(np.float32), "w2")
    c = {n: numpy_helper.from_array(np.array(v, np.float32), n) for n, v in
         (("sq2", 1.4142135), ("one", 1.0), ("half", 0.5))}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Div", ["a", "sq2"], ["b"]), helper.make_node("Erf", ["b"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["f"]), helper.make_node("Mul", ["a", "f"], ["g"]),
             helper.make_node("Mul", ["g", "half"], ["h"]), helper.make_node("Conv", ["h", "w2"], ["y"])]
    g = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
                          [w1, w2, *c.values()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)


def test_inspect_capability_lists_devices_and_reasons(tmp_path, capsys):
    path = tmp_path / "gelu.onnx"
    _gelu_model(path)
    assert main(["inspect", "capability", str(path), "--platform", "xavier-agx", "--fp16"]) == 0
    out = capsys.readouterr().out
    assert "capability of" in out and "DLA-capable:" in out
    refused = [line for line in out.splitlines() if "(dla0, dla1:" in line]
    assert refused and all(line.split()[-1] != "gpu,dla0,dla1" for line in refused)
    assert any("gpu,dla0,dla1" in line for line in out.splitlines())


def test_inspect_capability_needs_a_model(capsys):
    assert main(["inspect", "capability"]) == 2
    assert "MODEL" in capsys.readouterr().err


def test_run_dla_layers_reports_the_plan_loadables(tmp_path, capsys):
    plan = tmp_path / "m.plan"
    assert main(["build", "resnet18_small", "--platform", "orin-agx-64gb", "--fp16", "--use-dla-core", "0",
                 "--allow-gpu-fallback", "-o", str(plan)]) == 0
    out = tmp_path / "run.csv"
    assert main(["run", str(plan), "--iterations", "1", "--duration", "0", "--warmup", "0",
                 "--dla-layers", str(out)]) == 0
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert rows and all(r["int8_conv"] == "0" for r in rows)  # an FP16 plan
    assert float(rows[-1]["end_us"]) > float(rows[0]["start_us"])


def test_run_dla_layers_needs_a_dla_plan(tmp_path, capsys):
    plan = tmp_path / "g.plan"
    assert main(["build", "resnet18_small", "-o", str(plan)]) == 0
    assert main(["run", str(plan), "--iterations", "1", "--duration", "0", "--warmup", "0",
                 "--dla-layers", str(tmp_path / "x.csv")]) != 0
    assert "no DLA partition" in capsys.readouterr().err
