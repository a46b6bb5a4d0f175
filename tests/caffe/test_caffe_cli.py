"""``hetrt build MODEL.prototxt [--weights FILE.caffemodel] --output BLOB -o PLAN`` and its errors."""

from __future__ import annotations

import numpy as np
from zoo import lenet

from engine.cli import main
from engine.runtime import Runtime


def test_build_caffe_model_with_weights_and_outputs(tmp_path):
    net, out = lenet()
    proto, weights, plan = tmp_path / "lenet.prototxt", tmp_path / "lenet.caffemodel", tmp_path / "lenet.plan"
    proto.write_text(net.prototxt())
    weights.write_bytes(net.caffemodel())
    assert main(["build", str(proto), "--weights", str(weights), "--output", out, "--output", "ip1",
                 "-o", str(plan)]) == 0
    engine = Runtime().deserialize(plan.read_bytes())
    assert [t.name for t in engine.io_tensors if t.mode == "output"] == ["prob", "ip1"]
    layer = engine.network.layer("conv1")
    np.testing.assert_array_equal(layer.weights["kernel"], net.blobs["conv1"][1][0])


def test_build_caffe_model_with_random_weights(tmp_path, capsys):
    net, _ = lenet()
    proto = tmp_path / "lenet.prototxt"
    proto.write_text(net.prototxt())
    plan = tmp_path / "p.plan"
    assert main(["build", str(proto), "-o", str(plan), "--fp16"]) == 0
    assert "random seeded weights" in capsys.readouterr().out
    assert [t.name for t in Runtime().deserialize(plan.read_bytes()).io_tensors if t.mode == "output"] == ["prob"]


def test_caffe_options_are_refused_for_onnx_models(tmp_path, capsys):
    assert main(["build", "resnet18_small", "--output", "prob", "-o", str(tmp_path / "x.plan")]) == 2
    assert "apply to Caffe models" in capsys.readouterr().err


def test_unknown_blob_is_an_error(tmp_path, capsys):
    net, _ = lenet()
    proto = tmp_path / "lenet.prototxt"
    proto.write_text(net.prototxt())
    assert main(["build", str(proto), "--output", "nope", "-o", str(tmp_path / "x.plan")]) == 2
    assert "output blob 'nope'" in capsys.readouterr().err


def test_compare_refuses_caffe_models_clearly(tmp_path, capsys):
    net, _ = lenet()
    proto = tmp_path / "lenet.prototxt"
    proto.write_text(net.prototxt())
    assert main(["compare", str(proto)]) == 2
    assert "is a Caffe model" in capsys.readouterr().err


def test_place_takes_a_caffe_model(tmp_path, capsys):
    net, _ = lenet()
    proto = tmp_path / "lenet.prototxt"
    proto.write_text(net.prototxt())
    assert main(["place", str(proto), "--platform", "orin-agx-64gb", "--fp16"]) == 0
    out = capsys.readouterr().out
    assert "'LeNet'" in out and "conv1" in out
