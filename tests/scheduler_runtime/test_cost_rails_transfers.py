"""The cost model's SoC rail, per-tensor hand-off prices and silent pseudo nodes."""

import numpy as np

from engine.ir.dtypes import Precision
from engine.ir.layers import ConvolutionParams
from engine.ir.network import Network
from scheduler.cost import build_cost_model, transition_cost_s
from scheduler.placement import dla_first
from scheduler.platforms import get_platform


def _net(channels: int) -> Network:
    net = Network("rgb")
    net.add_input("x", (1, channels, 32, 32))
    w = np.zeros((16, channels, 3, 3), np.float32)
    y = net.add_layer(ConvolutionParams(16, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)), ["x"], {"kernel": w},
                      name="conv").outputs[0]
    net.mark_output(y)
    return net


def test_soc_rail_is_reported_separately_and_counted_once():
    p = get_platform("orin-agx-64gb")
    m = build_cost_model(_net(16), p, "30W", Precision.FP16)
    mode = p.mode("30W")
    assert m.graph.static_power_w["soc"] == mode.soc_static_w
    assert m.graph.static_power_w["gpu"] == mode.gpu_static_w
    assert m.graph.extra_rails == ("soc",)
    expected = mode.gpu_static_w + mode.soc_static_w + p.dla_cores * mode.dla_static_w
    assert abs(m.graph.static_power - expected) <= 1e-12 * expected


def test_hand_off_prices_each_side_with_its_own_layout():
    """3 channels: the DLA side is padded to 16, the GPU side is not; the price sits in between."""
    p = get_platform("orin-agx-64gb")
    mode = p.mode("30W")
    m = build_cost_model(_net(3), p, "30W", Precision.FP16)
    g = m.graph
    t = next(t for t in g.tensors if t.name == "x")
    linear, padded = 3 * 32 * 32 * 2, 16 * 32 * 32 * 2
    assert t.nbytes == padded
    cost = g.tensor_transfer(t, "gpu", "dla0")[0] / 1e3
    both_padded = transition_cost_s(p, mode, padded, "gpu", "dla0")[0]
    both_linear = transition_cost_s(p, mode, linear, "gpu", "dla0")[0]
    assert both_linear < cost < both_padded
    midway = (both_linear + both_padded) / 2
    assert abs(cost - midway) <= 1e-9 * midway
    # a 16-channel tensor has the same size on both sides: the byte model and the tensor model agree
    m16 = build_cost_model(_net(16), p, "30W", Precision.FP16)
    t16 = next(t for t in m16.graph.tensors if t.name == "x")
    assert abs(m16.graph.tensor_transfer(t16, "dla0", "gpu")[0] / 1e3
               - transition_cost_s(p, mode, t16.nbytes, "dla0", "gpu")[0]) <= 1e-15


def test_pseudo_io_nodes_are_pinned_and_silent():
    m = build_cost_model(_net(16), "orin-agx-64gb", "30W", Precision.FP16)
    pseudo = [n.name for n in m.graph.nodes if n.pseudo]
    assert pseudo == ["<in:x>", f"<out:{m.layers[-1].name}>"]
    p = dla_first(m.graph)
    assert all(p.devices[name] == "gpu" for name in pseudo)
    assert not any(name in msg for msg in p.messages for name in pseudo)
    assert all(p.reasons[name].startswith("pinned to gpu") for name in pseudo)
