"""Batched fp16 products of two activations run through cuBLAS inside the partition's CUDA graph
(backends/gpu/kernels/cublas.py): attention-shaped products against numpy float64 on fresh random
data (fp16 tolerance), graph replays equal to the per-launch profiled run."""

from __future__ import annotations

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

from engine.builder import Builder, BuilderConfig  # noqa: E402
from engine.ir.layers import MatrixMultiplyParams, ShuffleParams, SoftMaxParams  # noqa: E402
from engine.ir.logger import Logger, Severity  # noqa: E402
from engine.ir.network import Network  # noqa: E402
from engine.runtime import Profiler, Runtime  # noqa: E402

pytestmark = pytest.mark.gpu
QUIET = Logger(Severity.ERROR)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _attention(b: int, heads: int, seq: int, d: int, transposed_k: str) -> Network:
    net = Network("attention")
    q = net.add_input("q", (b, heads, seq, d))
    k = net.add_input("k", (b, heads, seq, d))
    v = net.add_input("v", (b, heads, seq, d))
    q = net.add_activation(q, "tanh")  # device-computed fp16 operands, not network inputs
    k = net.add_activation(k, "tanh")
    v = net.add_activation(v, "tanh")
    if transposed_k == "layer":
        kt = net.tensor(net.add_layer(ShuffleParams(first_perm=(0, 1, 3, 2)), [k]).outputs[0])
        s = net.tensor(net.add_layer(MatrixMultiplyParams(), [q, kt]).outputs[0])
    else:
        s = net.tensor(net.add_layer(MatrixMultiplyParams(transpose_b=True), [q, k]).outputs[0])
    p = net.tensor(net.add_layer(SoftMaxParams(axis=-1), [s]).outputs[0])
    o = net.tensor(net.add_layer(MatrixMultiplyParams(), [p, v]).outputs[0])
    net.mark_output(o)
    net.validate()
    return net


def _reference(feeds: dict[str, np.ndarray]) -> np.ndarray:
    q, k, v = (np.tanh(feeds[n].astype(np.float64)) for n in "qkv")
    s = q @ np.swapaxes(k, -1, -2)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return p @ v


@pytest.mark.parametrize("shape,transposed_k", [((2, 12, 197, 64), "flag"), ((3, 4, 50, 32), "layer"),
                                                 ((1, 2, 7, 24), "flag")])
@pytest.mark.parametrize("fused", [False, True])
def test_attention_products_run_on_cublas_and_match_float64(rng, monkeypatch, shape, transposed_k, fused) -> None:
    """Unfused (the attention matcher switched off), both products are cuBLAS calls captured in
    the graph; fused, the block is one generated launch. Both match float64."""
    from backends.gpu.lowering import lowerer

    if not fused:
        monkeypatch.setattr(lowerer, "find_attention", lambda lw: {})
    b, h, s, d = shape
    net = _attention(b, h, s, d, transposed_k)
    plan = Builder(QUIET).build_serialized_network(net, BuilderConfig(fp16=True))
    engine = Runtime(QUIET).deserialize(plan)
    assert [p.backend for p in engine.partitions] == ["gpu"]
    kernels = engine.compiled_partitions[0].describe()["kernels"]
    assert kernels.get("gemm_cublas") == (None if fused else 2), kernels
    feeds = {n: rng.standard_normal(shape).astype(np.float32) for n in "qkv"}
    ctx = engine.create_execution_context()
    got = ctx.execute(feeds)[net.outputs[0]]
    assert _rel(got.astype(np.float64), _reference(feeds)) < 1e-2
    again = ctx.execute(feeds)[net.outputs[0]]  # a second replay of the captured graph
    np.testing.assert_array_equal(again, got)
    ctx.profiler = Profiler()
    np.testing.assert_array_equal(ctx.execute(feeds)[net.outputs[0]], got)  # launches one by one


def test_two_contexts_keep_their_own_cublas_streams(rng, monkeypatch) -> None:
    from backends.gpu.lowering import lowerer

    monkeypatch.setattr(lowerer, "find_attention", lambda lw: {})  # the products as cuBLAS calls
    net = _attention(2, 4, 40, 32, "flag")
    engine = Runtime(QUIET).deserialize(Builder(QUIET).build_serialized_network(net, BuilderConfig(fp16=True)))
    feeds = [{n: rng.standard_normal((2, 4, 40, 32)).astype(np.float32) for n in "qkv"} for _ in range(2)]
    a, b = engine.create_execution_context(), engine.create_execution_context()
    out_a, out_b = a.execute(feeds[0])[net.outputs[0]], b.execute(feeds[1])[net.outputs[0]]
    assert _rel(out_a.astype(np.float64), _reference(feeds[0])) < 1e-2
    assert _rel(out_b.astype(np.float64), _reference(feeds[1])) < 1e-2


def test_gemm_shaped_convolutions_on_the_cublas_tactic_match_the_reference(rng) -> None:
    """A 1x1 convolution (bias, residual, ReLU) and an FC layer (bias, GELU) given the "cublas"
    tactic run as a cuBLAS GEMM + in-place epilogue, within fp16 tolerance of the reference."""
    from gemm_nets import check_on_tactic

    from engine.ir.layers import ActivationSpec, ActivationType

    check_on_tactic(rng, "cublas", ActivationSpec(ActivationType.GELU_ERF))
