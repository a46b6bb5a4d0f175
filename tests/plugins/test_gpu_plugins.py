"""Plugins on the GPU backend (H100): CuPy implementations equal the reference ones, and a GPU
partition runs plugin layers between its CUDA graphs."""

from __future__ import annotations

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

import cupy  # noqa: E402
from test_bundled import CONFIGS, _detections, _plugin_net  # noqa: E402
from test_detector import detector  # noqa: E402

from backends import reference  # noqa: E402
from backends.gpu.backend import GpuPartition  # noqa: E402
from engine.builder import BuilderConfig, build_from_onnx  # noqa: E402
from engine.ir.dtypes import DataType  # noqa: E402
from engine.plan import deserialize  # noqa: E402
from engine.plugin.bundled import nms, reorg  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.fixture
def rng():
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print(f"seed {seed}")
    return np.random.default_rng(seed)


@pytest.mark.parametrize("fields", CONFIGS)
def test_nms_gpu_equals_reference(rng, fields):
    b, s = _detections(rng, n=3, boxes=300, classes=5)
    full = {"background_class": -1, "score_activation": 0, "class_agnostic": 0, "box_coding": 0} | fields
    want = nms.efficient_nms_reference(b, s, **full)
    stream = cupy.cuda.Stream(non_blocking=True)
    got = nms.efficient_nms_gpu(cupy.asarray(b), cupy.asarray(s), stream=stream, **full)
    stream.synchronize()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(cupy.asnumpy(g), w)


def test_reorg_gpu_equals_reference(rng):
    x = rng.standard_normal((2, 32, 12, 12)).astype(np.float32)
    got = reorg.reorg_gpu(cupy.asarray(x), 2, stream=cupy.cuda.Stream())
    np.testing.assert_array_equal(cupy.asnumpy(got), reorg.reorg_reference(x, 2))


def test_gpu_partition_runs_plugin_layers(rng):
    net = _plugin_net("hetrt::Reorg", {"x": ((1, 16, 8, 8), DataType.FLOAT)}, stride=2)
    x = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)
    part = GpuPartition(net, [la.name for la in net.layers])
    assert part.fallback_layers == ["p"]  # its own unit, dispatched to the plugin's gpu implementation
    got = part.create_context().execute({"x": x})
    want = reference.execute(net, {"x": x})
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_detector_on_gpu_backend_equals_reference(rng):
    model, _ = detector(rng)
    net = deserialize(build_from_onnx(model, BuilderConfig(fp16=True))).network
    x = rng.standard_normal(net.tensors["x"].shape).astype(np.float32)
    got = GpuPartition(net, [la.name for la in net.layers]).create_context().execute({"x": x})
    # the heads run in FP16 kernels on the GPU: compare the detections on the GPU's own heads
    want = nms.efficient_nms_reference(got["boxes"].astype(np.float32), got["scores"].astype(np.float32),
                                       **net.layers[-1].params.field_values())
    for name, w in zip(("num", "det_boxes", "det_scores", "det_classes"), want):
        np.testing.assert_array_equal(got[name].astype(w.dtype), w, err_msg=name)
