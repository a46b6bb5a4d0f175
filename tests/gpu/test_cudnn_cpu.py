"""cuDNN's fused-convolution tactic without a GPU: which layers it may take, its names in plans and
timing caches, and the tiles taking the layer wherever cuDNN cannot run it."""

from __future__ import annotations

import numpy as np
from gemm_nets import one_conv_network

from backends.gpu.kernels import cudnn
from backends.gpu.kernels.conv import ConvGeometry
from backends.gpu.lowering.lowerer import lower
from backends.gpu.tactics import compiled_tactic
from engine.ir.dtypes import Precision
from engine.ir.layers import ActivationSpec, ActivationType, ConvolutionParams
from engine.ir.network import Network


def test_plans_and_caches_may_name_an_algorithm():
    assert compiled_tactic("cudnn_a1") and compiled_tactic("cudnn_a0")
    for forged in ("cudnn_a8", "cudnn_a", "cudnn_a01", "cudnn_a-1", "cudnn_1", "cudnn"):
        assert not compiled_tactic(forged), forged
    assert cudnn.parse_tactic(cudnn.tactic_name(7)) == 7


def test_the_fused_call_takes_identity_and_relu_with_even_padding_and_whole_output_vectors():
    g = ConvGeometry(2, 14, 14, 3, 64, 7, 7, (2, 2), (3, 3))
    s = cudnn.shape_of(g, 1)
    assert s is not None and (s.cp, s.k, s.p, s.q) == (8, 64, 7, 7)  # the input's channels padded to 8
    assert cudnn.shape_of(g, 0) is not None
    assert cudnn.shape_of(g, 9) is None  # GELU: not an activation of the fused call
    assert cudnn.shape_of(ConvGeometry(2, 14, 14, 8, 60, 3, 3), 1) is None  # K % 8: padded outputs
    assert cudnn.shape_of(ConvGeometry(2, 14, 14, 8, 64, 3, 3, (2, 2), (0, 0), pad_end=(1, 1)), 1) is None
    grouped = cudnn.shape_of(ConvGeometry(2, 14, 14, 64, 64, 3, 3, groups=4), 1)
    assert grouped is not None and (grouped.cp, grouped.groups) == (64, 4)


def _convs(rng) -> Network:
    net = Network("convs")
    x = net.add_input("x", (2, 16, 9, 9))
    for name, act in (("relu", ActivationType.RELU), ("gelu", ActivationType.GELU_ERF)):
        params = ConvolutionParams(16, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 1, ActivationSpec(act), False)
        w = {"kernel": rng.standard_normal((16, 16, 3, 3)).astype(np.float32),
             "bias": rng.standard_normal(16).astype(np.float32)}
        x = net.add_layer(params, [x], w, name=name).outputs[0]
    net.mark_output(x)
    for la in net.layers:
        la.precision = Precision.FP16
    return net


def test_the_tactic_lowers_to_one_launch_where_cudnn_offers_the_algorithm(monkeypatch):
    monkeypatch.setattr(cudnn, "algorithms", lambda g, act: (1,) if act in cudnn.ACTIVATIONS else ())
    net = _convs(np.random.default_rng(0))
    low = lower(net, net.layers, list(net.outputs), {la.name: "cudnn_a1" for la in net.layers})
    ops = {op.label: op for op in low.ops if op.label in ("relu", "gelu")}
    assert ops["relu"].kind == "conv_cudnn" and ops["relu"].info["algo"] == 1
    assert ops["gelu"].kind == "conv"
    bias = low.slots[ops["relu"].info["b"]]  # the library's bias has the output's type
    assert bias.dtype == "float16"
    np.testing.assert_array_equal(bias.const[:16], net.layer("relu").weights["bias"].astype(np.float16))


def test_without_cudnn_or_the_algorithm_the_tiles_take_the_layer(monkeypatch):
    net = _convs(np.random.default_rng(0))
    monkeypatch.setattr(cudnn, "algorithms", lambda g, act: (0,))  # a plan from another GPU or cuDNN
    low = lower(net, net.layers, list(net.outputs), {la.name: "cudnn_a1" for la in net.layers})
    assert {op.kind for op in low.ops if op.label == "relu"} == {"conv"}

    def unavailable(g, act):
        raise RuntimeError("cuDNN cannot run here")

    monkeypatch.setattr(cudnn, "algorithms", unavailable)
    low = lower(net, net.layers, list(net.outputs), {la.name: "cudnn_a1" for la in net.layers})
    assert {op.kind for op in low.ops if op.label == "relu"} == {"conv"}


