"""Activation statistics: run the FP32 reference network over the calibration batches.

Every float tensor (network inputs and every layer output, constants excepted) gets an
``AbsHistogram``; the executor's ``observer`` hook hands each layer's outputs over as they are
computed, so no intermediate is kept beyond its layer.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engine.ir.dtypes import Precision
from engine.ir.errors import BuildError
from engine.ir.layers import LayerKind
from engine.ir.network import Layer, Network

from .calibrator import Calibrator
from .histogram import AbsHistogram


def collect(network: Network, calibrator: Calibrator,
            progress: Callable[[int], None] | None = None) -> tuple[dict[str, AbsHistogram], int]:
    """Histograms of |x| per float tensor over all batches, and the number of batches.

    ``progress(batches_done)`` is called after each batch (the builder logs it, throttled)."""
    from backends.reference.executor import execute

    hists: dict[str, AbsHistogram] = {}
    bins = getattr(calibrator, "bins", 2048)

    def record(name: str, value: np.ndarray) -> None:
        if value.dtype.kind != "f":
            return
        h = hists.get(name)
        if h is None:
            h = hists[name] = AbsHistogram(bins)
        h.add(value)

    def observer(layer: Layer, outs: list[np.ndarray]) -> None:
        if layer.kind is LayerKind.CONSTANT:
            return
        for name, value in zip(layer.outputs, outs):
            record(name, value)

    batches = 0
    while True:
        feeds = calibrator.get_batch(list(network.inputs))
        if feeds is None:
            break
        for name in network.inputs:
            record(name, feeds[name])
        execute(network, feeds, precision_of=lambda _layer: Precision.FP32, observer=observer)
        batches += 1
        if progress is not None:
            progress(batches)
    if batches == 0:
        raise BuildError("calibration produced no batches")
    return hists, batches


def amax_table(network: Network, calibrator: Calibrator,
               progress: Callable[[int], None] | None = None) -> dict[str, float]:
    hists, _ = collect(network, calibrator, progress)
    return {name: float(calibrator.compute_amax(h)) for name, h in hists.items()}
