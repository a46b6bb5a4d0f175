import time

import numpy as np
import pytest

from engine.ir.dtypes import Precision
from engine.ir.layers import ConvolutionParams, NormalizationParams
from engine.ir.network import Network
from engine.model_loading import load_network
from scheduler.cost import FP32_ON_DLA, build_cost_model, is_pseudo
from scheduler.gpu_model import gpu_layer_cost
from scheduler.layer_work import layer_work
from scheduler.platforms import get_platform


def _conv(net, x, k, name):
    c = net.tensors[x].shape[1]
    w = np.zeros((k, c, 3, 3), np.float32)
    return net.add_layer(ConvolutionParams(k, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)), [x], {"kernel": w},
                         name=name).outputs[0]


def small_net():
    net = Network("small")
    net.add_input("x", (1, 16, 32, 32))
    a = _conv(net, "x", 32, "conv_a")
    n = net.add_layer(NormalizationParams(axes=(2, 3), epsilon=1e-5), [a],
                      {"scale": np.ones(32, np.float32), "bias": np.zeros(32, np.float32)}, name="norm")
    b = _conv(net, n.outputs[0], 32, "conv_b")
    net.mark_output(b)
    return net


def test_supported_and_unsupported_layers_carry_costs_or_reasons():
    m = build_cost_model(small_net(), "orin-agx-64gb", "30W", Precision.FP16)
    nodes = {n.name: n for n in m.graph.nodes}
    assert nodes["conv_a"].supports("dla0") and nodes["conv_a"].supports("dla1")
    assert m.layer("conv_a").dla_time_s > 0
    assert not nodes["norm"].supports("dla0")
    assert nodes["norm"].why_not("dla0")  # an actionable reason, repeated by the report
    assert m.layer("norm").dla_reason == nodes["norm"].why_not("dla0")
    assert all(n.supports("gpu") for n in m.graph.nodes)
    assert [n.name for n in m.graph.nodes if is_pseudo(n.name)] == ["<in:x>", f"<out:{m.layers[-1].name}>"]


def test_fp32_never_runs_on_the_dla():
    m = build_cost_model(small_net(), "orin-agx-64gb", "30W", Precision.FP32)
    for n in m.graph.nodes:
        if not is_pseudo(n.name):
            assert not n.supports("dla0") and n.why_not("dla0") == FP32_ON_DLA


def test_gpu_cost_is_monotone_in_flops():
    p = get_platform("orin-agx-64gb")
    mode = p.mode("30W")
    times = []
    for k in (16, 64, 256, 1024):
        net = Network("k")
        net.add_input("x", (1, 64, 56, 56))
        _conv(net, "x", k, "c")
        work = layer_work(net.layers[0], net, Precision.FP16)
        times.append(gpu_layer_cost(work, p, mode, Precision.FP16))
    assert all(a.time_s < b.time_s and a.energy_j < b.energy_j for a, b in zip(times, times[1:]))
    assert times[-1].bound == "compute"


def test_lower_power_mode_is_slower_on_the_gpu():
    net = small_net()
    t = {m: build_cost_model(net, "orin-agx-64gb", m, "fp16").layer("conv_a").gpu_time_s for m in ("15W", "MAXN")}
    assert t["15W"] > t["MAXN"]


def test_resnet50_cost_graph_is_fast():
    net = load_network("resnet50")
    t0 = time.perf_counter()
    m = build_cost_model(net, "orin-agx-64gb", "30W", Precision.FP16)
    assert time.perf_counter() - t0 < 1.0
    assert len(m.graph.nodes) == len(net.layers) + 2
    assert sum(1 for r in m.layers if r.dla_time_s is not None) > 50


def test_tensor_bytes_use_the_dla_padded_format():
    m = build_cost_model(small_net(), "orin-agx-64gb", "30W", Precision.INT8)
    assert m.tensor_bytes["x"] == 1 * 32 * 32 * 32  # 16 channels padded to 32 for kCHW32


def test_int8_costing_says_scales_are_not_needed():
    m = build_cost_model(small_net(), "orin-agx-64gb", "30W", Precision.INT8)
    assert any("shapes only" in n for n in m.notes)


@pytest.mark.parametrize("mode", ["MAXN", "15W"])
def test_timeline_of_a_chain_equals_the_sequential_model(mode):
    from scheduler.objectives import evaluate
    from scheduler.placement import dla_first
    from scheduler.timeline import simulate_timeline

    m = build_cost_model(small_net(), "orin-agx-64gb", mode, Precision.FP16)
    p = dla_first(m.graph)
    tl = simulate_timeline(m, p.devices, frames=1)
    ev = evaluate(m.graph, p.devices)
    assert tl.makespan_s * 1e3 == pytest.approx(ev.latency, rel=1e-9)
    assert tl.energy_per_frame_j * 1e3 == pytest.approx(ev.energy, rel=1e-9)
