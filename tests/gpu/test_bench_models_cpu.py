"""The benchmark's torchvision models are fit for an fp16 comparison (bench/gpu_torchvision.py).

Random-init torchvision MobileNetV2 and EfficientNet-B0 have logits below fp16's smallest
subnormal, so every fp16 engine outputs zeros and the GPU peers benchmark reported "relative L2
1.0" for them. These tests pin the cause and the preparation that removes it: after batch-norm
calibration the logits are O(1) and the FP16 engine, through the real builder and runtime (GPU
backend where CUDA is present, the reference backend elsewhere), lands within fp16 tolerance of
torch fp32. Skipped where torch or torchvision cannot be imported.

The benchmark's own helpers need neither torch nor a GPU and are checked here too: the peers
table and ``--merge`` with rows that have, lack or skip the hetrt INT8 measurement, and
``gpu_int8.BatchOneRanges`` (calibrate once per model at batch 1) through the real builder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

try:
    import torch
    import torchvision  # noqa: F401

    TORCH_MISSING = ""
except Exception as e:  # ImportError, or a torchvision built for another torch
    TORCH_MISSING = f"torch/torchvision unavailable: {e}"

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import gpu_int8  # noqa: E402
import gpu_peers  # noqa: E402
import gpu_torchvision as tv  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from engine.builder import BuilderConfig, build_from_onnx  # noqa: E402
from engine.ir.logger import Logger, Severity  # noqa: E402
from engine.quantization import make_calibrator, ranges  # noqa: E402
from engine.runtime import Runtime  # noqa: E402

FP16_TINY = 6e-8  # smallest fp16 subnormal
needs_torch = pytest.mark.skipif(bool(TORCH_MISSING), reason=TORCH_MISSING)


@needs_torch
@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0"])
def test_random_init_underflows_fp16_and_calibration_fixes_it(name):
    x = torch.rand(1, 3, 224, 224)
    torch.manual_seed(0)
    raw = getattr(torchvision.models, tv.MODELS[name])(weights=None).eval()
    with torch.no_grad():
        assert raw(x).abs().max().item() < FP16_TINY  # the cause: nothing an fp16 engine can represent
    model = tv.calibrate_batchnorm(raw, batches=2, batch=8)
    with torch.no_grad():
        ref = model(x).double().numpy()
    assert np.abs(ref).max() > 1e-2
    plan = build_from_onnx(onnx.load_from_string(tv.export_onnx(model, 1)), BuilderConfig(fp16=True, batch=1),
                           Logger(Severity.ERROR))
    engine = Runtime(Logger(Severity.ERROR)).deserialize(plan)
    got = engine.create_execution_context().execute({engine.input_names[0]: x.numpy()})[engine.output_names[0]]
    rel = np.linalg.norm(got.astype(np.float64) - ref) / np.linalg.norm(ref)
    assert rel < 3e-2, f"relative L2 {rel:.2e} against torch fp32"


@needs_torch
def test_vit_zero_head_is_redrawn_so_outputs_can_be_compared():
    """torchvision's ViT head starts at exact zeros: every engine's logits are 0 and the benchmark's
    relative L2 error was 0 / 0."""
    x = torch.rand(1, 3, 224, 224)
    torch.manual_seed(0)
    raw = torchvision.models.vit_b_16(weights=None).eval()
    with torch.no_grad():
        assert raw(x).abs().max().item() == 0.0
    model = tv.load("vit_b_16")
    with torch.no_grad():
        out = model(x)
    assert out.std().item() > 1e-2
    assert tv.randomize_zero_weights(model) == []


# ---------------------------------------------------------------------------------------------
# bench helpers (no torch, no GPU)


def _stats(median: float) -> dict[str, float]:
    return {"median": median, "min": median * 0.99, "max": median * 1.01}


def _row(model: str, batch: int, int8: object = None) -> dict:
    """A gpu_peers row as the benchmark writes it; ``int8`` None leaves the field out (older files)."""
    row = {"model": model, "batch": batch,
           "hetrt_fp16": {"ms": _stats(2.0), "build_s": 3.6, "launches": 59, "arena_bytes": 1000,
                          "activation_bytes_without_reuse": 8000, "rel_l2_vs_torch_fp32": 0.036},
           "eager": _stats(3.4), "eager_cuda_graph": _stats(2.6), "torch_compile": _stats(1.6),
           "torch_fp16_rel_l2_vs_torch_fp32": 0.032, "valid": True,
           "jax_jit": "not run: the JAX peer exists for ResNet-50 only (bench/gpu_jax_resnet.py)"}
    if int8 is not None:
        row["hetrt_int8"] = int8
    return row


INT8_ROW = {"ms": _stats(1.25), "build_s": 4.1, "launches": 60, "int8_convs": 54, "fallback_layers": [],
            "ranges": "minmax on one image, the batch-1 build's", "rel_l2_vs_torch_fp32": 0.05,
            "rel_l2_vs_hetrt_fp16": 0.024}


def _cell(text: str, model: str, batch: int, title: str, width: int) -> str:
    """The cell of column ``title`` (right-aligned under it, ``width`` wide) in the row of (model, batch)."""
    header, *lines = text.splitlines()
    [line] = [ln for ln in lines if ln.split()[:2] == [model, str(batch)]]
    end = header.index(title) + len(title)
    return line[end - width:end].strip()


def test_peers_table_int8_columns():
    rows = [_row("resnet50", 32, INT8_ROW),
            _row("resnet50", 256, {**INT8_ROW, "ms": "not timed: not one CUDA graph", "fallback_layers": ["c1"]}),
            _row("mobilenet_v2", 32, gpu_peers.INT8_NOT_RUN.format(model="mobilenet_v2")),
            _row("vit_b_16", 32, gpu_peers.hetrt_int8_entry("vit_b_16", b"", 32, None, "", 1, 1, None, None, None)),
            _row("efficientnet_b0", 32),  # a row from before the INT8 field
            {"model": "efficientnet_b0", "batch": 256, "error": "RuntimeError: boom"}]
    text = gpu_peers.table(rows)
    assert _cell(text, "resnet50", 32, "hetrt ms", 8) == "2.000"
    assert _cell(text, "resnet50", 32, "int8 ms", 8) == "1.250"
    assert _cell(text, "resnet50", 32, "fp16/int8", 9) == "1.60"
    for model, batch in (("resnet50", 256), ("mobilenet_v2", 32), ("efficientnet_b0", 32), ("vit_b_16", 32)):
        assert _cell(text, model, batch, "int8 ms", 8) == "n/a"
        assert _cell(text, model, batch, "fp16/int8", 9) == "n/a"
    for model, batch in (("resnet50", 32), ("resnet50", 256), ("mobilenet_v2", 32), ("efficientnet_b0", 32)):
        assert _cell(text, model, batch, "eager ms", 8) == "3.400"  # the peer columns still line up
        assert _cell(text, model, batch, "eager/h", 7) == "1.70"
        assert _cell(text, model, batch, "img/s hetrt", 11) == str(round(batch / 2.0 * 1e3))
    assert "error: RuntimeError: boom" in text
    assert "INT8" in text.splitlines()[-1]


def test_peers_merge_keeps_rows_with_and_without_int8(tmp_path):
    path = tmp_path / "peers.json"
    old = [_row("resnet50", 1, INT8_ROW), _row("resnet50", 32), _row("mobilenet_v2", 1, "not run: --no-int8")]
    old[0]["measured"] = "2026-01-02T00:00:00+00:00"
    path.write_text(json.dumps({"environment": {"date": "2026-01-01T00:00:00+00:00"}, "rows": old}))
    kept = gpu_peers._kept_rows(path, {("resnet50", 32)})
    assert [(r["model"], r["batch"]) for r in kept] == [("resnet50", 1), ("mobilenet_v2", 1)]
    assert [r["measured"] for r in kept] == ["2026-01-02T00:00:00+00:00", "2026-01-01T00:00:00+00:00"]
    assert kept[0]["hetrt_int8"] == INT8_ROW
    merged = gpu_peers._ordered([_row("resnet50", 32)] + kept)
    assert [(r["model"], r["batch"]) for r in merged] == [("resnet50", 1), ("resnet50", 32), ("mobilenet_v2", 1)]
    assert len(gpu_peers.table(merged).splitlines()) == 5


def test_int8_set_covers_the_depthwise_networks_and_names_the_rest():
    assert {"resnet50", "mobilenet_v2", "efficientnet_b0"} <= set(gpu_peers.INT8_MODELS)
    reason = gpu_peers.hetrt_int8_entry("vit_b_16", b"", 1, None, "", 1, 1, None, None, None)
    assert reason.startswith("not run:") and "vit_b_16" in reason and "INT8_MODELS" in reason


def _conv_onnx(batch: int):
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(8, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["logits"])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            [batch, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 8, 8, 8])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _int8_build(batch: int) -> bytes:
    img = np.random.default_rng(1).random((1, 3, 8, 8), dtype=np.float32)
    cal = make_calibrator("minmax", [{"input": np.broadcast_to(img, (batch, 3, 8, 8))}])
    return build_from_onnx(_conv_onnx(batch), BuilderConfig(fp16=True, int8=True, batch=batch, calibrator=cal),
                           Logger(Severity.ERROR))


def test_batch_one_ranges_calibrates_once_per_model(monkeypatch):
    calls: list[tuple[int, ...]] = []
    real = ranges.amax_table

    def counting(network, calibrator, progress=None):
        calls.append(network.tensors[network.inputs[0]].shape)
        return real(network, calibrator, progress)

    monkeypatch.setattr(ranges, "amax_table", counting)
    with gpu_int8.BatchOneRanges() as br:
        with pytest.raises(gpu_int8.MissingBatchOneRanges, match="batch-1 build must come first"), br.build("a", 4):
            pass
        for model in ("a", "b"):
            for batch in (1, 4, 1):
                with br.build(model, batch):
                    plan = _int8_build(batch)
                engine = Runtime(Logger(Severity.ERROR)).deserialize(plan)
                out = engine.create_execution_context().execute({"input": np.ones((batch, 3, 8, 8), np.float32)})
                assert out["logits"].shape == (batch, 8, 8, 8)
        with pytest.raises(RuntimeError, match="outside BatchOneRanges.build"):
            _int8_build(1)  # a build outside build(): whose ranges would it get?
    assert calls == [(1, 3, 8, 8), (1, 3, 8, 8)]  # once per model, at batch 1
    assert ranges.amax_table is counting  # restored on leaving the with-block
