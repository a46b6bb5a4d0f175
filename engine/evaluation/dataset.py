"""Datasets for ``hetrt eval``: folders of ``.npy`` batches or of images, read lazily by sample index.

A dataset is a *description* (a small picklable :class:`DatasetSpec`) plus an index of samples, so a
worker process or a Ray worker opens the same files itself: nothing but paths and preprocessing
flags crosses process boundaries.

* ``.npy`` folder: every ``*.npy`` file in name order holds one batch ``(N, ...)`` or one sample
  (the network input without its batch dimension); samples are numbered in that order.
* image folder: PNG/JPEG/BMP files read with Pillow. Either class sub-folders (ImageNet style: a
  sample's label is the index of its folder in sorted order) or a flat folder with ``--labels``.

Labels (``--labels FILE``): a ``.npy`` integer array, or a text file with one integer per line, or
with ``NAME LABEL`` per line (image folders: NAME is the path relative to the folder).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.ir.errors import HetrtError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm")


class DatasetError(HetrtError, ValueError):
    """The dataset folder, a file in it, or the labels cannot be used (names the file)."""


@dataclass(frozen=True)
class Preprocess:
    """How images become network inputs: resize the short side, center-crop, scale, normalise."""

    resize: int | None = None  # short side in pixels before cropping
    crop: tuple[int, int] | None = None  # (height, width) of the center crop
    scale: float = 1.0 / 255.0  # pixel values are multiplied by this first
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "NCHW"  # or NHWC
    channels: int = 3  # 1: grayscale, 3: RGB

    def __post_init__(self) -> None:
        if self.layout not in ("NCHW", "NHWC"):
            raise DatasetError(f"--layout must be NCHW or NHWC, got {self.layout!r}")
        if self.channels not in (1, 3):
            raise DatasetError(f"--channels must be 1 or 3, got {self.channels}")
        for name, v in (("--mean", self.mean), ("--std", self.std)):
            if len(v) not in (1, self.channels):
                raise DatasetError(f"{name} needs 1 or {self.channels} values, got {len(v)}")
        if any(s == 0 for s in self.std):
            raise DatasetError("--std values must be non-zero")
        if self.resize is not None and self.resize <= 0:
            raise DatasetError(f"--resize must be > 0, got {self.resize}")
        if self.crop is not None and min(self.crop) <= 0:
            raise DatasetError(f"--crop must be > 0, got {self.crop}")


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset as paths and flags (picklable, cheap to ship to workers)."""

    root: str
    kind: str  # "npy" or "images"
    files: tuple[str, ...]  # relative to root, in sample order
    counts: tuple[int, ...]  # samples per file (npy batches hold several)
    labels: tuple[int, ...] | None
    preprocess: Preprocess = field(default_factory=Preprocess)
    unbatched: tuple[bool, ...] = ()  # npy files holding one sample without a batch dimension

    @property
    def size(self) -> int:
        return int(sum(self.counts))

    def names(self) -> list[str]:
        """One readable name per sample (file, or file[index] inside an npy batch)."""
        out = []
        for f, n in zip(self.files, self.counts):
            out.extend([f] if n == 1 and self.kind == "images" else [f"{f}[{i}]" for i in range(n)])
        return out


