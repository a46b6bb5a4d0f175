"""Precision by timing without a GPU: the minimum-cut choice against exhaustive search, the energy a
network gives (kernel times, conversions between precisions, squeeze-excitation bridges), and the
builder's rebuild with the chosen layers FP16, fed stand-in timings."""

from __future__ import annotations

import itertools

import int8_nets as nets
import numpy as np
import pytest

from backends.gpu import precision_timing as pt
from backends.gpu import tactics
from backends.gpu.precision_cut import LabelProblem, solve
from engine.ir import int8_annotation as annotation
from engine.ir.dtypes import Precision
from engine.ir.errors import BuildError
from engine.ir.layers import ElementWiseOp
from engine.plan import deserialize


def _brute_force(problem: LabelProblem) -> float:
    names = sorted(set(problem.unary) | {n for p in problem.pairs for n in p})
    return min(problem.energy({n for n, bit in zip(names, bits, strict=True) if bit})
               for bits in itertools.product((0, 1), repeat=len(names)))


@pytest.mark.parametrize("seed", range(40))
def test_the_cut_finds_the_least_energy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 10))
    problem = LabelProblem()
    for i in range(n):
        problem.add_unary(f"l{i}", float(rng.uniform(0, 2)), float(rng.uniform(0, 2)))
    for a, b in itertools.combinations(range(n), 2):
        if rng.random() < 0.4:
            problem.add_pair(f"l{a}", f"l{b}", float(rng.uniform(0, 1.5)))
    fp16 = solve(problem)
    assert problem.energy(fp16) == pytest.approx(_brute_force(problem), abs=1e-5)


def test_a_chain_flips_only_together_and_ties_stay_int8():
    problem = LabelProblem()
    problem.add_unary("expand", 1.0, 0.7)
    problem.add_unary("dw", 1.0, 0.7)
    problem.add_unary("project", 0.1, 0.5)
    problem.add_pair("expand", "dw", 0.5)  # the big tensor between them
    problem.add_pair("dw", "project", 0.2)
    # either alone loses (0.3 saved, 0.5 or 0.7 paid); both together win 0.6 - 0.2
    assert solve(problem) == {"expand", "dw"}
    assert solve(LabelProblem({"a": (1.0, 1.0)})) == set()
    assert solve(LabelProblem()) == set()


def _conversion(elements: int) -> float:
    return 1e-3 + 1e-6 * elements


def test_the_network_energy_counts_each_conversion_once_per_edge(rng):
    net, _ = nets.mobile_block_net(rng)  # x -> expand -> dw -> project (+ x) -> dw5 (float out)
    names = ["expand", "dw", "project", "dw5"]
    t8 = {"expand": 1.0, "dw": 2.0, "project": 3.0, "dw5": 4.0}
    t16 = {n: 10 * v for n, v in t8.items()}
    problem = pt.precision_problem(net, set(names), set(names), t8, t16, _conversion)

    def size(t: str) -> int:
        return int(np.prod(net.tensors[t].shape))

    e, d, p = (net.layer(n).outputs[0] for n in ("expand", "dw", "project"))
    # the network input and outputs convert in either precision: only the kernels are unary terms
    assert problem.unary == {n: (t8[n], t16[n]) for n in names}
    assert problem.pairs == pytest.approx({("dw", "expand"): _conversion(size(e)),
                                           ("dw", "project"): _conversion(size(d)),
                                           ("dw5", "project"): _conversion(size(p))})


def test_fixed_neighbours_count_towards_the_candidate(rng):
    net, _ = nets.classifier_net(rng)  # conv8 -> INT8 global pool -> flatten -> INT8 FC
    conv = next(la for la in net if la.kind.name == "CONVOLUTION")
    t = conv.outputs[0]
    problem = pt.precision_problem(net, {la.name for la in net}, {conv.name}, {conv.name: 1.0}, {conv.name: 2.0},
                                   _conversion)
    # its INT8 reader (the pool, no candidate) needs int8: a quantize when the conv runs FP16
    assert problem.unary[conv.name] == pytest.approx((1.0, 2.0 + _conversion(int(np.prod(net.tensors[t].shape)))))


def test_a_squeeze_excitation_product_between_int8_layers_converts_nothing(rng):
    net = nets.se_net(rng, ElementWiseOp.PROD, gate_first=False)
    convs = [la.name for la in net if la.precision is Precision.INT8 and la.kind.name == "CONVOLUTION"]
    assert len(convs) >= 2
    prod = next(la for la in net if la.kind.name == "ELEMENTWISE")
    before = net.producer(prod.inputs[0]).name
    after = net.consumers()[prod.outputs[0]][0].name
    t = {n: 1.0 for n in convs}
    problem = pt.precision_problem(net, {la.name for la in net}, set(convs), t, t, _conversion)
    key = tuple(sorted((before, after)))
    assert key in problem.pairs, problem.pairs  # the product is passed through, not a float layer
    assert problem.pairs[key] == pytest.approx(_conversion(int(np.prod(net.tensors[prod.outputs[0]].shape))))


