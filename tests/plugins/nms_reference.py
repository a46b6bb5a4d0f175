"""An independent NMS for the tests: per-class greedy NMS in plain Python, then a merge by score.

Written from the documented semantics of hetrt::EfficientNMS (engine/plugin/bundled/nms.py), not
from its code: loops instead of blocked IoU matrices, per-class passes instead of one global scan.
"""

from __future__ import annotations

import math

import numpy as np


def _corners(b, center: bool):
    b = [float(v) for v in b]
    if center:
        return (b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2)
    return (min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3]))


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms_image(boxes, scores, score_threshold, iou_threshold, max_output_boxes, background_class=-1,
              score_activation=0, class_agnostic=0, box_coding=0):
    """List of (score, box index, class) kept for one image, in output order."""
    n, c = scores.shape
    cands = []
    for i in range(n):
        for k in range(c):
            if k == background_class:
                continue
            s = float(scores[i, k])
            if score_activation:
                s = 1.0 / (1.0 + math.exp(-s))
            if s > score_threshold:
                box = boxes[i, k] if boxes.ndim == 3 and boxes.shape[1] > 1 else boxes.reshape(n, 4)[i]
                cands.append((s, i, k, _corners(box, box_coding == 1)))
    groups = {0: cands} if class_agnostic else {}
    if not class_agnostic:
        for cand in cands:
            groups.setdefault(cand[2], []).append(cand)
    kept = []
    for group in groups.values():
        group = sorted(group, key=lambda t: (-t[0], t[1], t[2]))
        survivors = []
        for cand in group:
            if all(_iou(cand[3], s[3]) <= iou_threshold for s in survivors):
                survivors.append(cand)
        kept += survivors
    kept.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [(s, i, k) for s, i, k, _ in kept[:max_output_boxes]]


def nms_batch(boxes, scores, **fields):
    """The four EfficientNMS outputs computed from ``nms_image``."""
    n = scores.shape[0]
    k = fields["max_output_boxes"]
    num = np.zeros((n, 1), np.int32)
    out_b = np.zeros((n, k, 4), np.float32)
    out_s = np.zeros((n, k), np.float32)
    out_c = np.full((n, k), -1, np.int32)
    per_class = boxes.ndim == 4 and boxes.shape[2] > 1
    for img in range(n):
        kept = nms_image(boxes[img], scores[img], **fields)
        num[img, 0] = len(kept)
        for j, (s, i, c) in enumerate(kept):
            out_b[img, j] = boxes[img, i, c] if per_class else boxes[img].reshape(-1, 4)[i]
            out_s[img, j] = s
            out_c[img, j] = c
    return num, out_b, out_s, out_c
