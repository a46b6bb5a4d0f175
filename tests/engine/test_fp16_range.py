"""FP16 builds bring their constants into FP16's range (``engine/fp16_range``), as TensorRT's
builder does: ``x / max(||x||, 1e-12)`` as ``torch.nn.functional.normalize`` exports it must give
0 on rows of zeros (a padded attention window), not 0 / 0, and a Transformers-style mask bias
``(1 - mask) * finfo(float32).min`` must not turn the kept positions into 0 * -inf."""

from __future__ import annotations

import io

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import engine.fp16_range as fp16_range
from engine.builder import BuilderConfig, build_from_onnx
from engine.fp16_range import to_fp16_range
from engine.ir.logger import Logger, Severity
from engine.runtime import Runtime

SHAPE = (2, 6, 16)


def normalize_model(w: np.ndarray) -> onnx.ModelProto:
    """y = normalize(x, dim=-1) @ w, exported the way PyTorch exports F.normalize (opset 17)."""
    nodes = [helper.make_node("ReduceL2", ["x"], ["n"], axes=[-1], keepdims=1),
             helper.make_node("Clip", ["n", "eps", ""], ["c"]),
             helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Expand", ["c", "s"], ["e"]),
             helper.make_node("Div", ["x", "e"], ["q"]),
             helper.make_node("MatMul", ["q", "w"], ["y"])]
    graph = helper.make_graph(nodes, "normalize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (*SHAPE[:2], w.shape[1]))],
                              [numpy_helper.from_array(np.array(1e-12, np.float32), "eps"),
                               numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, x: np.ndarray, logger: Logger, **config) -> np.ndarray:
    plan = build_from_onnx(model, BuilderConfig(fp16=True, batch=SHAPE[0], **config), logger)
    engine = Runtime(Logger(Severity.ERROR)).deserialize(plan)
    return engine.create_execution_context().execute({"x": x})["y"]


def test_normalize_of_zero_rows_is_zero_not_nan_in_fp16():
    rng = np.random.default_rng()
    w = rng.standard_normal((SHAPE[2], 8)).astype(np.float32)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    x[0, 2:5] = 0  # padded tokens
    model = normalize_model(w)
    log = io.StringIO()
    got = run(model, x, Logger(Severity.INFO, stream=log))
    xd = x.astype(np.float64)
    want = xd / np.maximum(np.linalg.norm(xd, axis=-1, keepdims=True), 1e-12) @ w
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got[0, 2:5], 0)
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2 * np.abs(want).max())
    assert "1 value(s) below the smallest FP16 subnormal set to +-2**-24" in log.getvalue()


def test_without_the_conversion_the_zero_rows_divide_0_by_0(monkeypatch):
    """What the conversion is for: with the epsilon at 0, the zero rows are NaN."""
    rng = np.random.default_rng()
    x = rng.standard_normal(SHAPE).astype(np.float32)
    x[1, 0] = 0
    model = normalize_model(rng.standard_normal((SHAPE[2], 8)).astype(np.float32))
    monkeypatch.setattr(fp16_range, "fit_constants_to_fp16", lambda network, logger: [])
    got = run(model, x, Logger(Severity.ERROR))
    assert np.isnan(got[1, 0]).all() and np.isfinite(got[0]).all()


