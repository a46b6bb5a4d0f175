"""PyTorch-exported transformers (ViT-, Swin-style and nn.TransformerEncoder) end to end.

Each model is exported with a dynamic batch axis (the legacy exporter: its shape arithmetic uses
Mod, Where, Expand, ConstantOfShape, …), built at batch 1 and 3 (the batch bound at build time),
serialized to a plan, loaded by the runtime and compared with ONNX Runtime on the exported model.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import pytest

from engine.builder import BuilderConfig, build_from_onnx
from engine.ir.logger import Logger, Severity
from engine.runtime import Runtime

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from torch_models import CausalEncoder, EinsumAttention, MiniSwin, MiniViT, transformer_encoder  # noqa: E402


def export(module, example, opset: int = 17) -> onnx.ModelProto:
    module.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buf, dynamo=False, opset_version=opset, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return onnx.load_from_string(buf.getvalue())


def run_plan(model: onnx.ModelProto, x: np.ndarray, fp16: bool) -> np.ndarray:
    logger = Logger(Severity.ERROR)
    plan = build_from_onnx(model, BuilderConfig(batch=x.shape[0], fp16=fp16), logger)
    context = Runtime(logger).deserialize(plan).create_execution_context()
    return context.execute({"x": x})["y"]


def run_ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def assert_matches(got: np.ndarray, want: np.ndarray, rel: float) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=rel, atol=rel * scale)


MODELS = {  # name: (module, sample shape without the batch, opset)
    "vit": (lambda: MiniViT(), (3, 32, 32), 17),
    "vit_opset20": (lambda: MiniViT(), (3, 32, 32), 20),  # GELU exported as the Gelu op
    "swin": (lambda: MiniSwin(), (3, 28, 28), 17),  # 7×7 patches: padding to the window folds from Mod
    "swin_v2": (lambda: MiniSwin(cosine=True), (3, 28, 28), 17),  # cosine attention, per-head logit scale
    "encoder": (lambda: transformer_encoder(), (10, 64), 17),
    "encoder_causal": (lambda: CausalEncoder(), (10, 64), 17),
    "einsum": (lambda: EinsumAttention(), (9, 32), 17),  # attention as ONNX Einsum (MaxViT-style)
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def exported(request):
    torch.manual_seed(0)
    make, sample, opset = MODELS[request.param]
    return request.param, export(make(), torch.randn(2, *sample), opset), sample


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_export_builds_at_bound_batch_and_matches_onnxruntime(exported, batch, fp16):
    name, model, sample = exported
    x = np.random.default_rng(batch + 10 * fp16).standard_normal((batch, *sample)).astype(np.float32)
    assert_matches(run_plan(model, x, fp16), run_ort(model, x), 1e-2 if fp16 else 1e-4)


def test_exports_really_contain_the_shape_ops_that_used_to_stop_the_parser(exported):
    name, model, _ = exported
    ops = {n.op_type for n in model.graph.node}
    expected = {"vit": {"Expand", "Concat", "Shape", "Tanh"}, "vit_opset20": {"Gelu", "Mod", "Where"},
                "swin": {"Mod", "ScatterND", "Range", "Where", "Equal", "Expand", "Gather", "Slice"},
                "swin_v2": {"ReduceL2", "Clip", "Exp", "Sigmoid", "ScatterND"},
                "encoder": {"Mod", "Softmax", "LayerNormalization"}, "encoder_causal": {"Trilu", "Where"},
                "einsum": {"Einsum"}}[name]
    assert expected <= ops, sorted(ops)
