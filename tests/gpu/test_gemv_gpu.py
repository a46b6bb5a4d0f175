"""The "gemv" tactic (``conv_src.gemv_conv``: a 1x1 convolution on few rows, a warp per output) on
the GPU: a squeeze-excitation pair of FCs (SiLU, then sigmoid) and an FC head with a residual-free
GELU, given the tactic, within fp16 tolerance of the reference on fresh random data; and tactic
timing offers it for such layers. Skipped without CUDA."""

from __future__ import annotations

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

from gpu_reference import assert_close  # noqa: E402

from backends.gpu.backend import GpuPartition  # noqa: E402
from backends.gpu.kernels.conv import ConvGeometry  # noqa: E402
from backends.gpu.tactics import time_conv_gemv  # noqa: E402
from backends.reference import execute as reference_execute  # noqa: E402
from engine.ir.dtypes import Precision  # noqa: E402
from engine.ir.layers import ActivationSpec, ActivationType, ConvolutionParams  # noqa: E402
from engine.ir.network import Network  # noqa: E402

pytestmark = pytest.mark.gpu


def _fc(net: Network, rng: np.random.Generator, x: str, c: int, k: int, act: ActivationType, name: str) -> str:
    params = ConvolutionParams(k, (1, 1), (1, 1), (0, 0), (0, 0), (1, 1), 1, ActivationSpec(act))
    w = {"kernel": (rng.standard_normal((k, c, 1, 1)) / np.sqrt(c)).astype(np.float32),
         "bias": rng.standard_normal(k).astype(np.float32)}
    return net.add_layer(params, [x], w, name=name).outputs[0]


@pytest.mark.parametrize("n", [1, 8])
def test_se_fcs_on_the_gemv_tactic_match_the_reference(rng, n):
    net = Network("se")
    x = net.add_input("x", (n, 240, 1, 1))
    h = _fc(net, rng, x, 240, 10, ActivationType.SILU, "fc1")
    net.mark_output(_fc(net, rng, h, 10, 240, ActivationType.SIGMOID, "fc2"))
    for layer in net.layers:
        layer.precision = Precision.FP16
    feeds = {"x": rng.uniform(-2, 2, (n, 240, 1, 1)).astype(np.float32)}
    part = GpuPartition(net, [la.name for la in net.layers], tactics={"fc1": "gemv", "fc2": "gemv"})
    kinds = [op.kind for u in part.units if u.lowered for op in u.lowered.ops]
    assert kinds.count("conv_gemv") == 2, kinds
    got = part.create_context().execute(feeds)
    ref = reference_execute(net, feeds)
    out = net.outputs[0]
    assert_close(got[out].astype(np.float64), ref[out].astype(np.float64))


def test_gemv_is_timed_for_small_1x1():
    times = time_conv_gemv(ConvGeometry(1, 1, 1, 1152, 48, 1, 1), (5, 0.0, 0.0), False)
    assert list(times) == ["gemv"] and times["gemv"] > 0
    assert time_conv_gemv(ConvGeometry(256, 7, 7, 64, 64, 1, 1), (0, 0.0, 0.0), False) == {}
