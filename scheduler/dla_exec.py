"""DLA partitions at build and run time: compile to loadables, rebuild and execute from a plan.

Both go through the DLA backend (``backends.dla``): ``DlaBackend(cfg, core).compile(network,
layer_names, precision) -> DlaPartition`` and ``.execute(partition, inputs) -> (outputs, stats)``.
A plan stores each partition's loadable bytes (``PlanContents.loadables``); the runtime rebuilds the
``DlaPartition`` from them with the backend's ``DlaPartition.from_bytes``. Anything the backend does
not provide is an ``UnsupportedError`` that names it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engine.ir.dtypes import Precision
from engine.ir.errors import UnsupportedError
from engine.ir.network import Network

from .dla_source import _backend, dla_config
from .partitions import PartitionSpec
from .platforms import Platform, PowerMode


def partition_bytes(part) -> bytes:
    """The loadable bytes of a compiled ``DlaPartition``."""
    if hasattr(part, "to_bytes"):
        return bytes(part.to_bytes())
    for attr in ("loadable_bytes", "loadable"):
        v = getattr(part, attr, None)
        if isinstance(v, (bytes, bytearray, memoryview)):
            return bytes(v)
        if v is not None and hasattr(v, "to_bytes"):
            return bytes(v.to_bytes())
    raise UnsupportedError(f"cannot serialize DLA partition of type {type(part).__name__}: backends.dla's "
                           "DlaPartition provides neither to_bytes() nor loadable bytes")


def compile_partition(network: Network, spec: PartitionSpec, platform: Platform, mode: PowerMode,
                      precision: Precision) -> tuple[bytes, dict]:
    """(loadable bytes, boundary record) of a DLA partition; the record lets the runtime rebuild it."""
    dla = _backend()
    backend = dla.DlaBackend(dla_config(platform, mode), spec.core)
    part = backend.compile(network, list(spec.layers), precision)
    rec = {"dla_inputs": [b.name for b in getattr(part, "inputs", ())],
           "dla_outputs": [b.name for b in getattr(part, "outputs", ())],
           "dla_format": str(getattr(next(iter(getattr(part, "inputs", ())), None), "format", "")),
           "dla_config": getattr(part, "config", "")}
    return partition_bytes(part), rec


def rebuild_partition(dla, blob: bytes, record: dict, network: Network, precision: Precision, core: int):
    """The backend's ``DlaPartition`` from plan bytes and the partition record."""
    cls = getattr(dla, "DlaPartition", None)
    if cls is None:
        raise UnsupportedError("running a DLA partition needs backends.dla.DlaPartition")
    if hasattr(cls, "from_bytes"):
        return cls.from_bytes(blob)
    from backends.dla.cubes import hw_precision
    from backends.dla.program import io_format

    fmt = io_format(hw_precision(precision))

    def bounds(names):
        return tuple(dla.BoundaryTensor(t, network.tensors[t].shape, fmt) for t in names)

    return cls(loadable=blob, inputs=bounds(record.get("dla_inputs", [])),
               outputs=bounds(record.get("dla_outputs", [])), precision=precision,
               config=record.get("dla_config") or "", core=core, layers=tuple(record.get("layers", ())))


def _real_runner(platform: Platform, mode: PowerMode, core: int, blob: bytes, record: dict, network: Network,
                 precision: Precision) -> Callable:
    dla = _backend()
    part = rebuild_partition(dla, blob, record, network, precision, core)
    backend = dla.DlaBackend(dla_config(platform, mode), core)

    def run(spec: PartitionSpec, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {t: inputs[t] for t in (b.name for b in part.inputs)}
        outputs, _stats = backend.execute(part, feeds)
        return dict(outputs)

    return run


# The factory the runtime uses for DLA partitions; tests of synchronization may replace it.
dla_runner_factory: Callable[..., Callable] = _real_runner
