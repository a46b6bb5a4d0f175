"""The decomposed LayerNorm of pre-opset-17 exports becomes one Normalization layer
(``engine.optimizer.passes.layernorm``): checked against ONNX Runtime on fresh random data, in
FP32 and, with activations large enough that ``(x - mean) ** 2`` overflows half precision, in FP16."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import engine.optimizer as optimizer
from engine.builder import BuilderConfig, build_from_onnx
from engine.ir.layers import LayerKind
from engine.ir.logger import Logger, Severity
from engine.runtime import Runtime

ort = pytest.importorskip("onnxruntime")


def ln_model(shape, axes=(-1,), var_axes=None, square="Pow", affine=True, eps=1e-12, extra_output=False):
    """LayerNorm as Hugging Face's opset-13 exports write it."""
    rng = np.random.default_rng()
    norm_shape = [shape[a] for a in sorted(a % len(shape) for a in axes)]
    inits = [numpy_helper.from_array(np.float32(2.0), "two"), numpy_helper.from_array(np.float32(eps), "eps")]
    sq = helper.make_node(square, ["d", "two"] if square == "Pow" else ["d", "d"], ["sq"])
    nodes = [helper.make_node("ReduceMean", ["x"], ["mu"], axes=list(axes), keepdims=1),
             helper.make_node("Sub", ["x", "mu"], ["d"]), sq,
             helper.make_node("ReduceMean", ["sq"], ["var"], axes=list(var_axes or axes), keepdims=1),
             helper.make_node("Add", ["var", "eps"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["sd"]),
             helper.make_node("Div", ["d", "sd"], ["n"])]
    out = "n"
    if affine:
        inits += [numpy_helper.from_array(rng.uniform(0.5, 1.5, norm_shape).astype(np.float32), "g"),
                  numpy_helper.from_array(rng.standard_normal(norm_shape).astype(np.float32), "b")]
        nodes += [helper.make_node("Mul", ["n", "g"], ["ng"]), helper.make_node("Add", ["ng", "b"], ["y"])]
        out = "y"
    outputs = [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)]
    if extra_output:
        outputs.append(helper.make_tensor_value_info("d", TensorProto.FLOAT, shape))
    graph = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)], outputs,
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def run(model, x, fp16=False):
    logger = Logger(Severity.ERROR)
    engine = Runtime(logger).deserialize(build_from_onnx(model, BuilderConfig(fp16=fp16, batch=x.shape[0]), logger))
    outs = engine.create_execution_context().execute({"x": x})
    return engine, outs[engine.output_names[0]]


def want(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("axes,square,affine,eps", [((-1,), "Pow", True, 1e-12), ((-1,), "Mul", False, 1e-5),
                                                    ((-2, -1), "Pow", True, 1e-6), ((2,), "Mul", True, 1e-5)])
def test_decomposed_layernorm_becomes_one_layer_and_matches(axes, square, affine, eps):
    model = ln_model((2, 5, 24), axes, square=square, affine=affine, eps=eps)
    x = (np.random.default_rng().standard_normal((2, 5, 24)) * 3 + 1).astype(np.float32)
    engine, got = run(model, x)
    assert [la.kind for la in engine.network.layers] == [LayerKind.NORMALIZATION]
    np.testing.assert_allclose(got, want(model, x), rtol=1e-5, atol=1e-5)


def test_fp16_layernorm_of_large_activations_does_not_overflow(monkeypatch):
    """|x - mean| up to about 2,000: its square overflows fp16; the fused layer squares in fp32."""
    model = ln_model((2, 6, 64))
    x = (np.random.default_rng().standard_normal((2, 6, 64)) * 600).astype(np.float32)
    ref = want(model, x)
    _, got = run(model, x, fp16=True)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, rtol=1e-2, atol=1e-2 * np.abs(ref).max())
    without = tuple(st for st in optimizer.DEFAULT_PIPELINE if st.name != "layernorm")
    monkeypatch.setattr(optimizer, "DEFAULT_PIPELINE", without)  # the layers as exported, each stored in fp16
    _, unfused = run(model, x, fp16=True)
    assert np.abs(unfused - ref).max() > 0.1 * np.abs(ref).max()


@pytest.mark.parametrize("case", ["other_axes", "shared_difference"])
def test_what_is_not_a_layernorm_stays_as_it_is(case):
    kw = {"var_axes": (-2,)} if case == "other_axes" else {"extra_output": True}
    model = ln_model((2, 5, 24), **kw)
    x = np.random.default_rng().standard_normal((2, 5, 24)).astype(np.float32)
    engine, got = run(model, x)
    assert LayerKind.NORMALIZATION not in {la.kind for la in engine.network.layers}
    np.testing.assert_allclose(got, want(model, x), rtol=1e-5, atol=1e-5)
