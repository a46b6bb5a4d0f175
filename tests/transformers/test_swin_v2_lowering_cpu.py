"""Swin V2's scaled cosine attention, exported from PyTorch (``torch_models.MiniSwin(cosine=True)``),
through the GPU lowering without CUDA: every window attention is one fused launch (Q and K
normalized as their tiles land, the product's per-head logit scale and position bias applied to
each score), and the lowered network run in the CUDA
emulator matches ONNX Runtime on the exported model at fp16 tolerance."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from backends.gpu.backend import split_segments
from backends.gpu.kernels import attention_src as att
from backends.gpu.lower import lower
from engine.builder import Builder, BuilderConfig
from engine.ir.logger import Logger, Severity
from engine.onnx_parser import parse

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
sys.path.insert(0, str(Path(__file__).parents[1] / "gpu"))
from cuda_emu import compiler  # noqa: E402
from emu_lowered import run_lowered  # noqa: E402
from test_torch_exports import export  # noqa: E402
from torch_models import MiniSwin  # noqa: E402


@pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")
def test_cosine_window_attention_is_one_launch_a_block_and_runs_like_onnxruntime(tmp_path):
    torch.manual_seed(0)
    model = export(MiniSwin(cosine=True), torch.randn(2, 3, 28, 28))
    net = Builder(Logger(Severity.ERROR)).build(parse(model, {"x": (2, 3, 28, 28)}), BuilderConfig(fp16=True)).network
    (ok, seg), = split_segments(net, [la.name for la in net.layers])
    assert ok
    low = lower(net, seg, list(net.outputs))
    fused = [op for op in low.ops if op.block == att.THREADS]
    assert len(fused) == 3  # two blocks in stage 1, one in stage 2
    for op in fused:  # the Q and K normalizations and the score map inside each launch
        assert {"Softmax", "MatMul", "ReduceL2", "Div", "Mul"} <= set(re.findall(r"/(\w+?)(?:_\d+)?\b", op.label))
    assert not [op for op in low.ops if "ReduceL2" in op.label and op.block != att.THREADS]
    x = np.random.default_rng().standard_normal((2, 3, 28, 28)).astype(np.float32)
    (got,) = run_lowered(low, {net.inputs[0]: x}, tmp_path).values()
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    rel = np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want)
    assert rel < 1e-2
