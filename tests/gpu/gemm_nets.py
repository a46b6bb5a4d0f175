"""A GEMM-shaped 1x1 convolution (bias, residual, ReLU) and an FC layer on its NHWC output, run
on one whole-layer tactic (``cublas``, ``cublaslt``) through ``GpuPartition`` against the reference
backend at fp16 tolerance: the check the GPU tests of those tactics share; and a one-convolution
network for the tactic tests."""

from __future__ import annotations

import numpy as np

from engine.ir.dtypes import Precision
from engine.ir.layers import ActivationSpec, ActivationType, ConvolutionParams, FullyConnectedParams, ShuffleParams
from engine.ir.network import Network


def gemm_shaped_network(rng: np.random.Generator, fc_activation: ActivationSpec | None) -> tuple[Network, dict]:
    """The FP16 network (outputs: the convolution's and the FC's) and fresh random feeds."""
    net = Network("gemm-shaped")
    x = net.add_input("x", (3, 64, 9, 7))
    r = net.add_input("r", (3, 128, 9, 7))
    w = {"kernel": (rng.standard_normal((128, 64, 1, 1)) / 8).astype(np.float32),
         "bias": rng.standard_normal(128).astype(np.float32)}
    conv = ConvolutionParams(128, (1, 1), (1, 1), (0, 0), (0, 0), (1, 1), 1,
                             ActivationSpec(ActivationType.RELU), True)
    y = net.add_layer(conv, [x, r], w, name="conv").outputs[0]
    pooled = net.add_layer(ShuffleParams(first_perm=(0, 2, 3, 1)), [y], name="nhwc").outputs[0]
    fc = FullyConnectedParams(32) if fc_activation is None else FullyConnectedParams(32, fc_activation)
    z = net.add_layer(fc, [pooled], {"kernel": (rng.standard_normal((32, 128)) / 11).astype(np.float32),
                                     "bias": rng.standard_normal(32).astype(np.float32)}, name="fc").outputs[0]
    net.mark_output(y)
    net.mark_output(z)
    net.validate()
    for layer in net.layers:
        layer.precision = Precision.FP16
    feeds = {"x": rng.uniform(-1, 1, (3, 64, 9, 7)).astype(np.float32),
             "r": rng.uniform(-1, 1, (3, 128, 9, 7)).astype(np.float32)}
    return net, feeds


def check_on_tactic(rng: np.random.Generator, tactic: str, fc_activation: ActivationSpec | None,
                    kind: str | None = None) -> None:
    """Both layers on ``tactic`` (each its ``kind`` op, default ``conv_<tactic>``), outputs within
    fp16 tolerance of the reference backend."""
    from gpu_reference import assert_close

    from backends.gpu.backend import GpuPartition
    from backends.reference import execute as reference_execute

    net, feeds = gemm_shaped_network(rng, fc_activation)
    part = GpuPartition(net, [la.name for la in net.layers], tactics={"conv": tactic, "fc": tactic})
    kinds = [op.kind for u in part.units if u.lowered for op in u.lowered.ops]
    assert kinds.count(kind or f"conv_{tactic}") == 2, kinds
    got = part.create_context().execute(feeds)
    ref = reference_execute(net, feeds)
    for name in net.outputs:
        assert_close(got[name].astype(np.float64), ref[name].astype(np.float64))


def one_conv_network(rng: np.random.Generator, name: str, x_shape: tuple[int, int, int, int], k: int, kernel: int,
                     stride: int = 1, pad: int = 0, weight_scale: float = 1.0) -> Network:
    """One FP16 convolution with ReLU and a bias (layer ``name``), on fresh random weights."""
    c = x_shape[1]
    net = Network(f"{name}-net")
    x = net.add_input("x", x_shape)
    params = ConvolutionParams(k, (kernel, kernel), (stride, stride), (pad, pad), (pad, pad), (1, 1), 1,
                               ActivationSpec(ActivationType.RELU), False)
    w = {"kernel": (rng.standard_normal((k, c, kernel, kernel)) * weight_scale).astype(np.float32),
         "bias": rng.standard_normal(k).astype(np.float32)}
    net.mark_output(net.add_layer(params, [x], w, name=name).outputs[0])
    net.layers[0].precision = Precision.FP16
    return net

