"""DLA partitions at build time: compile a placed partition to a loadable for the plan.

Goes through the DLA backend (``backends.dla``): ``DlaBackend(cfg, core).compile(network,
layer_names, precision) -> DlaPartition``. A plan stores each partition's loadable bytes
(``PlanContents.loadables``) and the boundary record returned here; the runtime rebuilds the
partition from both (``backends.dla.partition``). Anything the backend does not provide is an
``UnsupportedError`` that names it.
"""

from __future__ import annotations

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
