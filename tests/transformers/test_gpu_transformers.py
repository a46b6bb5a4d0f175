"""The transformer graphs on the GPU backend (FP16) against ONNX Runtime FP32; skipped without CUDA.

Same models as the reference-backend tests (onnx.helper ViT/Swin styles; the PyTorch exports when
torch is installed), built with the batch bound at 1 and 3. Tolerance: the GPU suite's FP16 bar
(tests/gpu/test_models.py): relative L2 below 3e-2 and every element within 3e-2·max|ref|.
"""

from __future__ import annotations

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

import onnx  # noqa: E402
from graphs import swin_like, vit_like  # noqa: E402

from engine.builder import BuilderConfig, build_from_onnx  # noqa: E402
from engine.compare import onnxruntime_outputs  # noqa: E402
from engine.ir.logger import Logger, Severity  # noqa: E402
from engine.runtime import Runtime  # noqa: E402

pytestmark = pytest.mark.gpu


def _torch_models() -> dict:
    try:
        import torch
        from test_torch_exports import MODELS, export
    except ImportError:
        return {}
    out = {}
    for name, (make, sample, opset) in MODELS.items():
        torch.manual_seed(0)
        out[f"torch_{name}"] = (lambda make=make, sample=sample, opset=opset:
                                export(make(), torch.randn(2, *sample), opset), sample)
    return out


MODELS = {"vit": (vit_like, (3, 32, 32)), "swin": (swin_like, (8, 8, 32)), **_torch_models()}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_transformer_fp16_on_the_gpu_matches_onnxruntime(name, batch):
    make, sample = MODELS[name]
    model: onnx.ModelProto = make()
    plan = build_from_onnx(model, BuilderConfig(fp16=True, batch=batch), Logger(Severity.ERROR))
    engine = Runtime(Logger(Severity.ERROR)).deserialize(plan)
    assert engine.placement["gpu_backend"] == "gpu"
    x = np.random.default_rng(batch).standard_normal((batch, *sample)).astype(np.float32)
    got = engine.create_execution_context().execute({"x": x})["y"].astype(np.float64)
    ref = np.asarray(next(iter(onnxruntime_outputs(model.SerializeToString(), {"x": x}).values())), np.float64)
    assert got.shape == ref.shape and np.isfinite(got).all()
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 3e-2
    np.testing.assert_allclose(got, ref, rtol=3e-2, atol=3e-2 * float(np.abs(ref).max()))
