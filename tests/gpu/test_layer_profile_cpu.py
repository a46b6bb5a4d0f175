"""bench/gpu_layer_profile.py's classes of the engine's launches, without a GPU."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from engine.ir.layers import ActivationType, FullyConnectedParams, MatrixMultiplyParams, SoftMaxParams
from engine.ir.network import Network

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from gpu_layer_profile import launch_class, launch_layers  # noqa: E402


def _mlp_and_attention() -> Network:
    rng = np.random.default_rng()
    net = Network("blocks")
    x = net.add_input("x", (4, 8, 16))
    h = net.add_layer(FullyConnectedParams(32), [x], {"kernel": rng.standard_normal((32, 16)).astype(np.float32)},
                      name="fc1").outputs[0]
    a = net.add_activation(h, ActivationType.GELU_ERF, name="gelu")
    y = net.add_layer(FullyConnectedParams(16), [a], {"kernel": rng.standard_normal((16, 32)).astype(np.float32)},
                      name="fc2").outputs[0]
    gamma = net.add_constant(rng.standard_normal(16).astype(np.float32), name="gamma")
    y = net.add_elementwise(y, gamma, "prod", name="layer_scale").name  # ConvNeXt's layer scale
    s = net.add_layer(MatrixMultiplyParams(transpose_b=True), [y, y], name="qk").outputs[0]
    p = net.add_layer(SoftMaxParams(axis=-1), [s], name="softmax").outputs[0]
    net.mark_output(net.add_layer(MatrixMultiplyParams(), [p, y], name="pv").outputs[0])
    return net


def test_a_whole_mlp_in_one_launch_is_gemm_work_and_a_softmax_between_products_attention():
    net = _mlp_and_attention()
    by_name = {la.name: la for la in net.layers}
    mlp = launch_layers("fc1 + gelu + fc2 + layer_scale", by_name)
    assert [la.name for la in mlp] == ["fc1", "gelu", "fc2", "layer_scale"]
    assert launch_class(mlp, net) == "gemm"
    assert launch_class(launch_layers("gelu", by_name), net) == "pointwise"
    assert launch_class(launch_layers("qk + softmax + pv", by_name), net) == "attention"
    assert launch_class(launch_layers("to_nhwc_x", by_name), net) == "layout/other"
