"""From a plan's placement to compiled partitions: the runtime's only use of the backends.

Each placement record names a device (``gpu``/``dla``), the backend the builder chose for it and,
for the DLA, its core and loadable. The runtime cuts the network, in execution order, into runs of
consecutive layers of one record (layers no record names form a reference partition), checks the
plan's DLA against its platform, and compiles every partition once through the backend contract
(``backends.contract``). It never moves a layer to another backend: a partition whose backend
cannot execute in this process (no GPU here) or fails to compile runs whole on the reference
backend, and the engine logs it and shows it (``Backend`` vs ``PlannedBackend``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from backends.contract import Backend, CompiledPartition, CompileOptions, PartitionDesc, partition_io
from engine.ir.dtypes import DataType, Precision
from engine.ir.errors import PlanError
from engine.ir.logger import Logger
from engine.ir.network import Network


def _reference() -> Backend:
    from backends.reference.partition import ReferenceBackend

    return ReferenceBackend()


def _gpu() -> Backend:
    from backends.gpu.backend import GpuBackend

    return GpuBackend()


def _dla() -> Backend:
    from backends.dla.partition import DlaRuntimeBackend

    return DlaRuntimeBackend()


# The backends the runtime executes partitions on, by the name placement records use.
BACKENDS: dict[str, Callable[[], Backend]] = {"reference": _reference, "gpu": _gpu, "dla": _dla}
FALLBACK_BACKEND = "reference"


@dataclass(frozen=True)
class Partition:
    """A partition as the engine runs it: ``backend`` executes it here, ``planned_backend`` is the
    builder's choice; ``reason`` says why the builder placed it on the reference backend, if it did."""

    name: str
    device: str
    backend: str
    planned_backend: str
    layers: tuple[str, ...]
    core: int | None = None
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    reason: str = ""


def _records(network: Network, placement: Any) -> list[dict]:
    """The placement's partition records, checked as the plan verifier checks them (an engine built
    in memory never went through ``engine.plan.deserialize``)."""
    from engine.verify.checks import check_partitions

    if not isinstance(placement, dict):
        raise PlanError("plan placement: 'partitions' must be a list")
    return check_partitions(placement, network)


def _runs(network: Network, records: list[dict]) -> list[tuple[int, list[str]]]:
    """(record index, layers) for each run of consecutive layers of one record, execution order;
    layers no record names get index len(records)."""
    record_of = {name: i for i, r in enumerate(records) for name in r["layers"]}
    runs: list[tuple[int, list[str]]] = []
    for layer in network.layers:
        i = record_of.get(layer.name, len(records))
        if runs and runs[-1][0] == i:
            runs[-1][1].append(layer.name)
        else:
            runs.append((i, [layer.name]))
    return runs


def _usable(backend: str, logger: Logger, told: set[str]) -> bool:
    make = BACKENDS.get(backend)
    if make is None:
        return False
    ok, why = make().available()
    if not ok and backend not in told:
        told.add(backend)
        logger.info(f"backend '{backend}' cannot execute here ({why})")
    return ok


def resolve(network: Network, placement: Any, logger: Logger) -> list[Partition]:
    """The engine's partitions, in execution order (see the module docstring)."""
    records = _records(network, placement)
    names = [f"p{i}" for i in range(len(records) + 1)]
    runs = _runs(network, records)
    count = {i: sum(1 for j, _ in runs if j == i) for i, _ in runs}
    seen: dict[int, int] = {}
    told: set[str] = set()
    parts = []
    for i, layers in runs:
        rec = records[i] if i < len(records) else {}
        k = seen[i] = seen.get(i, -1) + 1
        name = names[i] if count[i] == 1 else f"{names[i]}.{k}"
        device, planned = rec.get("device", "gpu"), rec.get("backend", FALLBACK_BACKEND)
        core = rec.get("core") if device == "dla" else None
        if device == "dla":
            runs_on = "dla"  # DLA loadables run on dla_sim
        elif _usable(planned, logger, told):
            runs_on = planned
        else:
            runs_on = FALLBACK_BACKEND
            logger.info(f"partition {name} ({device}) was built for backend '{planned}', which cannot execute here; "
                        f"it runs on the '{runs_on}' backend")
        ins, outs = partition_io(network, layers)
        parts.append(Partition(name, device, runs_on, planned, tuple(layers), core, ins, outs,
                               str(rec.get("reason", ""))))
    return parts


