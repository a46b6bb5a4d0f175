"""Execution contexts: run an engine on inputs (TensorRT's IExecutionContext).

Each context owns its activation arena, a uint8 buffer of ``engine.device_memory_size`` bytes laid
out by ``engine.ir.memory``, and its own state of every compiled partition (a GPU partition's
arena, stream and CUDA graph), created on first use. A plan whose partitions all run on the GPU
lane executes one frame at a time into the arena (``ArenaStore``): layer outputs are copied into
their planned views, so memory reuse between tensors with disjoint lifetimes is real, and
concatenations eliminated by the planner run no code at all. Plans with DLA partitions run their
lanes concurrently and pipeline frames, so each frame gets fresh tensors (``FrameStore``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from backends.contract import PartitionContext
from engine.ir.errors import ExecutionError, UnsupportedError
from engine.ir.network import Layer
from engine.profiler import IProfiler

from .executor import Event, RunResult

if TYPE_CHECKING:
    from .engine import Engine


def _owned(a: np.ndarray) -> np.ndarray:
    """``a`` if it owns writable memory nobody else holds a view of, else a fresh copy."""
    return a if a.flags.owndata and a.flags.writeable else np.array(a, copy=True)


class FrameStore:
    """One frame's tensors as the partitions produced them (fresh arrays per frame)."""

    def __init__(self, feeds: Mapping[str, np.ndarray]) -> None:
        self.values: dict[str, np.ndarray] = dict(feeds)

    def get(self, name: str) -> np.ndarray:
        return self.values[name]

    def put(self, name: str, value: np.ndarray) -> None:
        self.values[name] = value

    def in_place(self, layer: Layer) -> bool:
        return False

    def __contains__(self, name: object) -> bool:
        return name in self.values


class ArenaStore(FrameStore):
    """One frame in the context's arena: outputs with a planned slot are copied into it."""

    def __init__(self, feeds: Mapping[str, np.ndarray], views: Mapping[str, np.ndarray],
                 eliminated: frozenset[str]) -> None:
        super().__init__(feeds)
        self.views = views
        self.eliminated = eliminated

    def put(self, name: str, value: np.ndarray) -> None:
        view = self.views.get(name)
        if view is not None:
            np.copyto(view, value)
            self.values[name] = view
        else:
            self.values[name] = _owned(value)

    def in_place(self, layer: Layer) -> bool:
        """An eliminated concat: its inputs already fill its output's slot."""
        if layer.name not in self.eliminated:
            return False
        self.values[layer.outputs[0]] = self.views[layer.outputs[0]]
        return True


