"""The builder's INT8 fallback on the GPU: an INT8 layer the GPU backend has no INT8 kernel for runs
in the build's float precision on the GPU, not in INT8 on the host.

Placement sends a layer the GPU backend refuses to the reference backend on the host (a host
partition: a device -> host copy, numpy, a copy back). For an INT8 layer whose refusal is its INT8
form only (RegNetY-1.6GF's grouped convolutions of 24-channel groups, which no merge of whole
groups pads into the int8 tensors), TensorRT's builder would take its FP16 or FP32 kernel instead:
so does this step. Each such layer is rebuilt as if pinned to the float precision, where the GPU
then runs it; a layer the GPU runs in no precision stays INT8 on the host. The pins go into the
returned config (the plan records them: refit and shape re-specialisation assign the same).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from engine.ir.dtypes import Precision
from engine.ir.network import Network

if TYPE_CHECKING:
    from engine.builder import Builder, BuilderConfig


def host_int8_layers(network: Network, placement: dict) -> dict[str, str]:
    """INT8 layers the GPU backend refused (host partitions' reasons): name -> reason; none where the
    GPU backend does not run here (then every GPU layer runs on the reference backend anyway)."""
    reasons: dict[str, str] = {}
    if placement.get("gpu_backend") != "gpu":
        return reasons
    for rec in placement.get("partitions", []):
        if rec.get("backend") == "reference":
            reasons.update(rec.get("reasons", {}))
    return {n: why for n, why in reasons.items() if network.layer(n).precision is Precision.INT8}


def float_on_gpu(builder: Builder, unassigned: Network, assigned: Network, placed: tuple[dict, list],
                 config: BuilderConfig, int8_scales: Any, dla_refusals: dict | None
                 ) -> tuple[Network, dict, list, BuilderConfig, dict[str, str]]:
    """(network, placement, loadables, config, {layer: why INT8 could not run}): the build as it is
    where no INT8 layer went to the host for want of a GPU INT8 kernel, else rebuilt with those the
    GPU runs in ``config.precision`` pinned to it."""
    placement, loadables = placed
    refused = host_int8_layers(assigned, placement)
    if not refused:
        return assigned, placement, loadables, config, {}
    from backends.gpu.backend import GpuBackend
    from engine.precision_timing import assign_quietly, rebuild_pinned

    float_precision = config.precision
    trial_config = replace(config, layer_precisions={**config.layer_precisions,
                                                     **{n: float_precision for n in refused}})
    trial = unassigned.copy()
    assign_quietly(builder, trial, trial_config, int8_scales)
    gpu = GpuBackend()
    runs = {n: why for n, why in refused.items() if gpu.supports(trial.layer(n), trial) is None}
    if not runs:
        return assigned, placement, loadables, config, {}
    for name, why in runs.items():
        builder.logger.info(f"layer '{name}' has no GPU INT8 kernel ({why}); it runs in "
                            f"{float_precision.value} on the GPU instead of INT8 on the host")
    network, placement, loadables, config = rebuild_pinned(
        builder, unassigned, config, {n: float_precision for n in runs}, int8_scales, dla_refusals,
        assigned=trial if runs.keys() == refused.keys() else None)  # the trial is the build when all run
    return network, placement, loadables, config, runs