def describe(parts: list[Partition], records: list[dict]) -> list[PartitionDesc]:
    record_of = {name: r for r in records for name in r["layers"]}
    return [PartitionDesc(p.name, i, p.device, p.core, p.backend, p.layers, p.inputs, p.outputs,
                          record_of.get(p.layers[0], {})) for i, p in enumerate(parts)]


def check_dla_platform(platform_tag: str, placement: dict) -> None:
    """Refuse a plan whose DLA partitions were built for another DLA than the platform's."""
    from scheduler.platforms import PLATFORMS

    rec = placement.get("dla")
    plat = PLATFORMS.get(platform_tag)
    if plat is None:
        raise PlanError(f"plan targets platform '{platform_tag}', which has no SoC model to run DLA partitions on")
    if not isinstance(rec, dict):
        raise PlanError("plan placement has DLA partitions but no 'dla' record (version, cores); rebuild the plan")
    if rec.get("version") != plat.dla_version or rec.get("cores") != plat.dla_cores:
        raise PlanError(f"plan's DLA partitions were built for {rec.get('cores')} DLA v{rec.get('version')} "
                        f"core(s), but platform '{platform_tag}' has {plat.dla_cores} DLA v{plat.dla_version} "
                        f"core(s); rebuild the plan for this platform")
    for i, p in enumerate(placement.get("partitions", [])):
        if p.get("device") == "dla":
            core = p.get("core")
            if not isinstance(core, int) or not 0 <= core < plat.dla_cores:
                raise PlanError(f"plan partition {i} runs on DLA core {core!r}; platform '{platform_tag}' has "
                                f"cores 0..{plat.dla_cores - 1}")


def compile_options(platform_tag: str, contents: Any, dtypes: Mapping[str, DataType], logger: Logger,
                    has_dla: bool) -> CompileOptions:
    placement = contents.placement
    cfg = None
    if has_dla:
        from scheduler.dla_source import dla_config
        from scheduler.platforms import PLATFORMS

        check_dla_platform(platform_tag, placement)
        plat = PLATFORMS[platform_tag]
        cfg = dla_config(plat, plat.mode(placement.get("power_mode")))
    tactics = contents.tactics if isinstance(contents.tactics, dict) else {}
    return CompileOptions(logger, tactics, tuple(contents.loadables), cfg,
                          Precision(placement.get("precision", "fp16")), dtypes)


def compile_all(descs: list[PartitionDesc], network: Network, options: CompileOptions
                ) -> tuple[list[PartitionDesc], list[CompiledPartition]]:
    """Compile every partition once; a non-DLA partition that fails to compile runs on the
    reference backend (logged). Returns the descriptions as executed and their compiled forms."""
    out_descs, compiled = [], []
    for d in descs:
        try:
            c = BACKENDS[d.backend]().compile(d, network, options)
        except PlanError:
            raise
        except Exception as e:
            if d.device == "dla" or d.backend == FALLBACK_BACKEND:
                raise
            options.logger.warning(f"partition {d.name} could not be compiled for backend '{d.backend}' "
                                   f"({type(e).__name__}: {e}); it runs on the reference backend")
            d = PartitionDesc(d.name, d.index, d.device, d.core, FALLBACK_BACKEND, d.layers, d.inputs, d.outputs,
                              d.record)
            c = BACKENDS[FALLBACK_BACKEND]().compile(d, network, options)
        out_descs.append(d)
        compiled.append(c)
    return out_descs, compiled
