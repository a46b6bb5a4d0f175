"""``hetrt run MODEL --dla-layers`` builds and loads its plan once; ``hetrt eval`` deserializes each
plan once (in this process)."""

from __future__ import annotations

import csv

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from engine import plan as plan_format
from engine.builder import Builder, BuilderConfig, build_from_onnx
from engine.cli import main
from engine.ir.logger import Logger, Severity


def _count(monkeypatch, owner, name: str) -> list[int]:
    calls = [0]
    real = getattr(owner, name)

    def counted(*a, **k):
        calls[0] += 1
        return real(*a, **k)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_run_model_with_dla_layers_builds_and_loads_the_plan_once(tmp_path, monkeypatch):
    builds = _count(monkeypatch, Builder, "build")
    loads = _count(monkeypatch, plan_format, "deserialize_with_header")
    out = tmp_path / "run.csv"
    assert main(["run", "resnet18_small", "--platform", "orin-agx-64gb", "--fp16", "--use-dla-core", "0",
                 "--allow-gpu-fallback", "--iterations", "1", "--duration", "0", "--warmup", "0",
                 "--dla-layers", str(out)]) == 0
    assert builds[0] == 1 and loads[0] == 1
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert rows and float(rows[-1]["end_us"]) > float(rows[0]["start_us"])


def _classifier(seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((12, 5)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("Gemm", ["f", "w", "b"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 5])], [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_eval_deserializes_each_plan_once(tmp_path, monkeypatch):
    quiet = Logger(Severity.ERROR)
    paths = []
    for i in range(2):
        p = tmp_path / f"m{i}.plan"
        p.write_bytes(build_from_onnx(_classifier(i), BuilderConfig(), quiet))
        paths.append(str(p))
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(3)
    np.save(data / "x.npy", rng.standard_normal((10, 3, 2, 2)).astype(np.float32))
    np.save(tmp_path / "labels.npy", rng.integers(0, 5, 10))
    loads = _count(monkeypatch, plan_format, "deserialize_with_header")
    assert main(["eval", *paths, "--data", str(data), "--labels", str(tmp_path / "labels.npy"),
                 "--top-k", "1", "--worst", "0"]) == 0
    assert loads[0] == 2
