"""Host-placed layers (no GPU kernel) are priced by the cost model: CPU time plus the hand-offs of
the tensors they exchange with the GPU/DLA side; the totals, the plan and the reports carry them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backends.gpu.backend import GpuBackend
from engine import builder as builder_mod
from engine import runtime
from engine.builder import Builder, BuilderConfig, serialize
from engine.cli.inspect import plan_summary
from engine.ir.dtypes import Precision
from engine.ir.layers import ConcatenationParams
from engine.ir.logger import Logger, Severity
from engine.ir.network import Network
from scheduler.cost import build_cost_model
from scheduler.costgraph import GPU
from scheduler.dla_source import BackendDlaSource
from scheduler.objectives import evaluate
from scheduler.plan_placement import _RefusingDla
from scheduler.platforms import get_platform
from scheduler.studies.place_json import report_json
from scheduler.studies.place_report import format_report, place

POOL_WHY = "FP32 pooling has no GPU kernel (the NHWC pooling kernel is fp16)"


def _net(hw: int = 10) -> Network:
    """conv -> relu -> {conv, max pool} -> concat -> conv -> sigmoid; the FP32 pool has no GPU kernel."""
    rng = np.random.default_rng(11)
    n = Network(f"host-pool-{hw}")
    x = n.add_input("image", (1, 3, hw, hw))
    a = n.add_convolution(x, rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
                          rng.standard_normal(8).astype(np.float32), padding=(1, 1), name="conv1")
    a = n.add_activation(a, "relu", name="relu1")
    b = n.add_convolution(a, rng.standard_normal((8, 8, 3, 3)).astype(np.float32), padding=(1, 1), name="conv2")
    c = n.add_pooling(a, "max", (3, 3), stride=(1, 1), padding=(1, 1), name="pool")
    cat = n.add_layer(ConcatenationParams(axis=1), [b, c], name="cat")
    y = n.add_convolution(cat.outputs[0], rng.standard_normal((4, 16, 1, 1)).astype(np.float32), name="head")
    n.mark_output(n.add_activation(y, "sigmoid", name="probs"))
    n.validate()
    return n


def _pool_bytes(hw: int, es: int = 4) -> int:
    return 8 * hw * hw * es  # the pool's input (relu1) and its output have this shape


def test_orin_prices_a_refused_layer_as_cpu_time_plus_shared_dram_handoffs():
    orin = get_platform("orin-agx-64gb")
    mode = orin.mode()
    model = build_cost_model(_net(), orin, precision=Precision.FP32)
    row = model.layer("pool")
    assert row.host is not None and row.device_label == "host" and row.host.reason == POOL_WHY
    assert model.layer("conv1").host is None and model.layer("conv1").device_label == GPU
    h = row.host
    nbytes = _pool_bytes(10)
    # one tensor in (relu1 from the GPU), one out (pool, read by the GPU's concat): flush + copy each
    per = orin.cpu.sync_s + 2 * nbytes / (mode.dram_gbps * 1e9)
    assert (h.handoffs, h.in_bytes, h.out_bytes) == (2, nbytes, nbytes)
    assert h.handoff_s == pytest.approx(2 * per, rel=1e-12)
    # 3x3 max pool: 9 comparisons per output, reads and writes 3200 B; memory bound on the stated CPU
    flops = 9 * 8 * 10 * 10
    assert h.time_s == pytest.approx(max(flops / orin.cpu.flops_per_s, 2 * nbytes / orin.cpu.bytes_per_s))
    node = model.graph.nodes[model.graph.index["pool"]]
    assert node.time[GPU] == pytest.approx((h.time_s + h.handoff_s) * 1e3)
    assert any("priced on the host CPU" in note for note in model.notes)


def test_handoff_time_grows_with_tensor_size():
    orin = get_platform("xavier-agx")
    small = build_cost_model(_net(10), orin, precision=Precision.FP32).layer("pool").host
    big = build_cost_model(_net(20), orin, precision=Precision.FP32).layer("pool").host
    fixed = 2 * orin.cpu.sync_s
    assert big.handoff_s > small.handoff_s
    assert big.in_bytes == 4 * small.in_bytes
    assert big.handoff_s - fixed == pytest.approx(4 * (small.handoff_s - fixed), rel=1e-9)


def test_totals_include_the_host_layer_and_its_handoffs():
    net = _net()
    priced = build_cost_model(net, "orin-agx-64gb", precision=Precision.FP32)
    modelled = build_cost_model(net, "orin-agx-64gb", precision=Precision.FP32, host_layers={})
    assert modelled.layer("pool").host is None
    on_gpu = [GPU] * len(priced.graph.nodes)
    delta = evaluate(priced.graph, on_gpu).latency - evaluate(modelled.graph, on_gpu).latency
    expected = priced.layer("pool").host.total_s - modelled.layer("pool").gpu_time_s
    assert delta == pytest.approx(expected * 1e3, rel=1e-9)


def test_host_platform_uses_the_measured_reference_time_and_pcie():
    host = get_platform("host")
    net = _net()
    times = {la.name: 1e-5 * (i + 1) for i, la in enumerate(net.layers)}
    model = build_cost_model(net, host, precision=Precision.FP32, gpu_times=lambda _n: times,
                             host_layers={"pool": POOL_WHY})
    h = model.layer("pool").host
    assert h.measured and h.time_s == times["pool"]
    per = host.cpu.sync_s + _pool_bytes(10) / host.cpu.link_bytes_per_s  # one copy over PCIe per tensor
    assert h.handoff_s == pytest.approx(2 * per, rel=1e-12)
    assert model.layer("conv1").gpu_time_s == times["conv1"]


def test_place_report_shows_the_host_device_time_and_handoffs(monkeypatch):
    """``hetrt place``: a layer the GPU backend refuses and the DLA may not run shows device host."""
    real = GpuBackend.supports
    monkeypatch.setattr(GpuBackend, "supports",
                        lambda self, la, net: "no kernel in this test" if la.name == "pool" else real(self, la, net))
    orin = get_platform("orin-agx-64gb")
    dla = _RefusingDla(BackendDlaSource(orin, orin.mode()), {"pool": "refused in this test"})
    report = place(_net(), "orin-agx-64gb", None, Precision.FP16, dla=dla)
    assert report.chosen.devices["pool"] == GPU
    line = next(x for x in format_report(report).splitlines() if x.startswith("pool "))
    assert " host " in line and "no GPU kernel (no kernel in this test): CPU" in line and "hand-off(s)" in line
    rec = next(r for r in report_json(report)["layers"] if r["name"] == "pool")
    assert rec["device"] == "host" and rec["host"]["handoffs"] == 2
    assert rec["time_us"] == pytest.approx(rec["host"]["host_us"] + rec["host"]["handoff_us"])


class _NoGpu:
    name = "gpu"

    def available(self):
        return False, "no GPU in this test"


@pytest.mark.parametrize("platform", ["orin-agx-64gb", "host"])
def test_built_plan_records_and_inspect_shows_the_priced_host_layer(monkeypatch, platform):
    monkeypatch.setattr(builder_mod, "_gpu_backend_status", lambda: (True, "a GPU for this test"))
    monkeypatch.setitem(runtime.BACKENDS, "gpu", _NoGpu)
    contents = Builder(Logger(Severity.ERROR)).build(_net(), BuilderConfig(optimize=False, platform=platform))
    rec = contents.placement["host_layers"]["pool"]
    assert rec["device"] == "host" and rec["reason"] == POOL_WHY and rec["handoffs"] == 2
    assert rec["in_bytes"] == rec["out_bytes"] == _pool_bytes(10) and rec["handoff_ms"] > 0 and rec["time_ms"] > 0
    assert rec["clock"] == ("measured" if platform == "host" else "estimated")
    assert set(contents.placement["host_layers"]) == {"pool"}
    engine = runtime.Runtime(Logger(Severity.ERROR)).deserialize(serialize(contents))
    parts = json.loads(engine.engine_information())["Partitions"]
    assert [p["Device"] for p in parts] == ["gpu", "host", "gpu"]
    assert parts[1]["HandoffUs"] == pytest.approx(rec["handoff_ms"] * 1e3)
    layers = {r["Name"]: r for r in json.loads(engine.layer_information("json"))["Layers"]}
    assert layers["pool"]["Device"] == "HOST" and layers["conv1"]["Device"] == "GPU"
    assert layers["pool"]["HostCost"]["TimeUs"] == pytest.approx(rec["time_ms"] * 1e3)
    assert "us of hand-offs" in plan_summary(engine)


def test_a_tensor_between_two_host_layers_is_not_handed_off():
    orin = get_platform("orin-agx-64gb")
    model = build_cost_model(_net(), orin, precision=Precision.FP32,
                             host_layers={"pool": POOL_WHY, "cat": "a second host layer in this test"})
    pool, cat = model.layer("pool").host, model.layer("cat").host
    assert (pool.handoffs, pool.in_bytes, pool.out_bytes) == (1, _pool_bytes(10), 0)  # its output stays on the host
    assert (cat.handoffs, cat.in_bytes, cat.out_bytes) == (2, _pool_bytes(10), 2 * _pool_bytes(10))  # conv2 in


def test_a_host_layer_that_cannot_be_priced_never_fails_the_build(monkeypatch):
    """Pricing is a report: when the measurement cannot run a host layer, the build warns and the
    plan simply has no price for it."""
    import scheduler.host_cost as host_cost

    def broken(*args, **kwargs):
        raise ValueError("no inputs this layer accepts")

    monkeypatch.setattr(builder_mod, "_gpu_backend_status", lambda: (True, "a GPU for this test"))
    monkeypatch.setitem(runtime.BACKENDS, "gpu", _NoGpu)
    monkeypatch.setattr(host_cost, "record_host_layers", broken)
    log = Logger(Severity.WARNING)
    contents = Builder(log).build(_net(), BuilderConfig(optimize=False, platform="host"))
    assert "host_layers" not in contents.placement
    assert any("host layers not priced" in m for _, m in log.records)
    assert [p["backend"] for p in contents.placement["partitions"]][1] == "reference"
