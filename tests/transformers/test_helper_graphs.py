"""ViT- and Swin-style graphs (onnx.helper, no PyTorch needed) end to end against ONNX Runtime.

Both have a symbolic batch axis 'N' that only the build binds (``BuilderConfig.batch`` and
``--batch``/``--shapes`` on the command line); every model runs through build → plan bytes →
runtime on the reference backend at batch 1 and 3, in FP32 and FP16.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import swin_like, vit_like

from engine.builder import BuilderConfig, build_from_onnx
from engine.cli import main
from engine.ir.errors import ParserError
from engine.ir.layers import LayerKind
from engine.ir.logger import Logger, Severity
from engine.onnx_parser import parse
from engine.runtime import Runtime

ort = pytest.importorskip("onnxruntime")

MODELS = {"vit": (vit_like, (3, 32, 32)), "swin": (swin_like, (8, 8, 32))}


@pytest.fixture(scope="module", params=sorted(MODELS))
def graph(request):
    make, sample = MODELS[request.param]
    return request.param, make(), sample


def run_ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def assert_matches(got: np.ndarray, want: np.ndarray, rel: float) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=rel, atol=rel * float(np.abs(want).max()))


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_builds_with_bound_batch_and_matches_onnxruntime(graph, batch, fp16):
    _, model, sample = graph
    logger = Logger(Severity.ERROR)
    plan = build_from_onnx(model, BuilderConfig(batch=batch, fp16=fp16), logger)
    context = Runtime(logger).deserialize(plan).create_execution_context()
    x = np.random.default_rng(batch).standard_normal((batch, *sample)).astype(np.float32)
    assert_matches(context.execute({"x": x})["y"], run_ort(model, x), 1e-2 if fp16 else 1e-4)


def test_attention_stays_as_separate_layers_and_shape_ops_fold(graph):
    name, model, sample = graph
    net = parse(model, batch=2)
    kinds = [layer.kind for layer in net.layers]
    assert kinds.count(LayerKind.SOFTMAX) == 2 and kinds.count(LayerKind.MATRIX_MULTIPLY) == 4
    assert kinds.count(LayerKind.NORMALIZATION) == (5 if name == "vit" else 4)
    assert LayerKind.GATHER not in kinds or name == "vit"  # Swin's bias gather is over constants: folded
    folded = {"Shape", "ScatterND", "ConstantOfShape", "Equal", "Where", "Expand"}
    assert not {layer.origin[0].split("_")[0] for layer in net.layers} & folded


def test_unbound_symbolic_dims_are_a_clear_error():
    model = swin_like()
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "H"
    with pytest.raises(ParserError, match=r"graph input 'x' dim 1 \('H'\) is not fixed"):
        parse(model)


def test_cli_build_with_batch_then_run_matches_onnxruntime(tmp_path):
    model = vit_like()
    onnx.save(model, tmp_path / "vit.onnx")
    x = np.random.default_rng(5).standard_normal((3, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    plan = tmp_path / "vit.plan"
    assert main(["build", str(tmp_path / "vit.onnx"), "--shapes", "x:3x3x32x32", "-o", str(plan)]) == 0
    assert main(["run", str(plan), "--iterations", "1", "--duration", "0", "--warmup", "0",
                 "--load-inputs", f"x:{tmp_path / 'x.npy'}", "--save-outputs", str(tmp_path / "o.npz")]) == 0
    assert_matches(np.load(tmp_path / "o.npz")["y"], run_ort(model, x), 1e-4)
