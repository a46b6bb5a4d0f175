"""FP16 constants that would round to all zeros: kept at the smallest FP16 magnitude instead.

An FP16 layer reads its weights (and constant inputs) rounded to half precision. A constant whose
every nonzero value is below half the smallest FP16 subnormal (2**-25) would become all zeros,
which changes what the layer computes, not only how exactly: the epsilon of
``x / max(||x||, 1e-12)`` (``torch.nn.functional.normalize``, Swin V2's cosine attention) turns
into 0, and a row of zeros (a padded attention window) divides 0 by 0. PyTorch in float16 gives
NaN there. The builder instead rounds such a constant away from zero, to +-2**-24 (the smallest
subnormal), and logs it: the layer stays FP16 (no FP32 layer, no extra conversion in front of the
tensor-core kernels that read its output), ``max(||x||, eps)`` stays a guard, and its result
differs from FP32 only where the norm itself is below 2**-24.
"""

from __future__ import annotations

import numpy as np

from engine.ir.dtypes import Precision
from engine.ir.layers import LayerKind
from engine.ir.logger import Logger
from engine.ir.network import Layer, Network

SMALLEST_FP16 = 2.0 ** -24


def vanishes_in_fp16(value: np.ndarray) -> bool:
    """Whether a float array has nonzero values and rounds to all zeros in float16."""
    v = np.asarray(value)
    return v.dtype.kind == "f" and bool(np.any(v != 0)) and not np.any(v.astype(np.float16))


def kept_in_fp16(value: np.ndarray) -> np.ndarray:
    """``value`` (which ``vanishes_in_fp16``) with every nonzero element at +-2**-24, same dtype."""
    v = np.asarray(value)
    return (np.sign(v) * SMALLEST_FP16).astype(v.dtype)


def _all_fp16(readers: list[Layer]) -> bool:
    return bool(readers) and all(r.precision is Precision.FP16 for r in readers)


def keep_vanishing_constants(network: Network, logger: Logger) -> list[str]:
    """Round away from zero (``kept_in_fp16``) every float weight of an FP16 layer, and every
    Constant read by FP16 layers only, that ``vanishes_in_fp16``; what was changed, as
    "layer/weight" names."""
    readers = network.consumers()
    changed = []
    for layer in network:
        if layer.kind is LayerKind.CONSTANT:
            if not _all_fp16(readers.get(layer.outputs[0], [])):
                continue
        elif layer.precision is not Precision.FP16:
            continue
        for key, w in layer.weights.items():
            if vanishes_in_fp16(w):
                layer.weights[key] = kept_in_fp16(w)
                changed.append(f"{layer.name}/{key}")
                logger.info(f"layer '{layer.name}': weight '{key}' (largest magnitude {float(np.max(np.abs(w))):.3g}) "
                            f"is all zeros in FP16; kept at the smallest FP16 magnitude 2**-24 instead")
    if changed:
        logger.warning(f"{len(changed)} constant(s) of FP16 layers (an epsilon such as 1e-12) would be all zeros in "
                       f"FP16 and are kept at 2**-24 instead; pin their layers to FP32 for the exact value")
    return changed
