"""``hetrt::EfficientNMS``: batched non-maximum suppression in the style of TensorRT's EfficientNMS_TRT.

Inputs: ``boxes`` (N, B, 4) shared by all classes, or (N, B, C, 4) / (N, B, 1, 4) per class, and
``scores`` (N, B, C). Outputs: ``num_detections`` (N, 1) int32, ``detection_boxes`` (N, K, 4),
``detection_scores`` (N, K) and ``detection_classes`` (N, K) int32, K = ``max_output_boxes``.

Semantics, per image (documented because exact detections depend on them):

* ``score_activation`` = 1 applies a sigmoid to the scores first; reported scores are activated.
* Candidates are the (box, class) pairs with score > ``score_threshold`` (strictly), skipping
  ``background_class`` (-1: none).
* Candidates are visited in order of descending score; **ties go to the lower box index, then the
  lower class index**. A candidate is kept unless a kept candidate of the same class (any class
  when ``class_agnostic`` = 1) overlaps it with IoU > ``iou_threshold`` (strictly). Visiting stops
  once K are kept. This equals per-class NMS followed by a merge by score.
* IoU is computed in float64 on the boxes' corners: ``box_coding`` 0 reads (x1, y1, x2, y2) in
  either corner order, 1 reads (x_center, y_center, width, height). Boxes are reported as given.
  Boxes whose union area is 0 have IoU 0.
* Unused slots hold zeros, and class -1. There is no pre-NMS top-k cap.

The same code runs on numpy (reference) and CuPy (GPU): the IoU rows are computed on the device in
blocks, and the greedy scan over them runs on the host (the sequential part of NMS).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.ir.plugin_registry import TensorDesc, impl, register

_BLOCK = 512


@register("hetrt::EfficientNMS", version="1")
def efficient_nms_shape(boxes: TensorDesc, scores: TensorDesc, score_threshold: float = 0.0,
                        iou_threshold: float = 0.5, max_output_boxes: int = 100, background_class: int = -1,
                        score_activation: int = 0, class_agnostic: int = 0, box_coding: int = 0,
                        ) -> tuple[TensorDesc, ...]:
    if scores.rank != 3:
        raise ValueError(f"scores must be (batch, boxes, classes), got {scores.shape}")
    n, b, c = scores.shape
    if boxes.shape not in ((n, b, 4), (n, b, 1, 4), (n, b, c, 4)):
        raise ValueError(f"boxes {boxes.shape} must be ({n}, {b}, 4), ({n}, {b}, 1, 4) or ({n}, {b}, {c}, 4) "
                         f"for scores {scores.shape}")
    if boxes.dtype.kind != "f" or scores.dtype.kind != "f":
        raise ValueError("boxes and scores must be float tensors")
    if max_output_boxes < 1:
        raise ValueError(f"max_output_boxes must be >= 1, got {max_output_boxes}")
    if box_coding not in (0, 1) or score_activation not in (0, 1) or class_agnostic not in (0, 1):
        raise ValueError("box_coding, score_activation and class_agnostic must be 0 or 1")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    k = max_output_boxes
    i32 = np.dtype(np.int32)
    return (TensorDesc((n, 1), i32), TensorDesc((n, k, 4), boxes.dtype), TensorDesc((n, k), scores.dtype),
            TensorDesc((n, k), i32))


def _corners(xp: Any, b: Any, box_coding: int) -> Any:
    b = b.astype(xp.float64)
    if box_coding == 1:
        half = b[:, 2:] / 2
        return xp.concatenate([b[:, :2] - half, b[:, :2] + half], axis=1)
    return xp.concatenate([xp.minimum(b[:, :2], b[:, 2:]), xp.maximum(b[:, :2], b[:, 2:])], axis=1)


def _overlaps(xp: Any, corners: Any, classes: Any, rows: slice, iou_threshold: float, agnostic: bool) -> Any:
    """Bool (rows, K): candidate r suppresses candidate j (IoU > threshold, same class unless agnostic)."""
    a = corners[rows, None, :]
    b = corners[None, :, :]
    w = xp.maximum(xp.minimum(a[..., 2], b[..., 2]) - xp.maximum(a[..., 0], b[..., 0]), 0.0)
    h = xp.maximum(xp.minimum(a[..., 3], b[..., 3]) - xp.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = w * h
    area = (corners[:, 2] - corners[:, 0]) * (corners[:, 3] - corners[:, 1])
    union = area[rows, None] + area[None, :] - inter
    safe = xp.where(union > 0, union, 1.0)
    iou = xp.where(union > 0, inter / safe, 0.0)
    over = iou > iou_threshold
    if not agnostic:
        over &= classes[rows, None] == classes[None, :]
    return over


def _host(xp: Any, a: Any) -> np.ndarray:
    return a if xp is np else xp.asnumpy(a)


def _one_image(xp, boxes, scores, score_threshold, iou_threshold, k, background_class, class_agnostic,
               box_coding):
    n_boxes, n_classes = scores.shape
    s = scores.astype(xp.float64)
    valid = s > score_threshold
    if 0 <= background_class < n_classes:
        valid[:, background_class] = False
    box_idx, cls_idx = xp.nonzero(valid)  # row-major: box index, then class
    cand_scores = s[box_idx, cls_idx]
    # descending score; ties: lower box index, then lower class (lexsort: last key is primary). The
    # order is taken by numpy's lexsort on the host for both backends (the scan below runs there
    # anyway): with CuPy's lexsort on the device, a GPU test found another order than numpy's on
    # candidates with exactly equal scores.
    order = np.lexsort((_host(xp, cls_idx), _host(xp, box_idx), -_host(xp, cand_scores)))
    order = xp.asarray(order)
    box_idx, cls_idx, cand_scores = box_idx[order], cls_idx[order], cand_scores[order]
    per_class = boxes.ndim == 3 and boxes.shape[1] > 1
    raw = boxes[box_idx, cls_idx] if per_class else boxes.reshape(n_boxes, 4)[box_idx]
    corners = _corners(xp, raw, box_coding)
    total = int(box_idx.shape[0])
    removed = np.zeros(total, dtype=bool)
    keep: list[int] = []
    block, block_start = None, -1
    for i in range(total):
        if removed[i]:
            continue
        keep.append(i)
        if len(keep) == k:
            break
        if block is None or i >= block_start + _BLOCK:
            block_start = i
            rows = slice(i, min(i + _BLOCK, total))
            block = _host(xp, _overlaps(xp, corners, cls_idx, rows, iou_threshold, bool(class_agnostic)))
        removed |= block[i - block_start]
    keep_idx = np.asarray(keep, dtype=np.int64)
    return keep_idx, _host(xp, raw), _host(xp, cand_scores), _host(xp, cls_idx)


def efficient_nms(xp: Any, boxes: Any, scores: Any, score_threshold: float, iou_threshold: float,
                  max_output_boxes: int, background_class: int, score_activation: int, class_agnostic: int,
                  box_coding: int) -> tuple[np.ndarray, ...]:
    """The four outputs as host numpy arrays (see the module docstring for the semantics)."""
    n = scores.shape[0]
    k = max_output_boxes
    if score_activation:
        scores = 1.0 / (1.0 + xp.exp(-scores.astype(xp.float64)))
    num = np.zeros((n, 1), np.int32)
    out_boxes = np.zeros((n, k, 4), np.dtype(str(boxes.dtype)))
    out_scores = np.zeros((n, k), np.dtype(str(scores.dtype)) if not score_activation else np.float64)
    out_classes = np.full((n, k), -1, np.int32)
    for img in range(n):
        keep, raw, cand_scores, classes = _one_image(xp, boxes[img], scores[img], score_threshold, iou_threshold,
                                                     k, background_class, class_agnostic, box_coding)
        m = len(keep)
        num[img, 0] = m
        out_boxes[img, :m] = raw[keep]
        out_scores[img, :m] = cand_scores[keep]
        out_classes[img, :m] = classes[keep]
    return num, out_boxes, out_scores, out_classes


@impl("hetrt::EfficientNMS", backend="reference")
def efficient_nms_reference(boxes, scores, **fields):
    num, b, s, c = efficient_nms(np, boxes, scores, **fields)
    return num, b, s.astype(np.float32), c


@impl("hetrt::EfficientNMS", backend="gpu")
def efficient_nms_gpu(boxes, scores, stream=None, **fields):
    import cupy

    with stream or cupy.cuda.get_current_stream():
        num, b, s, c = efficient_nms(cupy, boxes, scores, **fields)
        return (cupy.asarray(num), cupy.asarray(b), cupy.asarray(s.astype(np.dtype(str(scores.dtype)))),
                cupy.asarray(c))
