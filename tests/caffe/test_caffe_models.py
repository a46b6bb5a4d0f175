"""Caffe deploy networks (written in code) with caffemodels serialized through hetrt's Caffe schema
build and run through the runtime (parse → build → plan → run) exactly like the equivalent ONNX
models written independently with onnx.helper from the same weights: fp32, 1e-5 relative."""

from __future__ import annotations

import numpy as np
import pytest
import zoo

from engine.builder import BuilderConfig, build_from_onnx
from engine.caffe_parser import build_from_caffe, parse
from engine.ir.logger import Logger, Severity
from engine.runtime import Runtime

QUIET = Logger(Severity.ERROR)


def run_plan(data: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return Runtime(QUIET).deserialize(data).create_execution_context().execute(feeds)


def compare(net, out: str, tmp_path, rtol: float = 1e-5) -> None:
    proto = tmp_path / f"{net.name}.prototxt"
    proto.write_text(net.prototxt())
    weights = tmp_path / f"{net.name}.caffemodel"
    weights.write_bytes(net.caffemodel())
    x = np.random.default_rng(net.seed + 100).standard_normal(net.input_shape).astype(np.float32)
    got = run_plan(build_from_caffe(proto, weights, [out], BuilderConfig(), QUIET), {"data": x})
    want = run_plan(build_from_onnx(net.onnx([out]), BuilderConfig(), QUIET), {"data": x})
    assert list(got) == [out] and list(want) == [out]
    g, w = got[out], want[out]
    assert g.shape == w.shape == net.shapes[out]
    err = float(np.abs(g - w).max() / np.abs(w).max())
    assert err <= rtol, f"{net.name}: max error {err:.3g} x max|ref|"


@pytest.mark.parametrize("make", [zoo.lenet, zoo.alexnet, zoo.googlenet, zoo.resnet50],
                         ids=["lenet", "alexnet", "googlenet", "resnet50"])
def test_zoo_network_matches_onnx(make, tmp_path):
    net, out = make()
    compare(net, out, tmp_path)


@pytest.mark.parametrize("make, logits", [(zoo.lenet, "ip2"), (zoo.alexnet, "fc8"),
                                          (zoo.googlenet, "loss3/classifier"), (zoo.resnet50, "fc1000")],
                         ids=["lenet", "alexnet", "googlenet", "resnet50"])
def test_zoo_logits_match_onnx(make, logits, tmp_path):
    """The pre-softmax blob: random networks give near-uniform probabilities, logits show any error."""
    net, _ = make()
    compare(net, logits, tmp_path)


def test_layer_counts_and_names(tmp_path):
    net, out = zoo.googlenet()
    network = parse(net.prototxt(), net.caffemodel(), outputs=[out])
    assert network.inputs == ["data"] and network.outputs == ["prob"]
    assert network.tensors["prob"].shape == (1, 250)
    assert sum(1 for la in network.layers if la.kind.value == "concatenation") == 9