class ExecutionContext:
    """Runs an engine. One context runs one execution at a time; use one context per thread.
    Assign ``profiler`` to receive per-layer (reference), per-graph (GPU) and per-subgraph (DLA)
    times; ``last_events`` holds the partition runs of the last execution (host clock)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.profiler: IProfiler | None = None
        self.last_events: list[Event] = []
        self._busy = threading.Lock()
        self._contexts: dict[int, PartitionContext] = {}
        size = engine.device_memory_size
        try:
            self._arena = np.zeros(size, dtype=np.uint8)
        except MemoryError:
            raise ExecutionError(f"cannot allocate {size} bytes of activation memory for engine "
                                 f"'{engine.name}'") from None
        network = engine.network
        dtypes = engine.storage_dtypes
        self._views: dict[str, np.ndarray] = {}
        for name, slot in engine.memory_plan.slots.items():
            region = self._arena[slot.offset:slot.offset + slot.nbytes]
            self._views[name] = region.view(dtypes[name].numpy).reshape(network.tensors[name].shape)

    @property
    def arena(self) -> np.ndarray:
        """The context's activation memory (for inspection and tests)."""
        return self._arena

    def partition_context(self, name: str) -> PartitionContext:
        """This context's state of the engine's partition ``name`` (e.g. a GPU partition's
        ``GpuContext`` with its CUDA graph and stream), created on first use."""
        for p in self.engine.partition_descs:
            if p.name == name:
                return self._context(p.index)
        raise ExecutionError(f"engine '{self.engine.name}' has no partition {name!r}; partitions: "
                             f"{[p.name for p in self.engine.partition_descs]}")

    def _context(self, index: int) -> PartitionContext:
        ctx = self._contexts.get(index)
        if ctx is None:  # one per execution context: its own device arena, stream and CUDA graph
            ctx = self._contexts[index] = self.engine.compiled_partitions[index].create_context()
        return ctx

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The inputs as read-only views, each checked against the engine's bindings."""
        engine = self.engine
        if not isinstance(feeds, Mapping):
            raise ExecutionError(f"execute() takes a dict of input name -> numpy array, got {type(feeds).__name__}")
        inputs = engine.input_names
        for name in feeds:
            if name not in inputs:
                what = "is an output, not an input" if name in engine.output_names else "is not an input"
                raise ExecutionError(f"'{name}' {what} of engine '{engine.name}'; inputs: {inputs}")
        missing = [n for n in inputs if n not in feeds]
        if missing:
            t = engine.io_tensor(missing[0])
            raise ExecutionError(f"missing input '{t.name}' (shape {t.shape}, dtype {t.dtype.value}) of engine "
                                 f"'{engine.name}'")
        checked = {}
        for name in inputs:
            t = engine.io_tensor(name)
            a = feeds[name]
            if not isinstance(a, np.ndarray):
                raise ExecutionError(f"input '{name}': expected a numpy.ndarray of shape {t.shape} and dtype "
                                     f"{t.dtype.value}, got {type(a).__name__}")
            if a.dtype != t.dtype.numpy:
                raise ExecutionError(f"input '{name}': expected dtype {t.dtype.value}, got {a.dtype} "
                                     f"(convert with .astype(numpy.{t.dtype.value}))")
            if tuple(a.shape) != t.shape:
                raise ExecutionError(f"input '{name}': expected shape {t.shape}, got {tuple(a.shape)}")
            view = a.view()
            view.flags.writeable = False  # layers read the caller's array; none may write it
            checked[name] = view
        return checked

    def execute(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the engine on named inputs; returns the outputs by name as fresh arrays."""
        return self.execute_frames([feeds])[0]

    def execute_frames(self, frames: Sequence[Mapping[str, np.ndarray]], *, delays: Mapping[str, float] | None = None,
                       seed: int = 0) -> list[dict[str, np.ndarray]]:
        """Run a stream of frames; with DLA partitions, frames pipeline over the GPU and DLA lanes
        (frame f+1 starts on one lane while frame f runs on another). ``delays`` (lane -> seconds)
        adds a random sleep before each partition, with ``seed``: a test hook for synchronization."""
        if not self._busy.acquire(blocking=False):
            raise ExecutionError("this execution context is already executing on another thread; "
                                 "create one context per thread (engine.create_execution_context())")
        try:
            checked = [self.check_feeds(f) for f in frames]
            if not self.engine.uses_arena:
                return self._run([FrameStore(f) for f in checked], delays, seed)
            outs, events = [], []
            for fi, f in enumerate(checked):  # one lane in layer order: frame after frame in the arena
                outs += self._run([self._arena_store(f)], delays, seed)
                events += [Event(fi, e.partition, e.lane, e.start, e.end) for e in self.last_events]
            self.last_events = events
            return outs
        finally:
            self._busy.release()

    def _arena_store(self, feeds: Mapping[str, np.ndarray]) -> ArenaStore:
        return ArenaStore(feeds, self._views, self.engine.memory_plan.eliminated_concats)

    def _run(self, stores: list[FrameStore], delays: Mapping[str, float] | None, seed: int
             ) -> list[dict[str, np.ndarray]]:
        contexts = {p.index: self._context(p.index) for p in self.engine.partition_descs}
        result: RunResult = self.engine.executor.run(stores, contexts, delays, seed)
        self.last_events = result.events
        profiler = self.profiler
        if profiler is not None:
            for _, _, records in result.profile:
                for r in records:
                    profiler.report_layer_time(r.name, r.ms)
        # Outputs leave in the dtype the network declares (an I/O reformat, as TensorRT keeps FP32
        # I/O in FP16 engines), whatever precision their producer computed in.
        engine = self.engine
        return [{t: np.array(s.get(t), dtype=engine.io_tensor(t).dtype.numpy, copy=True) for t in engine.output_names}
                for s in stores]

    def execute_async(self, inputs: Mapping[str, Any] | None = None, stream: Any | None = None) -> dict[str, Any]:
        """Enqueue the engine on a device ``stream`` without host copies or synchronization:
        ``inputs`` are host or device (CuPy) arrays, None to reuse the inputs staged by the last
        call (engines of one partition); returns the outputs as device arrays owned by this context,
        valid until its next run. Needs every partition on a backend that enqueues (the GPU backend),
        else ``UnsupportedError``."""
        descs = self.engine.partition_descs
        if inputs is None and len(descs) > 1:
            raise UnsupportedError(f"execute_async without inputs needs an engine of one partition; "
                                   f"'{self.engine.name}' has {len(descs)}")
        if not self._busy.acquire(blocking=False):
            raise ExecutionError("this execution context is already executing on another thread")
        try:
            host = [p.name for p in descs if not hasattr(self._context(p.index), "execute_async")]
            if host:
                raise UnsupportedError(f"execute_async needs every partition on the GPU backend; partitions {host} "
                                       f"run on {sorted({p.backend for p in descs if p.name in host})}")
            env: dict[str, Any] = dict(inputs) if inputs is not None else {}
            for p in descs:
                feeds = None if inputs is None else {t: env[t] for t in p.inputs}
                env.update(self._context(p.index).execute_async(feeds, stream))
            return {t: env[t] for t in self.engine.output_names}
        finally:
            self._busy.release()