def _npy_count(path: Path, sample_ndim: int | None) -> tuple[int, bool]:
    """(samples in the file, whether it is one sample without a batch dimension)."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read {path}: {e}") from None
    if arr.dtype.kind not in "fiub":
        raise DatasetError(f"{path}: dtype {arr.dtype} is not numeric")
    if sample_ndim is not None and arr.ndim == sample_ndim:
        return 1, True
    if arr.ndim == 0 or (sample_ndim is not None and arr.ndim != sample_ndim + 1):
        raise DatasetError(f"{path}: shape {arr.shape} is neither one sample of rank {sample_ndim} "
                           f"nor a batch of them")
    return int(arr.shape[0]), False


def _read_labels(path: str, names: list[str] | None) -> list[int]:
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"--labels {path}: no such file")
    if p.suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DatasetError(f"cannot read labels {path}: {e}") from None
        if arr.dtype.kind not in "iu" or arr.ndim != 1:
            raise DatasetError(f"labels {path}: need a 1-D integer array, got {arr.dtype} {arr.shape}")
        return [int(v) for v in arr]
    rows = [ln.split() for ln in p.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    try:
        if rows and all(len(r) == 1 for r in rows):
            return [int(r[0]) for r in rows]
        by_name = {r[0]: int(r[-1]) for r in rows if len(r) >= 2}
    except ValueError as e:
        raise DatasetError(f"labels {path}: {e}") from None
    if names is None:
        raise DatasetError(f"labels {path}: NAME LABEL lines need an image folder; use one integer per line")
    missing = [n for n in names if n not in by_name]
    if missing:
        raise DatasetError(f"labels {path}: no label for {len(missing)} image(s), e.g. {missing[0]}")
    return [by_name[n] for n in names]


def open_dataset(root: str, labels: str | None = None, sample_ndim: int | None = None,
                 preprocess: Preprocess | None = None) -> DatasetSpec:
    """Index a dataset folder (``.npy`` batches, or images: flat or in class sub-folders)."""
    base = Path(root)
    if not base.is_dir():
        raise DatasetError(f"--data {root}: not a directory")
    npys = sorted(p for p in base.iterdir() if p.suffix == ".npy" and p.is_file()
                  and (labels is None or p.resolve() != Path(labels).resolve()))
    if npys:
        found = [_npy_count(p, sample_ndim) for p in npys]
        counts, unbatched = tuple(c for c, _ in found), tuple(u for _, u in found)
        spec_labels = _read_labels(labels, None) if labels else None
        kind, files = "npy", tuple(p.name for p in npys)
    else:
        imgs = sorted(p.relative_to(base).as_posix() for p in base.rglob("*")
                      if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not imgs:
            raise DatasetError(f"--data {root}: no .npy files and no images ({', '.join(IMAGE_SUFFIXES)})")
        kind, files, counts, unbatched = "images", tuple(imgs), tuple(1 for _ in imgs), ()
        if labels:
            spec_labels = _read_labels(labels, list(imgs))
        else:
            classes = sorted({os.path.dirname(f) for f in imgs})
            if classes == [""]:
                spec_labels = None  # a flat folder without labels: agreement with --reference only
            else:
                if "" in classes:
                    raise DatasetError(f"--data {root}: images both at the top level and in class folders")
                index = {c: i for i, c in enumerate(classes)}
                spec_labels = [index[os.path.dirname(f)] for f in imgs]
    total = int(sum(counts))
    if spec_labels is not None and len(spec_labels) != total:
        raise DatasetError(f"--labels {labels}: {len(spec_labels)} labels for {total} samples")
    return DatasetSpec(str(base), kind, files, counts,
                       tuple(spec_labels) if spec_labels is not None else None, preprocess or Preprocess(),
                       unbatched)


def _load_image(path: Path, pp: Preprocess) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise DatasetError("image datasets need Pillow: pip install 'hetrt[eval]'") from None
    try:
        with Image.open(path) as im:
            im = im.convert("L" if pp.channels == 1 else "RGB")
            if pp.resize:
                w, h = im.size
                s = pp.resize / min(w, h)
                im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
            if pp.crop:
                ch, cw = pp.crop
                w, h = im.size
                if ch > h or cw > w:
                    raise DatasetError(f"{path}: crop {ch}x{cw} is larger than the image {h}x{w}")
                left, top = (w - cw) // 2, (h - ch) // 2
                im = im.crop((left, top, left + cw, top + ch))
            a = np.asarray(im, dtype=np.float32)
    except OSError as e:
        raise DatasetError(f"cannot read image {path}: {e}") from None
    if a.ndim == 2:
        a = a[:, :, None]
    a = (a * np.float32(pp.scale) - np.asarray(pp.mean, np.float32)) / np.asarray(pp.std, np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1) if pp.layout == "NCHW" else a)


def load_samples(spec: DatasetSpec, start: int, stop: int) -> np.ndarray:
    """Samples ``start .. stop-1`` as one float32 array (the batch dimension first)."""
    out: list[np.ndarray] = []
    offset = 0
    for i, (f, n) in enumerate(zip(spec.files, spec.counts)):
        lo, hi = max(start, offset), min(stop, offset + n)
        if lo < hi:
            path = Path(spec.root) / f
            if spec.kind == "images":
                out.append(_load_image(path, spec.preprocess)[None])
            else:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
                if spec.unbatched and spec.unbatched[i]:
                    arr = arr[None]
                out.append(np.asarray(arr[lo - offset:hi - offset], dtype=np.float32))
        offset += n
        if offset >= stop:
            break
    if not out:
        raise DatasetError(f"samples {start}..{stop - 1} are outside the dataset ({spec.size} samples)")
    return np.ascontiguousarray(np.concatenate(out))