@pytest.fixture
def stand_in_gpu(monkeypatch):
    """A build that believes a GPU runs its partitions, with stand-in timings: every FP16 form of a
    layer 0.2 ms, every INT8 form 1.0 ms except the projection with its residual (0.1 ms INT8,
    5.0 ms FP16); conversions 1 us + 1e-8 ms an element."""
    from engine import builder as builder_mod

    def fake_time_tactics(net, names, cache, level, log, sources=None, ops=None):
        ms = {}
        for la in net:
            if la.name in names and la.kind.name == "CONVOLUTION" and la.params.groups == 1:
                int8 = la.precision is Precision.INT8
                ms[la.name] = (0.1 if int8 else 5.0) if la.params.residual else (1.0 if int8 else 0.2)
        return {n: "fake" for n in ms}, ms

    def fake_depthwise(ops8, ops16, cache, log):
        dws = [op.label for op in ops8 if op.kind == "dwconv8"]
        return {n: 1.0 for n in dws}, {n: 0.2 for n in dws}

    monkeypatch.setattr(builder_mod, "_gpu_backend_status", lambda: (True, ""))
    monkeypatch.setattr(tactics.TimingCache, "key", lambda self, sig: sig)
    monkeypatch.setattr(tactics, "select_tactics", lambda *a, **k: {})
    monkeypatch.setattr(pt, "time_tactics", fake_time_tactics)
    monkeypatch.setattr(pt, "_depthwise_times", fake_depthwise)
    monkeypatch.setattr(pt, "time_conversion", lambda n: 1e-3 + 1e-8 * n)


def test_the_builder_rebuilds_the_faster_layers_fp16_as_if_pinned(rng, stand_in_gpu, tmp_path):
    from backends import reference
    from engine.builder import BuilderConfig, build_from_onnx
    from engine.ir.logger import Logger, Severity
    from engine.quantization import make_calibrator

    model, calib = nets.mobile_block_onnx(rng)
    log = Logger(Severity.ERROR)
    cache = str(tmp_path / "timing.json")
    data = build_from_onnx(model, BuilderConfig(batch=2, int8=True, fp16=True, timing_cache=cache,
                                                calibrator=make_calibrator("minmax", calib)), log)
    timed = deserialize(data)
    precisions = {la.name: la.precision for la in timed.network if la.kind.name == "CONVOLUTION"}
    project = next(la.name for la in timed.network if la.kind.name == "CONVOLUTION" and la.params.residual)
    fp16 = {n for n, p in precisions.items() if p is Precision.FP16}
    assert len(precisions) == 3 and fp16 == set(precisions) - {project}, precisions
    assert precisions[project] is Precision.INT8
    # recorded: the timings behind the choice, and the pins a refit or a rebuild assigns again
    assert timed.metadata["precision_by_timing"] == {n: {"int8_ms": 1.0, "fp16_ms": 0.2} for n in fp16}
    assert timed.build_config["layer_precisions"] == {n: "fp16" for n in fp16}
    from engine.cli.inspect import plan_summary
    from engine.runtime import Runtime

    summary = plan_summary(Runtime(log).deserialize(data))
    assert "2 INT8-capable layer(s) built FP16 by timing (their kernels 1.600 ms faster" in summary, summary
    assert any(m.startswith("Precision by timing: 2 of 3 INT8 convolutions built FP16")
               for m in log.messages(Severity.INFO)), log.messages(Severity.INFO)

    pinned = deserialize(build_from_onnx(model, BuilderConfig(
        batch=2, int8=True, fp16=True, precision_by_timing=False, layer_precisions={n: Precision.FP16 for n in fp16},
        calibrator=make_calibrator("minmax", calib)), log))
    assert [la.name for la in pinned.network] == [la.name for la in timed.network]
    for a, b in zip(timed.network, pinned.network, strict=True):
        assert a.precision is b.precision, a.name
        assert sorted(a.weights) == sorted(b.weights), a.name
        for k in a.weights:
            assert a.weights[k].dtype == b.weights[k].dtype and np.array_equal(a.weights[k], b.weights[k]), (a.name, k)
    for n in fp16:
        assert timed.network.layer(n).weights["kernel"].dtype == np.float16
    feeds = {"x": rng.normal(size=calib[0]["x"].shape).astype(np.float32)}
    got, want = reference.execute(timed.network, feeds)["y"], reference.execute(pinned.network, feeds)["y"]
    assert np.abs(want).max() > 0 and np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_without_fp16_pinned_or_switched_off_nothing_is_timed(rng, stand_in_gpu, monkeypatch):
    from engine.builder import BuilderConfig, build_from_onnx
    from engine.ir.logger import Logger, Severity
    from engine.quantization import make_calibrator

    calls = []
    monkeypatch.setattr(pt, "choose_fp16_layers", lambda *a, **k: calls.append(a) or {})
    model, calib = nets.mobile_block_onnx(rng)
    log = Logger(Severity.ERROR)
    for config in (BuilderConfig(batch=2, int8=True), BuilderConfig(batch=2, int8=True, fp16=True,
                                                                    precision_by_timing=False),
                   BuilderConfig(batch=2, int8=True, fp16=True, optimization_level=0)):
        config.calibrator = make_calibrator("minmax", calib)
        plan = deserialize(build_from_onnx(model, config, log))
        assert all(la.precision is not Precision.FP16 for la in plan.network if la.kind.name == "CONVOLUTION")
    assert calls == []


