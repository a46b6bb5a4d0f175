"""Shared helpers for the reference-backend tests: one-layer networks and onnxruntime oracles."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from backends.reference import execute
from engine.ir.dtypes import DataType, Precision
from engine.ir.layers import LayerParams
from engine.ir.network import Network

OPSET = 21


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def randn(g: np.random.Generator, *shape: int, dtype=np.float32) -> np.ndarray:
    return g.standard_normal(shape).astype(dtype)


def run_single(params: LayerParams, inputs: Sequence[np.ndarray], weights: dict[str, np.ndarray] | None = None,
               precision: Precision | None = None) -> list[np.ndarray]:
    """Build a one-layer network around ``params`` and execute it."""
    net = Network("single")
    names = []
    for i, a in enumerate(inputs):
        net.add_input(f"in{i}", a.shape, DataType.from_numpy(a.dtype))
        names.append(f"in{i}")
    layer = net.add_layer(params, names, weights or {}, name="layer")
    layer.precision = precision
    for o in layer.outputs:
        net.mark_output(o)
    out = execute(net, {f"in{i}": np.asarray(a) for i, a in enumerate(inputs)})
    return [out[o] for o in layer.outputs]


def ort_single(op_type: str, inputs: Sequence[np.ndarray | None], attrs: dict | None = None, n_outputs: int = 1,
               const_inputs: Sequence[int] = (), opset: int = OPSET, domain: str = "") -> list[np.ndarray]:
    """Run one ONNX node in onnxruntime; ``const_inputs`` become initializers, None an omitted input."""
    in_names, vis, inits, feeds = [], [], [], {}
    for i, a in enumerate(inputs):
        if a is None:
            in_names.append("")
            continue
        name = f"x{i}"
        in_names.append(name)
        if i in const_inputs:
            inits.append(numpy_helper.from_array(np.asarray(a), name))
        else:
            vis.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape))
            feeds[name] = np.asarray(a)
    out_names = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, in_names, out_names, domain=domain, **(attrs or {}))
    outs = [onnx.ValueInfoProto(name=o) for o in out_names]
    graph = helper.make_graph([node], "g", vis, outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, opset)])
    model.ir_version = 10
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-5, atol: float | None = None,
                 check_dtype: bool = True) -> None:
    """allclose with an absolute floor scaled to the oracle's magnitude (cancellation in long sums)."""
    want = np.asarray(want)
    if check_dtype:
        assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    if atol is None:
        scale = float(np.max(np.abs(want[np.isfinite(want)]), initial=1.0)) if want.size else 1.0
        atol = 1e-6 * max(scale, 1.0)
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol,
                               equal_nan=True)


def assert_fp16_close(got: np.ndarray, want32: np.ndarray, rtol: float = 1e-2, atol: float | None = None) -> None:
    """An FP16 layer's output against the fp32 oracle: float16 storage, rtol 1e-2."""
    assert got.dtype == np.float16, got.dtype
    if atol is None:
        atol = 1e-2 * max(float(np.max(np.abs(want32), initial=1.0)), 1.0) * 0.1
    assert_close(got, want32, rtol=rtol, atol=atol, check_dtype=False)


def seed_of(*parts: object) -> int:
    """A reproducible seed from test parameters (``hash`` of a str changes between runs)."""
    return zlib.crc32(repr(parts).encode())
