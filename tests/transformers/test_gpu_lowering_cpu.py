"""How the GPU lowers a ViT-style encoder (``graphs.vit_like``), checked without CUDA: every
attention block is one fused launch reading Q, K and V straight from the projections, and every
residual add after an FC is folded into that FC's epilogue, at batch 1 and at a batch that merges
with the heads. The GPU tests (``test_gpu_transformers``) check the numbers against ONNX Runtime."""

from __future__ import annotations

import pytest
from graphs import vit_like

from backends.gpu.backend import split_segments
from backends.gpu.kernels import attention_src as att
from backends.gpu.lower import lower
from engine.builder import Builder, BuilderConfig
from engine.ir.layers import ElementWiseOp, LayerKind
from engine.ir.logger import Logger, Severity
from engine.onnx_parser import parse


@pytest.mark.parametrize("batch", [1, 3])
def test_vit_encoder_lowers_to_fused_attention_and_residual_epilogues(batch):
    layers = 2
    net = Builder(Logger(Severity.ERROR)).build(parse(vit_like(layers=layers), {"x": (batch, 3, 32, 32)}),
                                                BuilderConfig(fp16=True)).network
    (ok, seg), = split_segments(net, [la.name for la in net.layers])
    assert ok
    low = lower(net, seg, list(net.outputs))
    attention = [op for op in low.ops if op.block == att.THREADS]
    assert len(attention) == layers
    producers = {w: op for op in low.ops for w in op.writes}
    for op in attention:  # Q, K, V are read from the FCs that project them, not from copies
        assert all(producers[r].kind in ("conv", "conv_cublas") for r in op.reads), op.reads
    adds = [la for la in net.layers if la.kind is LayerKind.ELEMENTWISE and la.params.op is ElementWiseOp.SUM
            and any(getattr(net.producer(t), "kind", None) is LayerKind.FULLY_CONNECTED for t in la.inputs)]
    assert len(adds) == 2 * layers  # after the attention's output projection and after the MLP
    labels = {op.label for op in low.ops}
    assert not {la.name for la in adds} & labels  # no launch of their own
    fused = [op for op in low.ops if op.kind.startswith("conv") and op.info.get("res")]
    assert {op.writes[0] for op in fused} >= {la.outputs[0] for la in adds}
