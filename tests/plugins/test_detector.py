"""A small detector: conv backbone, box and score heads, and the EfficientNMS plugin, from ONNX.

Heads are rounded to a coarse grid inside the network, so random inputs give exact score ties and
duplicate/overlapping boxes. The detections must equal an independent numpy NMS applied to the
network's own head outputs, and the heads must match a float64 numpy forward pass.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from nms_reference import nms_batch
from onnx import TensorProto, helper, numpy_helper

from backends.dla.support import supports
from dla_sim.config import ORIN
from engine.builder import BuilderConfig, build_from_onnx
from engine.ir.dtypes import Precision
from engine.ir.layers import LayerKind
from engine.plan import deserialize
from engine.runtime import Runtime

N, C_IN, H, W, CLASSES = 2, 3, 8, 8, 3
NMS = {"score_threshold": 0.3, "iou_threshold": 0.45, "max_output_boxes": 40}


def _init(name, a):
    return numpy_helper.from_array(np.asarray(a), name)


def detector(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    w = {"w1": rng.standard_normal((8, C_IN, 3, 3)).astype(np.float32) * 0.5,
         "b1": rng.standard_normal(8).astype(np.float32) * 0.1,
         "wb": rng.standard_normal((4, 8, 1, 1)).astype(np.float32) * 0.5,
         "ws": rng.standard_normal((CLASSES, 8, 1, 1)).astype(np.float32)}
    consts = {"grid": np.float32(4.0), "levels": np.float32(10.0), "shape_b": np.array([N, 4, H * W]),
              "shape_s": np.array([N, CLASSES, H * W])}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["f"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["f"], ["r"]),
        helper.make_node("Conv", ["r", "wb"], ["bh"]),
        helper.make_node("Reshape", ["bh", "shape_b"], ["bh2"]),
        helper.make_node("Transpose", ["bh2"], ["box_raw"], perm=[0, 2, 1]),
        helper.make_node("Abs", ["box_raw"], ["ba"]),
        helper.make_node("Mul", ["ba", "grid"], ["bm"]),
        helper.make_node("Round", ["bm"], ["br"]),
        helper.make_node("Div", ["br", "grid"], ["boxes"]),
        helper.make_node("Conv", ["r", "ws"], ["sh"]),
        helper.make_node("Sigmoid", ["sh"], ["sg"]),
        helper.make_node("Reshape", ["sg", "shape_s"], ["sg2"]),
        helper.make_node("Transpose", ["sg2"], ["score_raw"], perm=[0, 2, 1]),
        helper.make_node("Mul", ["score_raw", "levels"], ["sm"]),
        helper.make_node("Round", ["sm"], ["sr"]),
        helper.make_node("Div", ["sr", "levels"], ["scores"]),
        helper.make_node("EfficientNMS", ["boxes", "scores"], ["num", "det_boxes", "det_scores", "det_classes"],
                         domain="hetrt", name="nms", **NMS),
    ]
    k = NMS["max_output_boxes"]
    f, i = TensorProto.FLOAT, TensorProto.INT32
    outs = [helper.make_tensor_value_info(n, t, s) for n, t, s in [
        ("box_raw", f, [N, H * W, 4]), ("score_raw", f, [N, H * W, CLASSES]), ("boxes", f, [N, H * W, 4]),
        ("scores", f, [N, H * W, CLASSES]), ("num", i, [N, 1]), ("det_boxes", f, [N, k, 4]),
        ("det_scores", f, [N, k]), ("det_classes", i, [N, k])]]
    graph = helper.make_graph(nodes, "detector", [helper.make_tensor_value_info("x", f, [N, C_IN, H, W])], outs,
                              [_init(n, a) for n, a in {**w, **consts}.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("hetrt", 1)])
    return model, w


def heads_f64(x: np.ndarray, w: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))
    r = np.maximum(np.einsum("nchwij,kcij->nkhw", win, w["w1"].astype(np.float64)) + w["b1"][None, :, None, None], 0)
    bh = np.einsum("nchw,kc->nhwk", r, w["wb"][:, :, 0, 0].astype(np.float64)).reshape(N, H * W, 4)
    sh = np.einsum("nchw,kc->nhwk", r, w["ws"][:, :, 0, 0].astype(np.float64)).reshape(N, H * W, CLASSES)
    return bh, 1 / (1 + np.exp(-sh))


@pytest.fixture
def rng():
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print(f"seed {seed}")
    return np.random.default_rng(seed)


def test_detector_detections_equal_independent_nms(rng):
    model, w = detector(rng)
    engine = Runtime().deserialize(build_from_onnx(model, BuilderConfig()))
    ctx = engine.create_execution_context()
    for _ in range(3):
        x = rng.standard_normal((N, C_IN, H, W)).astype(np.float32)
        out = ctx.execute({"x": x})
        bh, sh = heads_f64(x, w)
        np.testing.assert_allclose(out["box_raw"], bh, rtol=1e-5, atol=1e-5 * np.abs(bh).max())
        np.testing.assert_allclose(out["score_raw"], sh, rtol=1e-5, atol=1e-6)
        boxes, scores = out["boxes"], out["scores"]
        assert len(np.unique(scores)) < scores.size // 10  # many exact ties
        # ONNX float attributes are float32: the thresholds the plugin sees are float32-rounded
        as_onnx = {k: float(np.float32(v)) if isinstance(v, float) else v for k, v in NMS.items()}
        want = nms_batch(boxes, scores, background_class=-1, score_activation=0, class_agnostic=0, box_coding=0,
                         **as_onnx)
        assert want[0].min() > 0
        for name, ref in zip(("num", "det_boxes", "det_scores", "det_classes"), want):
            assert out[name].dtype == ref.dtype, name
            np.testing.assert_array_equal(out[name], ref, err_msg=name)


def test_detector_nms_falls_back_from_the_dla(rng):
    model, _ = detector(rng)
    contents = deserialize(build_from_onnx(model, BuilderConfig(fp16=True)))
    net = contents.network
    nms = next(la for la in net.layers if la.kind is LayerKind.PLUGIN)
    nms.device = None  # a host build pins every layer to the GPU
    verdict = supports(nms, net, Precision.FP16, ORIN)
    assert not verdict and "plugin layer 'hetrt::EfficientNMS'" in verdict.reason


def test_detector_on_dla_places_the_plugin_on_the_gpu(rng):
    model, _ = detector(rng)
    config = BuilderConfig(fp16=True, platform="orin-agx-64gb", default_device="dla", dla_core=0, gpu_fallback=True)
    contents = deserialize(build_from_onnx(model, config))
    nms = next(la for la in contents.network.layers if la.kind is LayerKind.PLUGIN)
    assert nms.device == "gpu"
    assert "plugin layer" in json.dumps(contents.placement)
    assert any(la.device == "dla" for la in contents.network.layers)
    # runs across the simulated DLA and the GPU side; detections follow the engine's own heads
    engine = Runtime().deserialize(build_from_onnx(model, config))
    out = engine.create_execution_context().execute({"x": rng.standard_normal((N, C_IN, H, W)).astype(np.float32)})
    as_onnx = {k: float(np.float32(v)) if isinstance(v, float) else v for k, v in NMS.items()}
    want = nms_batch(out["boxes"].astype(np.float32), out["scores"].astype(np.float32), background_class=-1,
                     score_activation=0, class_agnostic=0, box_coding=0, **as_onnx)
    for name, ref in zip(("num", "det_boxes", "det_scores", "det_classes"), want):
        np.testing.assert_array_equal(out[name].astype(ref.dtype), ref, err_msg=name)
