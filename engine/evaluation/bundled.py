"""The bundled real dataset: scikit-learn's 8x8 handwritten digits and a CNN trained on them.

``write_digits(folder)`` writes everything ``hetrt eval`` and an INT8 build need:

    folder/digits.onnx        the CNN trained with JAX (FP32, symbolic batch)
    folder/test/*.npy         the 597 held-out test images in batches of 64, (N, 1, 8, 8) float32
    folder/test_labels.npy    their labels (int64)
    folder/calib/*.npy        192 training images for INT8 calibration, in full batches of 64

The images ship with scikit-learn (UCI optdigits); training needs JAX. Both are in the ``eval``
extra. Writes are atomic, file by file.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from engine.ir.errors import HetrtError
from engine.ir.fileio import atomic_write_bytes, check_writable


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def write_digits(folder: str | Path, seed: int = 0, batch: int = 64) -> dict[str, str]:
    """Train the digits CNN and write it with its test and calibration data into ``folder``."""
    try:
        import jax  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as e:
        raise HetrtError(f"the digits dataset needs scikit-learn and JAX ({e.name} is missing): "
                         f"pip install 'hetrt[eval]'") from None
    import onnx

    from . import digits

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    check_writable(out / "digits.onnx")
    splits = digits.load_splits(seed)
    params = digits.train(splits, seed=seed)
    atomic_write_bytes(out / "digits.onnx", digits.to_onnx(params).SerializeToString())
    onnx.checker.check_model(str(out / "digits.onnx"))
    calib = splits.x_calib[:len(splits.x_calib) // batch * batch]  # the calibrator takes whole batches
    for sub, x in (("test", splits.x_test), ("calib", calib)):
        (out / sub).mkdir(exist_ok=True)
        for i in range(0, len(x), batch):
            atomic_write_bytes(out / sub / f"batch_{i // batch:03d}.npy", _npy_bytes(x[i:i + batch]))
    atomic_write_bytes(out / "test_labels.npy", _npy_bytes(splits.y_test))
    return {"model": str(out / "digits.onnx"), "data": str(out / "test"), "labels": str(out / "test_labels.npy"),
            "calib": str(out / "calib")}