def _stem() -> Network:
    return one_conv_network(np.random.default_rng(1), "stem", (2, 3, 32, 32), 64, 7, stride=2, pad=3)


def test_a_stem_on_cudnn_keeps_its_own_geometry_instead_of_the_space_to_depth(monkeypatch):
    """The tiles run a 3-channel stride-2 stem over its 2x2 space-to-depth; the build times cuDNN on
    the stem as it is, and where cuDNN wins the lowering keeps that geometry."""
    net = _stem()
    low = lower(net, net.layers, list(net.outputs), {})
    conv = next(op for op in low.ops if op.label == "stem")
    assert [op.kind for op in low.ops].count("s2d") == 1 and conv.kind == "conv"
    own = conv.info["s2d_of"]  # what the tactic timing hands to cuDNN
    assert (own.c, own.r, own.stride, conv.info["geom"].stride) == (3, 7, (2, 2), (1, 1))

    monkeypatch.setattr(cudnn, "algorithms", lambda g, act: (1,) if g.stride == (2, 2) and g.r == 7 else ())
    low = lower(net, net.layers, list(net.outputs), {"stem": "cudnn_a1"})
    conv = next(op for op in low.ops if op.label == "stem")
    assert "s2d" not in [op.kind for op in low.ops]
    assert conv.kind == "conv_cudnn" and conv.info["geom"] == own
    assert low.slots[conv.info["x"]].layout == "nhwc"


class _FakeCudnn:
    """A stand-in libcudnn: every call succeeds; the heuristic offers ``offers`` as (algo, status,
    workspace bytes), and the workspace query answers each algorithm's bytes."""

    def __init__(self, offers):
        self.offers = offers

    def __getattr__(self, name):
        offers = self.offers

        def call(*args):
            if name == "cudnnGetConvolutionForwardAlgorithm_v7":
                count, perf = args[6], args[7]
                for i, (algo, status, _) in enumerate(offers):
                    perf[i].algo, perf[i].status = algo, status
                count._obj.value = len(offers)
            elif name == "cudnnGetConvolutionForwardWorkspaceSize":
                args[6]._obj.value = next(b for a, _, b in offers if a == args[5])
            elif name == "cudnnGetErrorString":
                return b"CUDNN_STATUS_FAKE"
            return 0

        fn = type("Fn", (), {"argtypes": None, "restype": None, "__call__": lambda self, *a: call(*a)})()
        setattr(self, name, fn)
        return fn


def test_the_plan_keeps_the_algorithms_the_fused_call_can_run_within_the_workspace(monkeypatch):
    from backends.gpu.kernels import cuda_lib

    offers = [(1, 0, 1 << 20), (0, 0, 0), (4, 0, 1 << 30), (6, 9, 0), (0, 0, 0)]  # FFT too big, Winograd failed
    fake = cuda_lib.LazyLibrary("cudnn", "cuDNN", cudnn._declare, opener=lambda: _FakeCudnn(offers))
    monkeypatch.setattr(cudnn, "_library", fake.get)
    monkeypatch.setattr(cudnn, "available", fake.available)
    monkeypatch.setattr(cudnn, "_device", lambda: 0)
    monkeypatch.setattr(cudnn, "_handles", {})
    monkeypatch.setattr(cudnn, "_plans", {})
    g = ConvGeometry(2, 14, 14, 16, 32, 3, 3, (1, 1), (1, 1))
    assert cudnn.algorithms(g, 1) == (1, 0)  # heuristic order, each once
    assert cudnn.algorithms(g, 0) == (1,)  # identity: the precomputed implicit GEMM only
    assert cudnn.algorithms(g, 9) == ()  # GELU
    assert set(cudnn._handles) == {0}


def test_the_launch_runs_the_algorithm_the_plan_chose(monkeypatch):
    from backends.gpu import backend
    from backends.gpu.kernels import conv as convk
    from backends.gpu.lowering.slots import Op

    calls = []
    monkeypatch.setattr(convk, "conv2d_cudnn", lambda *args, **kwargs: calls.append((args, kwargs)))
    info = {"geom": "g", "act": (1, 0.0, 0.0), "x": "x", "w": "w", "b": "b", "res": "r", "y": "y", "algo": 7}
    op = Op("conv", "conv_cudnn", ["x", "w", "b", "r"], ["y"], info=info)
    backend._launcher(op, {k: f"view {k}" for k in "xwbry"}, None, None)()
    assert calls == [(("view x", "view w", "view b", "view y", "g", (1, 0.0, 0.0), "view r"), {"algo": 7})]
