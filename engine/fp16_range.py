"""Constants of FP16 layers brought into FP16's range before they are rounded to it.

An FP16 layer reads its weights (and constant inputs) rounded to half precision. Two kinds of
finite FP32 value would change what the layer computes there, not only how exactly:
- a nonzero value below the smallest FP16 subnormal (2**-24) rounds to 0 or to it: the epsilon of
  ``x / max(||x||, 1e-12)`` (``torch.nn.functional.normalize``, Swin V2's cosine attention) turns
  into 0, and a row of zeros (a padded attention window) divides 0 by 0;
- a value beyond the largest FP16 value (65504) becomes infinite: the mask bias
  ``(1 - mask) * finfo(float32).min`` of exported Transformers turns into 0 * -inf = NaN on every
  position the mask keeps.
PyTorch in float16 gives NaN in both cases. The builder converts such values as TensorRT's builder
does: below the smallest subnormal to +-2**-24, beyond the range to +-65504, and logs what it
changed. Zeros, infinities and NaNs stay as they are.
"""

from __future__ import annotations

import numpy as np

from engine.ir.dtypes import Precision
from engine.ir.layers import SHAPE_ONLY, LayerKind
from engine.ir.logger import Logger
from engine.ir.network import Layer, Network

SMALLEST_FP16 = 2.0 ** -24  # smallest positive subnormal
LARGEST_FP16 = 65504.0


def to_fp16_range(value: np.ndarray) -> np.ndarray:
    """``value`` (float, same dtype) with finite values past +-65504 at +-65504 and nonzero ones
    below 2**-24 in magnitude at +-2**-24; anything else unchanged."""
    v = np.asarray(value)
    small, large = _out_of_range(v)
    if not (small.any() or large.any()):
        return v
    out = v.copy()
    out[small] = np.sign(v[small]) * SMALLEST_FP16
    out[large] = np.sign(v[large]) * LARGEST_FP16
    return out


def _out_of_range(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the nonzero values below 2**-24 and the finite values past 65504 in magnitude."""
    mag = np.abs(v)
    return (mag < SMALLEST_FP16) & (mag > 0), np.isfinite(v) & (mag > LARGEST_FP16)


def _final_readers(tensor: str, readers: dict[str, list[Layer]]) -> list[Layer]:
    """The layers that compute with ``tensor``, looking through shape-only layers."""
    found = []
    for r in readers.get(tensor, []):
        if r.kind in SHAPE_ONLY and r.kind is not LayerKind.CONSTANT:
            found += [f for t in r.outputs for f in _final_readers(t, readers)] or [r]
        else:
            found.append(r)
    return found


def fit_constants_to_fp16(network: Network, logger: Logger) -> list[str]:
    """``to_fp16_range`` on every float weight of an FP16 layer, and on every Constant whose value
    only FP16 layers compute with; the "layer/weight" names of what changed."""
    readers = network.consumers()
    changed = []
    for layer in network:
        if layer.kind is LayerKind.CONSTANT:
            final = _final_readers(layer.outputs[0], readers)
            fp16 = [r.name for r in final if r.precision is Precision.FP16]
            if fp16 and len(fp16) < len(final):
                if any(to_fp16_range(w) is not w for w in layer.weights.values() if w.dtype.kind == "f"):
                    logger.warning(f"constant '{layer.name}' has values FP16 cannot hold and is read by FP16 layers "
                                   f"({', '.join(fp16[:4])}) and others, so it keeps them: the FP16 readers see 0 "
                                   f"or +-inf there; pin them to FP32")
                continue
            if not fp16:
                continue
        elif layer.precision is not Precision.FP16:
            continue
        for key, w in layer.weights.items():
            if w.dtype.kind != "f":
                continue
            fitted = to_fp16_range(w)
            if fitted is not w:
                layer.weights[key] = fitted
                changed.append(f"{layer.name}/{key}")
                small, large = _out_of_range(w)
                logger.info(f"layer '{layer.name}', weight '{key}': {int(small.sum())} value(s) below the smallest "
                            f"FP16 subnormal set to +-2**-24, {int(large.sum())} past +-65504 set to +-65504")
    if changed:
        logger.warning(f"{len(changed)} weight(s) of FP16 layers had values FP16 cannot hold (an epsilon such as "
                       f"1e-12, a mask bias such as -3.4e38): converted to the nearest nonzero finite FP16 value; "
                       f"pin their layers to FP32 for the exact values")
    return changed
