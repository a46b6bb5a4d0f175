"""The builder's INT8 steps: validate data and fold Q/DQ (before optimization), get scales
(Q/DQ, cache or calibration, after optimization), assign INT8 layers (with the precisions).

Calibration runs on the optimized network, as TensorRT calibrates the network it will execute:
fused tensors need no range, and the cache is keyed by the optimized structure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.ir.dtypes import Precision
from engine.ir.errors import BuildError
from engine.ir.fileio import atomic_write_bytes
from engine.ir.int8_math import activation_scale
from engine.ir.logger import Logger, Progress
from engine.ir.network import Layer, Network

from . import qdq
from .assign import assign_int8
from .cache import CalibrationCache, network_fingerprint
from .data import input_shapes


@dataclass
class ScaleTable:
    scales: dict[str, np.float32]
    implicit: bool  # calibrated (every tensor) vs explicit Q/DQ (only quantized tensors)
    source: str


def prepare(network: Network, config, log: Logger) -> tuple[Network, dict[str, np.float32] | None]:
    """Before any work: check the calibration data in full; fold Q/DQ pairs of explicit models."""
    cal = config.calibrator
    if cal is not None and getattr(cal, "data", None) is not None and hasattr(cal, "bind"):
        cal.bind(input_shapes(network))
        log.info(f"Calibration data: {cal.num_batches} batches validated ({cal.algorithm} calibrator)")
    if not qdq.has_qdq(network):
        return network, None
    result = qdq.fold(network)
    log.info(f"Explicit quantization: folded {result.folded} Q/DQ pairs, {len(result.scales)} quantized tensors")
    for why in result.kept:
        log.warning(f"Q/DQ kept as a float/int8 conversion: {why}")
    return result.network, result.scales


def _read_cache(config) -> tuple[bytes | None, str]:
    cal = config.calibrator
    if cal is not None:
        data = cal.read_calibration_cache()
        if data is not None:
            return data, f"calibration cache of the {cal.algorithm} calibrator"
    if config.calibration_cache:
        path = Path(config.calibration_cache)
        if path.exists():
            try:
                return path.read_bytes(), f"calibration cache '{path}'"
            except OSError as e:
                raise BuildError(f"cannot read calibration cache '{path}': {e.strerror}") from None
        if cal is None:
            raise BuildError(f"calibration cache '{path}' does not exist (and no calibration data is given)")
    return None, ""


def scales_for(network: Network, config, qdq_scales: dict | None, log: Logger) -> ScaleTable:
    if qdq_scales is not None:
        return ScaleTable(dict(qdq_scales), False, "Q/DQ")
    data, where = _read_cache(config)
    if data is not None:
        cache = CalibrationCache.from_bytes(data, where)
        cache.check_network(network, where)
        log.info(f"INT8 scales from the {where} ({len(cache.scales)} tensors, {cache.algorithm})")
        return ScaleTable(dict(cache.scales), True, where)
    cal = config.calibrator
    if cal is None:
        raise BuildError("INT8 needs ranges: give calibration data (a calibrator / --calib DIR), a calibration "
                         "cache (--calib-cache FILE), or a model with QuantizeLinear/DequantizeLinear")
    from .ranges import amax_table

    t0 = time.perf_counter()
    log.info(f"Calibrating with the {cal.algorithm} calibrator (batch size {cal.get_batch_size()})")
    amax = amax_table(network, cal, Progress(log, "Calibration batches").update)
    scales = {t: activation_scale(a) for t, a in amax.items()}
    cache = CalibrationCache(network_fingerprint(network), cal.algorithm, scales)
    data = cache.to_bytes()
    cal.write_calibration_cache(data)
    if config.calibration_cache and Path(config.calibration_cache) != getattr(cal, "cache_file", None):
        try:
            atomic_write_bytes(config.calibration_cache, data)  # an interrupted write keeps the old cache
        except OSError as e:
            raise BuildError(f"cannot write calibration cache '{config.calibration_cache}': {e}") from None
    log.info(f"Calibrated {len(scales)} tensors with the {cal.algorithm} calibrator in "
             f"{time.perf_counter() - t0:.2f} s")
    return ScaleTable(scales, True, f"{cal.algorithm} calibration")


def _pinned(config):
    """Layers pinned to a float precision: the INT8 assignment leaves them be. An INT8 pin is assigned
    as any layer is (it needs its scales); the precision-by-timing step keeps it INT8."""
    pins = {k for k, v in config.layer_precisions.items() if Precision(v) is not Precision.INT8}

    def pinned(layer: Layer) -> bool:
        return layer.name in pins or any(o in pins for o in layer.origin)

    return pinned


def assign(network: Network, config, table: ScaleTable, log: Logger) -> None:
    # SiLU / hard-swish INT8 epilogues under every policy: each device that may run such a layer
    # computes it (the GPU's INT8 convolution kernels evaluate the exact function in float64 and round
    # it as the reference does; the DLA on its SDP, lookup table / clipped ramp then an element-wise
    # multiply), and a layer neither takes falls back to the reference backend, which has it too.
    result = assign_int8(network, table.scales, _pinned(config), table.implicit, nonlinear=True)
    log.info(f"INT8: {len(result.int8_layers)} layers in INT8 (scales from {table.source}), "
             f"{len(result.float_layers)} in {config.precision.value}")
    for name, why in result.float_layers.items():
        log.verbose(f"  {name}: {config.precision.value}, {why}")
