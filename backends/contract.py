"""The backend contract: what the one runtime (``engine.runtime``) asks of every backend.

A plan's placement cuts the network into partitions, each naming the backend that executes it
(``reference``, ``gpu``, ``dla``). For each backend the runtime uses the same four steps:

1. ``supports(layer, network) -> None | reason`` -- asked by the builder, never by the runtime:
   a layer a backend refuses is placed elsewhere at build time and the reason is written into the
   plan, so the runtime never re-partitions.
2. ``compile(partition, network, options) -> CompiledPartition`` -- once per engine, at load
   (weights uploaded, kernels compiled, DLA loadables parsed); shared by every context.
3. ``CompiledPartition.create_context() -> PartitionContext`` -- per execution context state
   (activation buffers, streams, captured CUDA graphs), so contexts run side by side on threads.
4. ``PartitionContext.execute(store) -> [ProfileRecord]`` -- read the partition's inputs from the
   frame's ``TensorStore``, put its outputs there, and report the time it took, named as the
   profiler shows it. Backends that can run asynchronously on a device stream also offer
   ``enqueue`` (see ``backends.gpu.backend``); those that can time each layer on the device offer
   ``set_layer_profiling(on)``, which the runtime turns on while a profiler is attached.

This module imports only the IR, so the runtime, the builder and every backend can share it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from engine.ir.dtypes import DataType, Precision
from engine.ir.logger import Logger
from engine.ir.network import Layer, Network
from engine.ir.partition_io import partition_io as _partition_io


@dataclass(frozen=True)
class PartitionDesc:
    """One partition of a plan as the runtime hands it to a backend.

    ``inputs`` are the tensors it reads from outside (network inputs, other partitions' outputs);
    ``outputs`` the tensors it writes that someone outside reads (or that are network outputs).
    ``record`` is the plan's placement record of this partition (DLA loadable index, boundaries).
    """

    name: str
    index: int
    device: str  # "gpu" | "dla"
    core: int | None  # DLA core; None for GPU-lane partitions
    backend: str
    layers: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    record: Mapping[str, Any] = field(default_factory=dict)

    @property
    def lane(self) -> str:
        """The worker that runs it: 'gpu' (GPU and host partitions, in order) or 'dla<core>'."""
        return f"dla{self.core}" if self.device == "dla" else "gpu"

    @property
    def span(self) -> str:
        return self.layers[0] if len(self.layers) == 1 else f"{self.layers[0]}...{self.layers[-1]}"


@dataclass(frozen=True)
class CompileOptions:
    """What a backend may need beyond the network: tactics chosen at build, the plan's DLA
    loadables, the DLA configuration of the platform's power mode, the plan's precision."""

    logger: Logger
    tactics: Mapping[str, Any] = field(default_factory=dict)
    loadables: Sequence[bytes] = ()
    dla_config: Any = None  # dla_sim.config.DlaConfig where the plan has DLA partitions
    precision: Precision = Precision.FP16
    dtypes: Mapping[str, DataType] = field(default_factory=dict)  # storage type per tensor (memory planner's)


@dataclass(frozen=True)
class ProfileRecord:
    """One profiler line: a layer (reference), a partition's CUDA graph or a DLA subgraph."""

    name: str
    ms: float


@runtime_checkable
class TensorStore(Protocol):
    """A frame's tensors. ``put`` may copy into planned activation memory; ``in_place(layer)``
    says the layer's output was already written by its producers (an eliminated concat)."""

    def get(self, name: str) -> np.ndarray: ...

    def put(self, name: str, value: np.ndarray) -> None: ...

    def in_place(self, layer: Layer) -> bool: ...


class PartitionContext(Protocol):
    def execute(self, store: TensorStore) -> list[ProfileRecord]: ...


class CompiledPartition(Protocol):
    desc: PartitionDesc

    def create_context(self) -> PartitionContext: ...

    def describe(self) -> dict[str, Any]: ...


class Backend(Protocol):
    """A backend the runtime can execute partitions on."""

    name: str

    def available(self) -> tuple[bool, str]:
        """(True, description) where it can execute in this process, else (False, why not)."""
        ...

    def supports(self, layer: Layer, network: Network) -> str | None:
        """None when it runs ``layer``, else the reason it cannot (asked at build time)."""
        ...

    def compile(self, partition: PartitionDesc, network: Network, options: CompileOptions) -> CompiledPartition: ...


def partition_io(network: Network, layers: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(inputs, outputs) of the partition made of ``layers`` (the one rule, ``engine.ir.partition_io``)."""
    io = _partition_io(network, layers)
    return io.inputs, io.outputs


__all__ = ["Backend", "CompileOptions", "CompiledPartition", "PartitionContext", "PartitionDesc", "ProfileRecord",
           "TensorStore", "partition_io"]
