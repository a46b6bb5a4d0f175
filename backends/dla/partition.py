"""The DLA backend behind the backend contract (``backends.contract``): DLA partitions of a plan.

A plan holds each DLA partition as loadable bytes compiled at build time, with the boundary record
the builder wrote (``dla_inputs``/``dla_outputs``, ``dla_config``). ``compile`` here rebuilds the
``DlaPartition`` from them (nothing is lowered again) for the DLA configuration the runtime derives
from the plan's platform and power mode; ``execute`` runs it functionally on dla_sim through
``DlaBackend.execute`` and reports one profiler record per run, named as TensorRT names a DLA
subgraph: ``{ForeignNode[first...last]} (dla<core>)``.
"""

from __future__ import annotations

import time
from typing import Any

from backends.contract import CompileOptions, PartitionDesc, ProfileRecord, TensorStore
from engine.ir.dtypes import Precision
from engine.ir.errors import PlanError
from engine.ir.network import Layer, Network

from .backend import BoundaryTensor, DlaBackend, DlaPartition
from .cubes import hw_precision
from .program import io_format
from .support import supports


def rebuild_partition(blob: bytes, record: dict, network: Network, precision: Precision, core: int) -> DlaPartition:
    """The ``DlaPartition`` of a plan's loadable bytes and partition record."""
    fmt = io_format(hw_precision(precision))

    def bounds(names) -> tuple[BoundaryTensor, ...]:
        return tuple(BoundaryTensor(t, network.tensors[t].shape, fmt) for t in names)

    return DlaPartition(loadable=blob, inputs=bounds(record.get("dla_inputs", [])),
                        outputs=bounds(record.get("dla_outputs", [])), precision=precision,
                        config=record.get("dla_config") or "", core=core, layers=tuple(record.get("layers", ())))


class DlaRuntimeBackend:
    """Executes a plan's DLA partitions on dla_sim. ``cfg``/``precision`` serve ``supports``."""

    name = "dla"

    def __init__(self, cfg: Any = None, precision: Precision = Precision.FP16) -> None:
        self.cfg = cfg
        self.precision = Precision(precision)

    def available(self) -> tuple[bool, str]:
        return True, "dla_sim"

    def supports(self, layer: Layer, network: Network) -> str | None:
        if self.cfg is None:
            return "no DLA configuration given"
        s = supports(layer, network, self.precision, self.cfg)
        return None if s.ok else s.reason

    def compile(self, partition: PartitionDesc, network: Network, options: CompileOptions) -> DlaCompiled:
        if options.dla_config is None:
            raise PlanError(f"DLA partition {partition.name} needs the platform's DLA configuration")
        idx = partition.record.get("loadable")
        if not isinstance(idx, int) or not 0 <= idx < len(options.loadables):
            raise PlanError(f"plan DLA partition {list(partition.layers)[:1]}... names loadable {idx!r}, the plan has "
                            f"{len(options.loadables)}")
        part = rebuild_partition(options.loadables[idx], dict(partition.record), network, options.precision,
                                 partition.core or 0)
        return DlaCompiled(partition, part, DlaBackend(options.dla_config, partition.core or 0))


class DlaCompiled:
    """A rebuilt DLA partition and the core that runs it (engine-level; stateless per context)."""

    def __init__(self, desc: PartitionDesc, partition: DlaPartition, backend: DlaBackend) -> None:
        self.desc = desc
        self.partition = partition
        self.backend = backend
        self.profile_name = f"{{ForeignNode[{desc.span}]}} ({desc.lane})"

    def create_context(self) -> DlaCompiled:
        return self

    def describe(self) -> dict[str, Any]:
        return {"backend": "dla", "core": self.desc.core, "loadable_bytes": len(self.partition.loadable),
                "inputs": [b.name for b in self.partition.inputs], "outputs": [b.name for b in self.partition.outputs]}

    def execute(self, store: TensorStore) -> list[ProfileRecord]:
        t0 = time.perf_counter()
        feeds = {b.name: store.get(b.name) for b in self.partition.inputs}
        outputs, _stats = self.backend.execute(self.partition, feeds)
        for name, value in outputs.items():
            store.put(name, value)
        return [ProfileRecord(self.profile_name, (time.perf_counter() - t0) * 1e3)]
