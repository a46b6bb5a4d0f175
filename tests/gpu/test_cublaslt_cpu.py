"""The cuBLASLt tactic's lowering, without a GPU: a GEMM-shaped layer given the tactic becomes one
``conv_cublaslt`` launch where cuBLASLt's epilogue computes its activation (identity, ReLU) and
keeps the tiles otherwise (GELU, a squeeze-excitation scale); plans and caches may name it."""

from __future__ import annotations

import numpy as np

from backends.gpu.kernels import cublaslt, cuda_lib
from backends.gpu.lowering.lowerer import lower
from backends.gpu.tactics import compiled_tactic
from engine.ir.dtypes import Precision
from engine.ir.layers import ActivationSpec, ActivationType, FullyConnectedParams
from engine.ir.network import Network


def _fcs(rng) -> Network:
    net = Network("fcs")
    x = net.add_input("x", (4, 7, 64))
    for name, act in (("plain", None), ("relu", ActivationType.RELU), ("gelu", ActivationType.GELU_ERF)):
        spec = ActivationSpec(act) if act else None
        w = {"kernel": rng.standard_normal((64, 64)).astype(np.float32),
             "bias": rng.standard_normal(64).astype(np.float32)}
        x = net.add_layer(FullyConnectedParams(64, spec), [x], w, name=name).outputs[0]
    net.mark_output(x)
    for la in net.layers:
        la.precision = Precision.FP16
    return net


def test_the_tactic_lowers_to_one_launch_where_the_epilogue_computes_the_activation(monkeypatch):
    monkeypatch.setattr(cublaslt, "available", lambda: True)
    net = _fcs(np.random.default_rng(0))
    low = lower(net, net.layers, list(net.outputs), {la.name: "cublaslt" for la in net.layers})
    kinds = {op.label: op.kind for op in low.ops if op.label in ("plain", "relu", "gelu")}
    assert kinds == {"plain": "conv_cublaslt", "relu": "conv_cublaslt", "gelu": "conv"}
    for op in low.ops:  # cuBLASLt's bias has D's type (fp16); the tiles keep their fp32 one
        bias = low.slots[op.info["b"]] if op.kind.startswith("conv") else None
        if bias is not None:
            assert bias.dtype == ("float16" if op.kind == "conv_cublaslt" else "float32"), op.label
            want = net.layer(op.label).weights["bias"].astype(np.float16)
            np.testing.assert_array_equal(bias.const[:64].astype(np.float16), want)


def test_without_the_library_the_tiles_take_the_layer(monkeypatch):
    monkeypatch.setattr(cublaslt, "available", lambda: False)
    net = _fcs(np.random.default_rng(0))
    low = lower(net, net.layers, list(net.outputs), {la.name: "cublaslt" for la in net.layers})
    assert {op.kind for op in low.ops if op.label in ("plain", "relu")} == {"conv"}


def test_plans_and_caches_may_name_the_tactic():
    assert compiled_tactic("cublaslt") and not compiled_tactic("cublaslt_1")


def test_the_first_call_sets_up_without_a_deadlock(monkeypatch):
    """Loading the library, making the handle and planning take the module's lock in turn (a
    plain lock there hung the first GEMM); a stand-in library answers every call with success."""
    import threading

    class FakeLib:
        def __getattr__(self, name):
            return type("Fn", (), {"argtypes": None, "__call__": lambda self, *a: 0})()

    monkeypatch.setattr(cuda_lib, "open_versioned", lambda stem: FakeLib())
    fresh = cuda_lib.LazyLibrary("cublasLt", "cuBLASLt", cublaslt._declare)
    monkeypatch.setattr(cublaslt, "_library", fresh.get)
    monkeypatch.setattr(cublaslt, "_handle", None)
    monkeypatch.setattr(cublaslt, "_plans", {})
    done = []
    t = threading.Thread(target=lambda: done.append(cublaslt._plan_for(8, 8, 8, 0, 0)), daemon=True)
    t.start()
    t.join(10)
    assert done, "planning the first GEMM did not return"
