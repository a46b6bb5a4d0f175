"""INT8 calibrators: a batch stream in, one activation range per tensor out.

The interface follows TensorRT's IInt8Calibrator: ``get_batch_size()``, ``get_batch(names)``
(feeds, or None at the end of the data), ``read_calibration_cache()`` and
``write_calibration_cache(data)``. The builder drives it: it binds the calibrator to the
network's inputs (validating every batch before any work), tries the cache, and otherwise runs
the FP32 network over the batches (``ranges.collect``) and asks ``compute_amax`` for each
tensor's histogram.

Algorithms (``algorithm`` names them in the cache header):

* ``entropy``: TensorRT's entropy calibration (the EntropyCalibrator2 behaviour; the calibrator
  TensorRT requires for the DLA): the KL-divergence threshold of ``entropy.entropy_threshold``.
* ``minmax``: amax = max |x| over all batches (TensorRT's MinMaxCalibrator).
* ``percentile``: amax = the given percentile of |x| (99.99 by default), read from the histogram
  with linear interpolation inside a bin (so within one bin width, range/2048, of the exact
  value).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from engine.ir.errors import BuildError
from engine.ir.fileio import atomic_write_bytes

from .data import as_stream
from .entropy import entropy_threshold
from .histogram import DEFAULT_BINS, AbsHistogram

CalibrationData = str | Path | Sequence[Mapping[str, np.ndarray]]


@runtime_checkable
class Calibrator(Protocol):
    """What the builder needs from a calibrator (TensorRT's IInt8Calibrator)."""

    algorithm: str

    def get_batch_size(self) -> int: ...

    def get_batch(self, names: list[str]) -> dict[str, np.ndarray] | None: ...

    def read_calibration_cache(self) -> bytes | None: ...

    def write_calibration_cache(self, data: bytes) -> None: ...

    def compute_amax(self, hist: AbsHistogram) -> float: ...


class CalibratorBase:
    """Stream handling and cache file handling shared by the three algorithms.

    ``data``: a directory of .npy files or a list of feeds. ``cache_file``: where the cache is read
    from (if it exists) and written to; None keeps the cache in memory only (``cache_bytes``).
    """

    algorithm = "base"
    bins = DEFAULT_BINS

    def __init__(self, data: CalibrationData | None = None, cache_file: str | Path | None = None) -> None:
        self.data = data
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self.cache_bytes: bytes | None = None
        self._stream = None
        self._iter = None

    # ------------------------------------------------------------------ stream

    def bind(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Validate the whole data set against the network inputs (raises BuildError)."""
        if self.data is None:
            raise BuildError(f"{self.algorithm} calibrator has no calibration data and no cache to read")
        self._stream = as_stream(self.data, shapes)
        self._iter = None

    @property
    def num_batches(self) -> int:
        return len(self._stream) if self._stream is not None else 0

    def get_batch_size(self) -> int:
        if self._stream is None:
            return 0
        first = next(iter(self._stream))
        return int(next(iter(first.values())).shape[0]) if first else 0

    def get_batch(self, names: list[str]) -> dict[str, np.ndarray] | None:
        if self._stream is None:
            raise BuildError("calibrator is not bound to a network (bind() validates the data first)")
        if self._iter is None:
            self._iter = iter(self._stream)
        feeds = next(self._iter, None)
        if feeds is None:
            self._iter = None
            return None
        return {n: feeds[n] for n in names}

    # ------------------------------------------------------------------ cache

    def read_calibration_cache(self) -> bytes | None:
        if self.cache_bytes is not None:
            return self.cache_bytes
        if self.cache_file is not None and self.cache_file.exists():
            try:
                return self.cache_file.read_bytes()
            except OSError as e:
                raise BuildError(f"cannot read calibration cache '{self.cache_file}': {e.strerror}") from None
        return None

    def write_calibration_cache(self, data: bytes) -> None:
        self.cache_bytes = bytes(data)
        if self.cache_file is not None:
            try:
                atomic_write_bytes(self.cache_file, data)  # an interrupted write keeps the old cache
            except OSError as e:
                raise BuildError(f"cannot write calibration cache '{self.cache_file}': {e}") from None

    # ------------------------------------------------------------------ ranges

    def compute_amax(self, hist: AbsHistogram) -> float:
        raise NotImplementedError


class EntropyCalibrator(CalibratorBase):
    algorithm = "entropy"

    def compute_amax(self, hist: AbsHistogram) -> float:
        return entropy_threshold(hist)


class MinMaxCalibrator(CalibratorBase):
    algorithm = "minmax"

    def compute_amax(self, hist: AbsHistogram) -> float:
        return hist.amax


class PercentileCalibrator(CalibratorBase):
    algorithm = "percentile"

    def __init__(self, data: CalibrationData | None = None, cache_file: str | Path | None = None,
                 percentile: float = 99.99) -> None:
        if not 0.0 < percentile <= 100.0:
            raise BuildError(f"percentile must be in (0, 100], got {percentile}")
        super().__init__(data, cache_file)
        self.percentile = percentile

    def compute_amax(self, hist: AbsHistogram) -> float:
        return min(hist.percentile(self.percentile), hist.amax)


CALIBRATORS: dict[str, type[CalibratorBase]] = {
    c.algorithm: c for c in (EntropyCalibrator, MinMaxCalibrator, PercentileCalibrator)
}


def make_calibrator(algorithm: str, data: CalibrationData | None = None,
                    cache_file: str | Path | None = None) -> CalibratorBase:
    try:
        cls = CALIBRATORS[algorithm]
    except KeyError:
        raise BuildError(f"unknown calibrator '{algorithm}'; choose one of {', '.join(sorted(CALIBRATORS))}") from None
    return cls(data, cache_file)
