"""Calibration batch streams, validated in full before any calibration work starts.

A stream yields feeds (input name → array shaped exactly as the network input), one batch at a
time, like TensorRT's ``IInt8Calibrator::getBatch``. ``NpyDirectoryStream`` reads a directory
of ``.npy`` files: for a single-input network every ``*.npy`` in the directory (sorted by name);
for several inputs one sub-directory per input name holding the same number of files. A file
holds one batch (the input's exact shape) or a stack of samples ``(k, *shape[1:])`` with k a
multiple of the batch size, which is cut into k / batch batches. Every file is opened, checked
for shape, dtype (float) and finite values when the stream is made, so bad data fails before the
network runs even once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.ir.errors import BuildError


def _check_array(a: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise BuildError(f"{where}: expected a numpy array, got {type(a).__name__}")
    if a.dtype.kind != "f":
        raise BuildError(f"{where}: calibration data must be floating point, got dtype {a.dtype}")
    batch = shape[0] if shape else 1
    stack = bool(shape) and a.ndim == len(shape) and tuple(a.shape[1:]) == shape[1:] and a.shape[0] > 0 \
        and a.shape[0] % batch == 0
    if tuple(a.shape) != shape and not stack:
        raise BuildError(f"{where}: shape {tuple(a.shape)} does not match the network input {shape} "
                         f"(nor a stack (k*{batch}, {', '.join(map(str, shape[1:]))}))")
    bad = ~np.isfinite(a)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(a[idx]) else "Inf"
        raise BuildError(f"{where}: contains {int(bad.sum())} non-finite value(s) ({kind} at index {idx})")
    return a


def _split(a: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
    if tuple(a.shape) == shape:
        return [a.astype(np.float32, copy=False)]
    n = shape[0]
    return [a[i:i + n].astype(np.float32) for i in range(0, a.shape[0], n)]


@dataclass
class ArrayStream:
    """Batches held in memory (a list of feeds); checked like files are."""

    batches: list[dict[str, np.ndarray]]
    shapes: dict[str, tuple[int, ...]]

    def __post_init__(self) -> None:
        if not self.batches:
            raise BuildError("calibration data is empty: give at least one batch")
        checked = []
        for i, feeds in enumerate(self.batches):
            missing = sorted(set(self.shapes) - set(feeds))
            extra = sorted(set(feeds) - set(self.shapes))
            if missing or extra:
                raise BuildError(f"calibration batch {i}: inputs {sorted(feeds)} do not match the network's "
                                 f"{sorted(self.shapes)}")
            checked.append({k: _check_array(np.asarray(feeds[k]), self.shapes[k],
                                            f"calibration batch {i} input '{k}'") for k in self.shapes})
        self.batches = [{k: v.astype(np.float32, copy=False) for k, v in b.items()} for b in checked]
        for b in self.batches:
            for k, v in b.items():
                if v.shape != self.shapes[k]:
                    raise BuildError(f"calibration batch input '{k}' has shape {v.shape}, expected {self.shapes[k]}")

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class NpyDirectoryStream:
    """Batches from ``.npy`` files (see the module doc); everything is validated in ``__init__``."""

    def __init__(self, directory: str | Path, shapes: Mapping[str, tuple[int, ...]]) -> None:
        self.directory = Path(directory)
        self.shapes = {k: tuple(v) for k, v in shapes.items()}
        if not self.directory.is_dir():
            raise BuildError(f"calibration directory '{self.directory}' does not exist or is not a directory")
        names = list(self.shapes)
        if len(names) == 1:
            files = {names[0]: self._files(self.directory, f"calibration directory '{self.directory}'")}
        else:
            files = {}
            for n in names:
                sub = self.directory / n
                if not sub.is_dir():
                    raise BuildError(f"calibration directory '{self.directory}': the network has inputs {names}; "
                                     f"put each input's files in a sub-directory named after it ('{sub}' is missing)")
                files[n] = self._files(sub, f"calibration directory '{sub}'")
            counts = {n: len(f) for n, f in files.items()}
            if len(set(counts.values())) != 1:
                raise BuildError(f"calibration directory '{self.directory}': inputs have different file "
                                 f"counts {counts}")
        per_input: dict[str, list[np.ndarray]] = {}
        for n, paths in files.items():
            batches: list[np.ndarray] = []
            for p in paths:
                batches.extend(_split(_check_array(self._load(p), self.shapes[n], f"calibration file '{p}'"),
                                      self.shapes[n]))
            per_input[n] = batches
        lengths = {n: len(b) for n, b in per_input.items()}
        if len(set(lengths.values())) != 1:
            raise BuildError(f"calibration directory '{self.directory}': inputs give different batch counts {lengths}")
        self.batches = [dict(zip(per_input, vals)) for vals in zip(*per_input.values())]

    @staticmethod
    def _files(d: Path, where: str) -> list[Path]:
        files = sorted(p for p in d.iterdir() if p.suffix == ".npy" and p.is_file())
        if not files:
            raise BuildError(f"{where} holds no .npy files")
        return files

    @staticmethod
    def _load(p: Path) -> np.ndarray:
        try:
            return np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise BuildError(f"calibration file '{p}' cannot be read as a .npy array: {e}") from None

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def input_shapes(network) -> dict[str, tuple[int, ...]]:
    return {n: tuple(network.tensors[n].shape) for n in network.inputs}


def as_stream(data: Sequence[Mapping[str, np.ndarray]] | str | Path, shapes: Mapping[str, tuple[int, ...]]):
    """A directory path or a list of feeds → a validated stream."""
    if isinstance(data, (str, Path)):
        return NpyDirectoryStream(data, shapes)
    return ArrayStream([dict(b) for b in data], dict(shapes))
