"""FP16 builds: shape-only layers keep their inputs' half precision (a transpose between two FP16
layers stays half, so the product after it is an FP16 product), and no more than that."""

from __future__ import annotations

import numpy as np

import engine.builder as builder_module
from engine.builder import Builder, BuilderConfig
from engine.ir.dtypes import DataType, Precision
from engine.ir.layers import ConcatenationParams, MatrixMultiplyParams, ShuffleParams
from engine.ir.logger import Logger, Severity
from engine.ir.memory import storage_dtypes
from engine.ir.network import Network
from engine.runtime import Runtime

QUIET = Logger(Severity.ERROR)


def _net() -> Network:
    net = Network("shape_only")
    q = net.add_activation(net.add_input("q", (2, 3, 5, 4)), "tanh", name="tq")
    k = net.add_activation(net.add_input("k", (2, 3, 5, 4)), "tanh", name="tk")
    raw = net.add_input("raw", (2, 3, 4, 5))
    kt = net.tensor(net.add_layer(ShuffleParams(first_perm=(0, 1, 3, 2)), [k], name="kt").outputs[0])
    both = net.tensor(net.add_layer(ConcatenationParams(axis=3), [kt, raw], name="mixed").outputs[0])
    rawt = net.tensor(net.add_layer(ShuffleParams(first_perm=(0, 1, 3, 2)), [raw], name="rawt").outputs[0])
    s = net.tensor(net.add_layer(MatrixMultiplyParams(), [q, kt], name="qk").outputs[0])
    net.mark_output(s)
    net.mark_output(both)
    net.mark_output(rawt)
    net.validate()
    return net


def _built(monkeypatch, config: BuilderConfig) -> tuple[Network, bytes]:
    seen = {}
    place = builder_module.Builder._place

    def spy(self, network, cfg, *args, **kwargs):
        seen["net"] = network
        return place(self, network, cfg, *args, **kwargs)

    monkeypatch.setattr(builder_module.Builder, "_place", spy)
    plan = Builder(QUIET).build_serialized_network(_net(), config)
    return seen["net"], plan


def test_fp16_build_keeps_half_through_a_transpose_only(monkeypatch):
    net, _ = _built(monkeypatch, BuilderConfig(fp16=True))
    prec = {layer.name: layer.precision for layer in net.layers}
    assert prec["kt"] is Precision.FP16  # between two FP16 layers
    assert prec["mixed"] is None and prec["rawt"] is None  # a float32 network input reaches them
    dt = storage_dtypes(net)
    kt_out = net.layer("kt").outputs[0]
    assert dt[kt_out] is DataType.HALF and dt[net.layer("rawt").outputs[0]] is DataType.FLOAT


def test_fp32_build_leaves_shape_only_layers_alone(monkeypatch):
    net, _ = _built(monkeypatch, BuilderConfig())
    assert all(layer.precision is None for layer in net.layers if layer.name in ("kt", "mixed", "rawt"))


def test_fp16_plan_with_a_half_transpose_matches_float64(monkeypatch):
    _, plan = _built(monkeypatch, BuilderConfig(fp16=True))
    rng = np.random.default_rng(11)
    feeds = {"q": rng.standard_normal((2, 3, 5, 4)).astype(np.float32),
             "k": rng.standard_normal((2, 3, 5, 4)).astype(np.float32),
             "raw": rng.standard_normal((2, 3, 4, 5)).astype(np.float32)}
    out = Runtime(QUIET).deserialize(plan).create_execution_context().execute(feeds)
    q, k = (np.tanh(feeds[n].astype(np.float64)) for n in "qk")
    want = q @ np.swapaxes(k, -1, -2)
    got = np.asarray(next(v for v in out.values() if v.shape == (2, 3, 5, 5)), dtype=np.float64)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-2