def mask_model() -> onnx.ModelProto:
    """softmax(x + (1 - mask) * finfo(float32).min), the attention mask of exported Transformers."""
    shape = (2, 4, 8)
    nodes = [helper.make_node("Sub", ["one", "m"], ["inv"]), helper.make_node("Mul", ["inv", "big"], ["bias"]),
             helper.make_node("Add", ["x", "bias"], ["s"]), helper.make_node("Softmax", ["s"], ["y"], axis=-1)]
    graph = helper.make_graph(nodes, "mask", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
                                              helper.make_tensor_value_info("m", TensorProto.FLOAT, (2, 1, 8))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              [numpy_helper.from_array(np.float32(1), "one"),
                               numpy_helper.from_array(np.float32(np.finfo(np.float32).min), "big")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_mask_bias_past_the_fp16_range_masks_instead_of_giving_nan(monkeypatch):
    rng = np.random.default_rng()
    x = (rng.standard_normal((2, 4, 8)) * 3).astype(np.float32)
    mask = (rng.random((2, 1, 8)) < 0.7).astype(np.float32)
    mask[:, :, 0] = 1  # every row keeps a position
    feeds = {"x": x, "m": mask}
    s = np.where(mask > 0, x.astype(np.float64), -np.inf)
    want = np.exp(s - s.max(-1, keepdims=True))
    want /= want.sum(-1, keepdims=True)

    def run_mask() -> np.ndarray:
        plan = build_from_onnx(mask_model(), BuilderConfig(fp16=True, batch=2), Logger(Severity.ERROR))
        engine = Runtime(Logger(Severity.ERROR)).deserialize(plan)
        return engine.create_execution_context().execute(feeds)["y"]

    got = run_mask()
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-3)
    np.testing.assert_array_equal(got[np.broadcast_to(mask == 0, got.shape)], 0)
    monkeypatch.setattr(fp16_range, "fit_constants_to_fp16", lambda network, logger: [])
    assert np.isnan(run_mask()).all()  # -3.4e38 is -inf in FP16: 0 * -inf on every kept position


def test_to_fp16_range():
    big, tiny = np.float32(np.finfo(np.float32).min), 2.0 ** -24
    got = to_fp16_range(np.float32([1e-12, -3e-9, 0, 1.5, 7e4, big, np.inf, -np.inf, 65504]))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.float32([tiny, -tiny, 0, 1.5, 65504, -65504, np.inf, -np.inf, 65504]))
    assert np.isnan(to_fp16_range(np.float32([np.nan, 1e-30])))[0]
    assert np.all(np.isfinite(got[:6].astype(np.float16))) and np.all(got[:2].astype(np.float16) != 0)
    same = np.float32([0.5, -2])
    assert to_fp16_range(same) is same  # nothing to change: no copy


def test_a_constant_only_fp16_layers_read_is_fitted_and_one_an_fp32_layer_reads_is_not():
    """A Constant layer (not folded into its reader's weights) read by FP16 layers only, through a
    transpose, is brought into range; one an FP32 layer also reads keeps its exact values."""
    from engine.builder import Builder
    from engine.ir.layers import ShuffleParams
    from engine.ir.network import Network

    rng = np.random.default_rng()
    x_value = rng.standard_normal((3, 4)).astype(np.float32)
    big = np.full((4, 3), 7e4, np.float32)
    big[0] = -1e6
    net = Network("constants")
    x = net.add_input("x", (3, 4))
    c = net.add_constant(big, name="big")
    t = net.add_layer(ShuffleParams(first_perm=(1, 0)), [c], name="t").outputs[0]
    net.mark_output(net.add_elementwise(x, t, "sum", name="add"))
    plan = Builder(Logger(Severity.ERROR)).build_serialized_network(net, BuilderConfig(fp16=True, optimize=False))
    engine = Runtime(Logger(Severity.ERROR)).deserialize(plan)
    got = engine.create_execution_context().execute({"x": x_value})[engine.output_names[0]]
    want = (x_value.astype(np.float16).astype(np.float32) + to_fp16_range(big).T).astype(np.float16)
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got, want.astype(np.float32))

    mixed = Network("mixed")
    x = mixed.add_input("x", (3, 4))
    c = mixed.add_constant(big.T.copy(), name="big")
    mixed.mark_output(mixed.add_elementwise(x, c, "sum", name="fp16_add"))
    mixed.mark_output(mixed.add_elementwise(x, c, "prod", name="fp32_prod"))
    config = BuilderConfig(fp16=True, optimize=False, layer_precisions={"fp32_prod": "fp32"})
    log = io.StringIO()
    plan = Builder(Logger(Severity.WARNING, stream=log)).build_serialized_network(mixed, config)
    engine = Runtime(Logger(Severity.ERROR)).deserialize(plan)
    outs = engine.create_execution_context().execute({"x": x_value})
    np.testing.assert_allclose(outs[engine.output_names[1]], x_value * big.T, rtol=1e-6)
    assert "constant 'big' has values FP16 cannot hold" in log.getvalue() and "fp16_add" in log.getvalue()
