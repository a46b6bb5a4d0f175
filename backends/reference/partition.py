"""The reference backend behind the backend contract (``backends.contract``): layer by layer on
the numpy kernels, in the network's order.

It supports every layer kind that has a reference kernel, so it is where the builder places what
another backend refuses (a host partition) and where a partition runs whose backend cannot execute
in this process. Each layer's outputs are checked against the shape and storage type the memory
planner expects; a kernel failure becomes an ``ExecutionError`` naming the layer and backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from backends.contract import CompileOptions, PartitionDesc, ProfileRecord, TensorStore
from engine.ir.errors import ExecutionError, HetrtError
from engine.ir.memory import storage_dtypes
from engine.ir.network import Layer, Network

from .kernels import KERNELS, run_layer

LayerFn = Callable[[Layer, list[np.ndarray]], list[np.ndarray]]


def _run_any_layout(layer: Layer, args: list[np.ndarray]) -> list[np.ndarray]:
    """The numpy kernels, outputs in whatever layout they computed (see ``run_layer``)."""
    return run_layer(layer, args, any_layout=True)


class ReferenceBackend:
    """``layer_fn`` computes one layer (the numpy kernels; tests may substitute one)."""

    name = "reference"

    def __init__(self, layer_fn: LayerFn | None = None) -> None:
        self.layer_fn: LayerFn = layer_fn or _run_any_layout
        # run_layer's outputs are new arrays (never views of an input or a weight): a store may
        # keep them as computed; a substituted layer_fn's may alias, so the store copies those
        self.fresh_outputs = layer_fn is None

    def available(self) -> tuple[bool, str]:
        return True, "numpy"

    def supports(self, layer: Layer, network: Network) -> str | None:
        if layer.kind in KERNELS:
            return None
        return f"kind '{layer.kind.value}' has no reference kernel"

    def compile(self, partition: PartitionDesc, network: Network, options: CompileOptions) -> ReferencePartition:
        return ReferencePartition(partition, network, options, self.layer_fn, self.name, self.fresh_outputs)


class ReferencePartition:
    """A run of layers with their expected output shapes and storage types (engine-level)."""

    def __init__(self, desc: PartitionDesc, network: Network, options: CompileOptions, layer_fn: LayerFn,
                 backend: str, fresh_outputs: bool = False) -> None:
        self.desc = desc
        self.fresh_outputs = fresh_outputs
        self.backend = backend
        self.layer_fn = layer_fn
        by_name = {la.name: la for la in network.layers}
        dtypes = options.dtypes or storage_dtypes(network)
        self.exported = frozenset(desc.outputs)  # read outside the partition: C-contiguous there
        self.steps = tuple((by_name[n], tuple(network.tensors[t].shape for t in by_name[n].outputs),
                            tuple(dtypes[t].numpy for t in by_name[n].outputs)) for n in desc.layers)

    def create_context(self) -> ReferencePartition:
        return self  # stateless: layer outputs go to the frame's store

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "layers": len(self.steps)}

    def execute(self, store: TensorStore) -> list[ProfileRecord]:
        records = []
        for layer, shapes, dtypes in self.steps:
            t0 = time.perf_counter()
            if not store.in_place(layer):
                outs = self._run(layer, [store.get(t) for t in layer.inputs], shapes, dtypes)
                for name, out in zip(layer.outputs, outs):
                    store.put(name, np.ascontiguousarray(out) if name in self.exported and out.ndim else out,
                              fresh=self.fresh_outputs)
            records.append(ProfileRecord(layer.name, (time.perf_counter() - t0) * 1e3))
        return records

    def _run(self, layer: Layer, args: list[np.ndarray], shapes: tuple, dtypes: tuple) -> list[np.ndarray]:
        backend = self.backend
        try:
            outs = self.layer_fn(layer, args)
        except HetrtError:
            raise
        except Exception as e:
            raise ExecutionError(f"layer '{layer.name}' ({layer.kind.value}) failed on backend '{backend}': "
                                 f"{type(e).__name__}: {e}") from e
        if not isinstance(outs, (list, tuple)) or len(outs) != len(layer.outputs):
            raise ExecutionError(f"layer '{layer.name}' ({layer.kind.value}) on backend '{backend}' returned "
                                 f"{len(outs) if isinstance(outs, (list, tuple)) else type(outs).__name__} "
                                 f"outputs, expected {len(layer.outputs)}")
        for name, out, shape, dtype in zip(layer.outputs, outs, shapes, dtypes):
            if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != dtype:
                got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
                raise ExecutionError(f"layer '{layer.name}' ({layer.kind.value}) on backend '{backend}' produced "
                                     f"output '{name}' as {got}, expected {dtype} {shape}")
        return list(outs)