def test_a_pinned_layer_is_never_switched(rng, stand_in_gpu):
    from engine.builder import BuilderConfig, build_from_onnx
    from engine.ir.logger import Logger, Severity
    from engine.quantization import make_calibrator

    model, calib = nets.mobile_block_onnx(rng)
    log = Logger(Severity.ERROR)
    first = deserialize(build_from_onnx(model, BuilderConfig(batch=2, int8=True, fp16=True,
                                                             calibrator=make_calibrator("minmax", calib)), log))
    expand = next(la.name for la in first.network if la.kind.name == "CONVOLUTION" and la.params.groups == 1
                  and not la.params.residual)
    plan = deserialize(build_from_onnx(model, BuilderConfig(batch=2, int8=True, fp16=True, layer_precisions={
        expand: Precision.INT8}, calibrator=make_calibrator("minmax", calib)), log))
    assert plan.network.layer(expand).precision is Precision.INT8
    assert annotation.read(plan.network.layer(expand)).output_scale > 0  # assigned its scales as unpinned
    with pytest.raises(BuildError, match="pinned to int8 but INT8 is not enabled"):
        build_from_onnx(model, BuilderConfig(batch=2, fp16=True, layer_precisions={expand: Precision.INT8}), log)


def test_a_refit_keeps_the_timed_precisions(rng, stand_in_gpu):
    from engine.builder import BuilderConfig, build_from_onnx
    from engine.ir.logger import Logger, Severity
    from engine.quantization import make_calibrator
    from engine.refit import Refitter

    model, calib = nets.mobile_block_onnx(rng)
    data = build_from_onnx(model, BuilderConfig(batch=2, int8=True, fp16=True, refittable=True,
                                                calibrator=make_calibrator("minmax", calib)), Logger(Severity.ERROR))
    before = {la.name: la.precision for la in deserialize(data).network}
    refitter = Refitter(data)
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    inits["w1"] = inits["w1"] * np.float32(0.9)
    for name, value in inits.items():  # the clip bounds tie every layer's weights together
        refitter.set_named_weights(name, value)
    assert refitter.refit()  # the replay assigns the timed FP16 layers again, so the graph matches
    after = deserialize(refitter.serialize()).network
    assert {la.name: la.precision for la in after} == before
    assert Precision.FP16 in before.values() and Precision.INT8 in before.values()


def test_only_int8_layers_are_candidates(rng, monkeypatch):
    from engine.ir.logger import Logger, Severity

    net8, _ = nets.mobile_block_net(rng)
    net8.layer("dw5").precision = Precision.FP16  # an FP16 layer of the INT8 build: timed, never a candidate
    names = [la.name for la in net8]
    monkeypatch.setattr(tactics.TimingCache, "key", lambda self, sig: sig)
    monkeypatch.setattr(pt, "time_tactics", lambda net, *a, **k: ({}, {"expand": 1.0, "project": 1.0}))
    monkeypatch.setattr(pt, "_depthwise_times", lambda *a: ({"dw": 1.0, "dw5": 1.0}, {"dw": 0.1, "dw5": 0.01}))
    monkeypatch.setattr(pt, "time_conversion", lambda n: 1e-6 * n)
    chosen = pt.choose_fp16_layers(net8, net8, names, tactics.TimingCache(None), 3, Logger(Severity.ERROR))
    assert "dw5" not in chosen and chosen["dw"] == (1.0, 0.1)
