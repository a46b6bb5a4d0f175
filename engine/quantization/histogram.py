"""A histogram of |x| over [0, range) that grows with the data, for range calibration.

TensorRT's calibrators see the calibration set as a stream of batches, so the final range of a
tensor is not known when its first batch arrives. The histogram starts at the first batch's
max |x| and, when a later batch exceeds the range, doubles the range as often as needed, merging
neighbouring bin pairs each time: rebinning is exact (no counts are split), so the result does
not depend on how the data is cut into batches beyond the range's power-of-two steps. The exact
max |x| is tracked alongside (min-max calibration uses it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_BINS = 2048


@dataclass
class AbsHistogram:
    bins: int = DEFAULT_BINS
    counts: np.ndarray = field(default=None)  # int64 (bins,)
    range: float = 0.0  # upper edge of the last bin
    amax: float = 0.0  # exact max |x| seen
    zeros: int = 0  # values seen while the range was still 0 (all exactly zero)

    def __post_init__(self) -> None:
        if self.counts is None:
            self.counts = np.zeros(self.bins, dtype=np.int64)

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.zeros

    @property
    def bin_width(self) -> float:
        return self.range / self.bins

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, self.range, self.bins + 1)

    def add(self, x: np.ndarray) -> None:
        a = np.abs(np.asarray(x, dtype=np.float64)).reshape(-1)
        if a.size == 0:
            return
        m = float(a.max())
        self.amax = max(self.amax, m)
        if self.range == 0.0:
            if m == 0.0:
                self.zeros += a.size
                return
            self.range = m
            self.counts[0] += self.zeros
            self.zeros = 0
        while m > self.range:
            self._double()
        idx = np.minimum((a * (self.bins / self.range)).astype(np.int64), self.bins - 1)
        self.counts += np.bincount(idx, minlength=self.bins)

    def _double(self) -> None:
        merged = self.counts.reshape(-1, 2).sum(axis=1)
        self.counts = np.concatenate([merged, np.zeros(self.bins - merged.size, dtype=np.int64)])
        self.range *= 2.0

    def percentile(self, q: float) -> float:
        """The q-th percentile of |x| (0-100), linearly interpolated inside its bin."""
        total = self.total
        if total == 0 or self.range == 0.0:
            return 0.0
        cdf = np.cumsum(self.counts)
        target = q / 100.0 * total
        i = int(np.searchsorted(cdf, target, side="left"))
        i = min(i, self.bins - 1)
        before = cdf[i - 1] if i > 0 else 0
        inside = self.counts[i]
        frac = (target - before) / inside if inside else 1.0
        return float((i + min(max(frac, 0.0), 1.0)) * self.bin_width)
