"""onnx's own backend test suite run against hetrt (``engine.onnx_backend``).

Only the families in ``tests/onnx_conformance_lists.py`` are included: the node tests of every op
the parser claims, the nine ``light`` zoo models (build → plan → load → run), and the
PyTorch-converted/operator cases. Everything else is skipped by the runner ("no matched include
pattern"); known gaps inside included families are excluded with a reason.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import onnx.backend.test

from engine.onnx_backend import HetrtBackend

sys.path.insert(0, str(Path(__file__).parent))
from onnx_conformance_lists import EXCLUDE, MODEL_INCLUDE, NODE_INCLUDE  # noqa: E402

logging.getLogger("hetrt.onnx_parser").setLevel(logging.ERROR)  # opset conversions are expected here
warnings.filterwarnings("ignore", category=RuntimeWarning)

backend_test = onnx.backend.test.BackendTest(HetrtBackend, __name__)
for _patterns in list(NODE_INCLUDE.values()) + list(MODEL_INCLUDE.values()):
    for _p in _patterns:
        backend_test.include(_p)
for _p, _reason in EXCLUDE:
    backend_test.exclude(_p)

globals().update(backend_test.test_cases)


def test_light_squeezenet_logits():
    """The light squeezenet (excluded above) built, planned and run through the backend on a fresh
    random image: its pre-softmax logits (a well-conditioned output) match ONNX Runtime's to float32
    accumulation, and its softmax output is a probability vector over the 1000 classes."""
    import numpy as np
    import pytest
    from onnx import shape_inference

    ort = pytest.importorskip("onnxruntime")
    model = onnx.load(Path(onnx.__file__).parent / "backend/test/data/light/light_squeezenet.onnx")
    logits = next(v for v in shape_inference.infer_shapes(model).graph.value_info
                  if v.name == model.graph.node[-1].input[0])
    model.graph.output.append(logits)
    x = np.random.default_rng().uniform(0, 1, (1, 3, 224, 224)).astype(np.float32)
    probs, ours = HetrtBackend.prepare(model, "CPU").run([x])
    weights = {i.name for i in model.graph.initializer}  # this opset-9 model lists them as inputs too
    image = next(i.name for i in model.graph.input if i.name not in weights)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        [logits.name], {image: x})[0]
    np.testing.assert_allclose(ours, ref, rtol=1e-5)
    assert probs.shape == (1, 1000, 1, 1) and abs(float(probs.sum()) - 1.0) < 1e-4 and probs.min() >= 0
