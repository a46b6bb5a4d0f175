"""FP16 layers whose constants FP16 cannot hold: kept at FP32.

An FP16 layer reads its weights (and constant inputs) rounded to half precision. A constant whose
every nonzero value is below half the smallest FP16 subnormal (2**-25) becomes all zeros there,
which changes what the layer computes, not only how exactly: the epsilon of
``x / max(||x||, 1e-12)`` (``torch.nn.functional.normalize``, Swin V2's cosine attention) turns
into 0, and a row of zeros (a padded attention window) divides 0 by 0. PyTorch in float16 gives
NaN there too; the builder instead keeps such layers at FP32, logs which and why, and leaves
layers the user pinned alone.
"""

from __future__ import annotations

import numpy as np

from engine.ir.dtypes import Precision
from engine.ir.layers import SHAPE_ONLY, LayerKind
from engine.ir.logger import Logger
from engine.ir.network import Layer, Network


def vanishes_in_fp16(value: np.ndarray) -> bool:
    """Whether a float array has nonzero values and rounds to all zeros in float16."""
    v = np.asarray(value)
    return v.dtype.kind == "f" and bool(np.any(v != 0)) and not np.any(v.astype(np.float16))


def _constant_inputs(network: Network, layer: Layer, producers: dict[str, Layer]) -> dict[str, np.ndarray]:
    """The layer's inputs that are constants, through shape-only layers, by tensor name."""
    found = {}
    for t in layer.inputs:
        p = producers.get(t)
        while p is not None and p.kind in SHAPE_ONLY and p.kind is not LayerKind.CONSTANT and len(p.inputs) == 1:
            p = producers.get(p.inputs[0])
        if p is not None and p.kind is LayerKind.CONSTANT:
            found[t] = p.weights["value"]
    return found


def keep_fp32_where_constants_vanish(network: Network, pinned: set[str], logger: Logger) -> list[str]:
    """Set FP32 on every FP16 layer (not in ``pinned``) with a float weight or constant input that
    vanishes in FP16 (``vanishes_in_fp16``); the names of the layers changed."""
    producers = network.producers()
    changed = []
    for layer in network:
        if layer.precision is not Precision.FP16 or layer.name in pinned or layer.kind is LayerKind.CONSTANT:
            continue
        values = {f"weight '{k}'": w for k, w in layer.weights.items()}
        values.update({f"input '{t}'": v for t, v in _constant_inputs(network, layer, producers).items()})
        lost = [f"{what} (largest magnitude {float(np.max(np.abs(v))):.3g})"
                for what, v in values.items() if vanishes_in_fp16(v)]
        if lost:
            layer.precision = Precision.FP32
            changed.append(layer.name)
            logger.info(f"layer '{layer.name}' kept at FP32: its {', '.join(lost)} would be all zeros in FP16")
    if changed:
        logger.warning(f"{len(changed)} layer(s) kept at FP32 because constants of theirs are zero in FP16 "
                       f"(an epsilon such as 1e-12); pin them with layer_precisions to override")
    return changed
