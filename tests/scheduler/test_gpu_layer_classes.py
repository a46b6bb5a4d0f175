"""GPU time by layer class: tensor-core GEMMs with tile/wave quantization, depthwise on CUDA cores."""

from __future__ import annotations

import numpy as np

from engine.ir.dtypes import Precision
from engine.ir.network import Network
from scheduler.gpu_model import gpu_layer_cost, layer_class, tile_utilisation
from scheduler.layer_work import layer_work
from scheduler.platforms import get_platform
from tests.dla_backend.nets import conv


def _conv_net(n: int, c: int, k: int, hw: int, r: int, groups: int = 1) -> Network:
    net = Network("one")
    x = net.add_input("x", (n, c, hw, hw))
    net.mark_output(conv(net, x, k, r, np.random.default_rng(0), pad=r // 2, groups=groups, name="c"))
    return net


def _cost(net: Network, prec=Precision.INT8):
    plat = get_platform("orin-agx-64gb")
    w = layer_work(net.layer("c"), net, prec)
    return w, gpu_layer_cost(w, plat, plat.mode("MAXN"), prec)


def test_depthwise_runs_on_cuda_cores_dense_on_tensor_cores():
    w, c = _cost(_conv_net(1, 64, 64, 56, 3, groups=64))
    assert layer_class(w, Precision.INT8) == "cuda-core" and c.layer_class == "cuda-core"
    w, c = _cost(_conv_net(1, 64, 64, 56, 3))
    assert layer_class(w, Precision.INT8) == "tensor-core"
    assert w.gemm == (56 * 56, 64, 64 * 9)


def test_tile_utilisation_grows_with_batch_and_is_at_most_one():
    mode = get_platform("orin-agx-64gb").mode("MAXN")
    small = layer_work(_conv_net(1, 512, 512, 7, 3).layer("c"), _conv_net(1, 512, 512, 7, 3), Precision.INT8)
    big_net = _conv_net(32, 512, 512, 7, 3)
    big = layer_work(big_net.layer("c"), big_net, Precision.INT8)
    u1, u32 = tile_utilisation(small, mode), tile_utilisation(big, mode)
    assert 0 < u1 < u32 <= 1
    assert u32 > 0.8


def test_per_image_time_falls_with_batch_for_late_layers():
    _, c1 = _cost(_conv_net(1, 512, 512, 7, 3))
    _, c32 = _cost(_conv_net(32, 512, 512, 7, 3))
    assert c32.compute_s / 32 < 0.8 * c1.compute_s
