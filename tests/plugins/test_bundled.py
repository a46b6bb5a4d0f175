"""The bundled plugins against independent references: EfficientNMS and darknet's Reorg."""

from __future__ import annotations

import numpy as np
import pytest
from nms_reference import nms_batch

from backends.reference import execute
from engine.ir.dtypes import DataType
from engine.ir.errors import NetworkError
from engine.ir.layers import PluginParams
from engine.ir.network import Network
from engine.ir.plugin_registry import canonical_fields, find
from engine.plugin.bundled import nms


def _rng(request) -> np.random.Generator:
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print(f"seed {seed}")
    return np.random.default_rng(seed)


def _darknet_reorg(x: np.ndarray, stride: int) -> np.ndarray:
    """darknet's reorg_cpu(..., forward=0) on the flat buffers, index by index."""
    b_, c, h, w = x.shape
    flat = x.ravel()
    out = np.empty_like(flat)
    out_c = c // (stride * stride)
    for b in range(b_):
        for k in range(c):
            for j in range(h):
                for i in range(w):
                    in_index = i + w * (j + h * (k + c * b))
                    c2 = k % out_c
                    offset = k // out_c
                    w2 = i * stride + offset % stride
                    h2 = j * stride + offset // stride
                    out_index = w2 + w * stride * (h2 + h * stride * (c2 + out_c * b))
                    out[in_index] = flat[out_index]
    return out.reshape(b_, c * stride * stride, h // stride, w // stride)


def _plugin_net(key: str, inputs: dict[str, tuple[tuple[int, ...], DataType]], **fields) -> Network:
    spec = find(key)
    net = Network("plugin")
    for name, (shape, dtype) in inputs.items():
        net.add_input(name, shape, dtype)
    params = PluginParams(spec.name, spec.version, spec.namespace, canonical_fields(spec, fields, key))
    layer = net.add_layer(params, list(inputs), name="p")
    for t in layer.outputs:
        net.mark_output(t)
    return net


@pytest.mark.parametrize("shape,stride", [((1, 8, 4, 6), 2), ((2, 18, 6, 3), 3), ((1, 4, 2, 2), 2)])
def test_reorg_matches_darknet(request, shape, stride):
    x = _rng(request).standard_normal(shape).astype(np.float32)
    net = _plugin_net("hetrt::Reorg", {"x": (shape, DataType.FLOAT)}, stride=stride)
    got = execute(net, {"x": x})
    np.testing.assert_array_equal(next(iter(got.values())), _darknet_reorg(x, stride))


def test_reorg_is_not_onnx_space_to_depth(request):
    """darknet's channel order differs from SpaceToDepth's: a test that would catch a swap."""
    x = _rng(request).standard_normal((1, 8, 4, 4)).astype(np.float32)
    n, c, h, w = x.shape
    s2d = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 3, 5, 1, 2, 4).reshape(n, c * 4, h // 2, w // 2)
    assert not np.array_equal(_darknet_reorg(x, 2), s2d)


def test_reorg_rejects_bad_shapes():
    with pytest.raises(NetworkError, match="stride 2 must divide"):
        _plugin_net("hetrt::Reorg", {"x": ((1, 6, 4, 4), DataType.FLOAT)}, stride=2)


def _detections(rng, n=2, boxes=40, classes=3, per_class=False, grid=4.0):
    """Random boxes on a coarse grid (duplicates and overlaps) and scores with many exact ties."""
    shape = (n, boxes, classes, 4) if per_class else (n, boxes, 4)
    xy = rng.integers(0, 8, size=shape[:-1] + (2,)) / grid
    wh = rng.integers(1, 6, size=shape[:-1] + (2,)) / grid
    b = np.concatenate([xy, xy + wh], axis=-1).astype(np.float32)
    b[..., 1, :] = b[..., 0, :]  # an exact duplicate box
    flip = rng.random(shape[:-1]) < 0.2
    b[flip] = b[flip][:, [2, 3, 0, 1]]  # corners in the other order
    s = (rng.integers(0, 10, size=(n, boxes, classes)) / 10).astype(np.float32)
    return b, s


CONFIGS = [
    dict(score_threshold=0.25, iou_threshold=0.5, max_output_boxes=20),
    dict(score_threshold=0.0, iou_threshold=0.3, max_output_boxes=7),
    dict(score_threshold=0.1, iou_threshold=0.5, max_output_boxes=50, class_agnostic=1),
    dict(score_threshold=0.45, iou_threshold=0.6, max_output_boxes=30, background_class=0),
    dict(score_threshold=0.55, iou_threshold=0.4, max_output_boxes=25, score_activation=1),
    dict(score_threshold=0.2, iou_threshold=0.5, max_output_boxes=60, box_coding=1),
    dict(score_threshold=0.3, iou_threshold=0.0, max_output_boxes=10),
]


@pytest.mark.parametrize("fields", CONFIGS)
@pytest.mark.parametrize("per_class", [False, True])
def test_nms_matches_independent_reference(request, fields, per_class):
    rng = _rng(request)
    b, s = _detections(rng, per_class=per_class)
    full = {"background_class": -1, "score_activation": 0, "class_agnostic": 0, "box_coding": 0} | fields
    want = nms_batch(b, s, **full)
    net = _plugin_net("hetrt::EfficientNMS", {"boxes": (b.shape, DataType.FLOAT), "scores": (s.shape, DataType.FLOAT)},
                      **fields)
    got = list(execute(net, {"boxes": b, "scores": s}).values())
    assert int(want[0].sum()) > 0
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


def test_nms_tie_breaking_is_documented_order():
    """Equal scores: the lower box index wins, then the lower class."""
    boxes = np.array([[[0, 0, 1, 1], [0, 0, 1, 1], [5, 5, 6, 6]]], np.float32)
    scores = np.array([[[0.9, 0.9], [0.9, 0.9], [0.9, 0.2]]], np.float32)
    num, b, s, c = nms.efficient_nms(np, boxes, scores, 0.5, 0.5, 10, -1, 0, 0, 0)
    assert num[0, 0] == 3
    np.testing.assert_array_equal(c[0, :3], [0, 1, 0])  # (box 0, class 0), (box 0, class 1), (box 2, class 0)
    np.testing.assert_array_equal(b[0, :3], boxes[0, [0, 0, 2]])
    num, b, s, c = nms.efficient_nms(np, boxes, scores, 0.5, 0.5, 10, -1, 0, 1, 0)  # agnostic
    assert num[0, 0] == 2
    np.testing.assert_array_equal(c[0, :2], [0, 0])
    np.testing.assert_array_equal(c[0, 2:], -1)
    np.testing.assert_array_equal(b[0, 2:], 0)


def test_nms_rejects_mismatched_shapes():
    with pytest.raises(NetworkError, match="boxes"):
        _plugin_net("hetrt::EfficientNMS", {"boxes": ((1, 5, 4), DataType.FLOAT),
                                            "scores": ((1, 6, 2), DataType.FLOAT)})
