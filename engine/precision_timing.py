"""The builder's precision-by-timing step: with ``int8`` and ``fp16`` both on, an INT8 convolution of a
GPU partition whose FP16 form is faster, conversions counted, is built FP16
(``backends.gpu.precision_timing`` times and chooses; TensorRT's builder does the same with
``--int8 --fp16``). The chosen layers are rebuilt as if the user had pinned them FP16, so the
plan, its weights and the reference backend agree on every layer's precision.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from engine.ir.dtypes import Precision
from engine.ir.logger import Logger, Severity
from engine.ir.network import Network

if TYPE_CHECKING:
    from engine.builder import Builder, BuilderConfig


def wanted(config: BuilderConfig) -> bool:
    """Whether this build chooses INT8 or FP16 per GPU convolution by timing."""
    return config.int8 and config.fp16 and config.precision_by_timing and config.optimization_level > 0


def gpu_layers(placement: dict) -> list[str]:
    """The layers of the partitions the GPU backend runs."""
    return [n for p in placement.get("partitions", []) if p.get("backend") == "gpu" for n in p["layers"]]


def open_cache(config: BuilderConfig, placement: dict) -> Any:
    """The build's timing cache where the GPU backend runs a partition (None elsewhere), shared by
    this step and the tactic selection, so that neither times a kernel twice."""
    if not gpu_layers(placement):
        return None
    from backends.gpu.tactics import TimingCache

    return TimingCache(config.timing_cache)


def assign_quietly(builder: Builder, network: Network, config: BuilderConfig, int8_scales: Any = None) -> None:
    """The builder's precision step on a trial network, its notes kept out of the build's log."""
    quiet, builder.logger = builder.logger, Logger(Severity.ERROR)
    try:
        builder._assign_precisions(network, config, int8_scales)
    finally:
        builder.logger = quiet


def rebuild_pinned(builder: Builder, unassigned: Network, config: BuilderConfig, pins: dict[str, Precision],
                   int8_scales: Any, dla_refusals: dict | None, assigned: Network | None = None
                   ) -> tuple[Network, dict, list, BuilderConfig]:
    """(network, placement, loadables, config) with ``pins`` added to the config's layer precisions:
    ``unassigned`` assigned with them (``assigned``: a trial already assigned with exactly them) and
    placed again. The config carries the pins, so a refit or a rebuild for other shapes assigns the
    same precisions."""
    config = replace(config, layer_precisions={**config.layer_precisions, **pins})
    network = assigned
    if network is None:
        network = unassigned.copy()
        builder._assign_precisions(network, config, int8_scales)
    placement, loadables = builder._place(network, config, dla_refusals)
    return network, placement, loadables, config


def _pinned(network: Network, config: BuilderConfig) -> frozenset[str]:
    pins = config.layer_precisions
    return frozenset(la.name for la in network if la.name in pins or any(o in pins for o in la.origin))


def retime(builder: Builder, unassigned: Network, assigned: Network, placed: tuple[dict, list],
           config: BuilderConfig, int8_scales: Any, dla_refusals: dict | None, cache: Any
           ) -> tuple[Network, dict, list, BuilderConfig, dict]:
    """(network, placement, loadables, config, {layer: {"int8_ms", "fp16_ms"}} of the layers built
    FP16): the build's own where every INT8 convolution stays faster, else ``unassigned`` assigned
    again with the faster FP16 layers pinned FP16, and placed again (``rebuild_pinned``). Timing is an
    optimization: a failure leaves the INT8 build as it is, with a warning."""
    placement, loadables = placed
    log = builder.logger
    try:
        from backends.gpu.precision_timing import choose_fp16_layers

        fp16_build = unassigned.copy()
        float_pins = {k: v for k, v in config.layer_precisions.items() if Precision(v) is not Precision.INT8}
        assign_quietly(builder, fp16_build, replace(config, int8=False, calibrator=None, calibration_cache=None,
                                                     layer_precisions=float_pins))
        chosen = choose_fp16_layers(assigned, fp16_build, gpu_layers(placement), cache, config.optimization_level,
                                    log, config.tactic_sources, _pinned(assigned, config))
        cache.save()
    except Exception as e:  # noqa: BLE001 - an optimization never fails the build
        log.warning(f"precision by timing failed ({type(e).__name__}: {e}); INT8 layers stay INT8")
        return assigned, placement, loadables, config, {}
    if not chosen:
        return assigned, placement, loadables, config, {}
    network, placement, loadables, config = rebuild_pinned(
        builder, unassigned, config, {name: Precision.FP16 for name in chosen}, int8_scales, dla_refusals)
    times = {name: {"int8_ms": round(t8, 5), "fp16_ms": round(t16, 5)} for name, (t8, t16) in chosen.items()}
    return network, placement, loadables, config, times
