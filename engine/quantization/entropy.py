"""Entropy (KL-divergence) threshold selection, TensorRT's "entropy calibration".

Published description: S. Migacz, "8-bit Inference with TensorRT", GPU Technology Conference
2017 (slides 29-39), and NVIDIA's reference implementation of the same procedure in
pytorch-quantization (``pytorch_quantization/calib/histogram.py``, ``_compute_amax_entropy``):

1. histogram |x| of the tensor over the calibration set in 2048 bins;
2. for every candidate threshold i = 128 … 2048 bins:
   * P = bins[0:i], with every count beyond the threshold added to its last bin (clipping);
   * Q = bins[0:i] merged into 128 levels (bin k goes to level floor(128·k / i)), each level's
     total spread uniformly over the bins of the level that were non-zero in the histogram;
   * divergence KL(P‖Q) of the normalised distributions;
3. the threshold is the upper edge of bin i with the smallest divergence (the last one on ties).

As in the reference implementation, bin 0 takes the count of bin 1 before the search, so the
spike of exact zeros after a ReLU does not dominate the divergence.

hetrt's one addition: thresholds below the median of |x| are not candidates. For a tensor whose
values all sit far from zero (e.g. a projection shortcut's output in [2.9, 7.5]), the threshold
at the first non-empty bin clips everything into one bin, and P and Q are then the same single
spike: KL = 0, a "perfect" threshold that destroys the tensor (measured: 4.6 dB SQNR on
light_resnet50). Clipping half the values is never a sane range, so the search starts there.
"""

from __future__ import annotations

import numpy as np

from .histogram import AbsHistogram

LEVELS = 128


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p‖q) of two count vectors (normalised here); +inf where q = 0 < p."""
    p = p / p.sum()
    q = q / q.sum()
    nz = p > 0
    if np.any(q[nz] == 0):
        return float("inf")
    return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))


def entropy_threshold(hist: AbsHistogram, start_bin: int = LEVELS, stride: int = 1) -> float:
    """The clipping threshold (amax) minimising KL(P‖Q); the histogram's range if it is all zeros."""
    counts = hist.counts.astype(np.float64).copy()
    n = counts.size
    if hist.range == 0.0 or counts.sum() == 0:
        return hist.amax
    if n > 1:
        counts[0] = counts[1]
    suffix = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])  # suffix[i] = sum(counts[i:])
    best_i, best = n, float("inf")
    median_bin = int(np.searchsorted(np.cumsum(hist.counts), hist.counts.sum() / 2.0, side="left")) + 1
    start = min(max(start_bin, median_bin), n)
    for i in range(start, n + 1, stride):
        ref = counts[:i].copy()
        ref[i - 1] += suffix[i]
        level = (np.arange(i) * LEVELS) // i
        nonzero = counts[:i] != 0
        sums = np.bincount(level, weights=counts[:i], minlength=LEVELS)
        members = np.bincount(level, weights=nonzero.astype(np.float64), minlength=LEVELS)
        per = np.divide(sums, members, out=np.zeros(LEVELS), where=members > 0)
        cand = np.where(nonzero, per[level], 0.0)
        if cand.sum() == 0:
            continue
        d = kl_divergence(ref, cand)
        if d <= best:
            best, best_i = d, i
    return float(best_i * hist.bin_width)
