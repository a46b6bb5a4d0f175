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
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from backends.contract import PartitionContext
from engine.ir.errors import ExecutionError, UnsupportedError
from engine.ir.network import Layer
from engine.profiler import IProfiler

from . import device_io
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


def _nhwc_images(value: np.ndarray) -> bool:
    """Whether every image of the 4-D ``value`` is stored channels-last and contiguous (the images
    themselves may lie apart, as in the reference kernels' zero-bordered expansion outputs)."""
    n, c, h, w = value.shape
    _, sc, sh, sw = value.strides
    it = value.itemsize
    return (c == 1 or sc == it) and (w == 1 or sw == c * it) and (h == 1 or sh == w * c * it)


def _same_layout(view: np.ndarray, value: np.ndarray) -> np.ndarray:
    """``view``'s bytes laid out as ``value`` is when that is channels-last (the reference
    kernels' convolution output): the copy stays a straight one instead of a transposition, and
    the next layer reads the layout it computes in. Any other value keeps the C-order view."""
    if value.ndim != 4 or value.flags.c_contiguous or not _nhwc_images(value):
        return view
    n, c, h, w = view.shape
    return view.reshape(n, h, w, c).transpose(0, 3, 1, 2)


class ArenaStore(FrameStore):
    """One frame in the context's arena: outputs with a planned slot are copied into it."""

    def __init__(self, feeds: Mapping[str, np.ndarray], views: Mapping[str, np.ndarray],
                 eliminated: frozenset[str], free_layout: frozenset[str] = frozenset()) -> None:
        super().__init__(feeds)
        self.views = views
        self.eliminated = eliminated
        self.free_layout = free_layout  # slots of their own: may hold a channels-last value in place

    def put(self, name: str, value: np.ndarray) -> None:
        view = self.views.get(name)
        if view is not None:
            view = _same_layout(view, value) if name in self.free_layout else view
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
    Assign ``profiler`` to receive per-layer (reference and GPU: while a profiler is attached, a GPU
    partition runs its launches one by one between CUDA events instead of replaying its graph) and
    per-subgraph (DLA) times; ``last_events`` holds the partition runs of the last execution (host clock)."""

    def __init__(self, engine: Engine, arena: np.ndarray | None = None) -> None:
        """``arena``: activation memory to use (at least ``engine.device_memory_size`` bytes; the
        contexts of one dynamic-shape context's specialised engines share its arena)."""
        self.engine = engine
        self.profiler: IProfiler | None = None
        self.last_events: list[Event] = []
        self._busy = threading.Lock()
        self._contexts: dict[int, PartitionContext] = {}
        self._profile = 0
        self._shapes: dict[str, tuple[int, ...]] = {n: engine.get_tensor_shape(n) for n in engine.input_names}
        self._subs: OrderedDict[Any, ExecutionContext] = OrderedDict()
        self._addresses: dict[str, Any] = {}
        size = engine.device_memory_size
        if arena is not None and arena.nbytes >= size:
            self._arena = arena[:size]
        else:
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
        # tensors with a slot of their own (not a region of an eliminated concat, not such a concat's
        # output): their bytes may take the layout their producer computes in
        concat_outputs = {network.layer(n).outputs[0] for n in engine.memory_plan.eliminated_concats}
        self._free_layout = frozenset(n for n, slot in engine.memory_plan.slots.items()
                                      if slot.parent is None and n not in concat_outputs)

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
        adds a random sleep before each partition, with ``seed``: a test hook for synchronization.
        With optimization profiles, the inputs' shapes select the specialised engine (and must lie
        inside the selected profile)."""
        if not self._busy.acquire(blocking=False):
            raise ExecutionError("this execution context is already executing on another thread; "
                                 "create one context per thread (engine.create_execution_context())")
        try:
            if self.engine.is_dynamic:
                return self._execute_dynamic(frames, delays, seed)
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
        plan = self.engine.memory_plan
        return ArenaStore(feeds, self._views, plan.eliminated_concats, self._free_layout)

    def _run(self, stores: list[FrameStore], delays: Mapping[str, float] | None, seed: int
             ) -> list[dict[str, np.ndarray]]:
        contexts = {p.index: self._context(p.index) for p in self.engine.partition_descs}
        for c in contexts.values():  # device partitions time each launch only while profiled
            set_profiling = getattr(c, "set_layer_profiling", None)
            if set_profiling is not None:
                set_profiling(self.profiler is not None)
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

    # ------------------------------------------------------------------ dynamic shapes

    @property
    def optimization_profile(self) -> int:
        return self._profile

    def set_optimization_profile(self, index: int) -> None:
        """Select optimization profile ``index``; the input shapes become that profile's opt shapes."""
        n = self.engine.num_optimization_profiles
        if not isinstance(index, int) or not 0 <= index < max(n, 1):
            raise ExecutionError(f"optimization profile {index!r} does not exist; engine '{self.engine.name}' has "
                                 f"{n} (0..{max(n, 1) - 1})")
        self._profile = index
        self._shapes = {name: self.engine.get_tensor_profile_shape(name, index)[1] if n else
                        self.engine.get_tensor_shape(name) for name in self.engine.input_names}

    def set_input_shape(self, name: str, shape: Sequence[int]) -> None:
        """Set input ``name``'s shape for the next execution; outside the selected profile an
        ``ExecutionError`` names the input, the dim, the value and the range."""
        if self.engine.get_tensor_mode(name) != "input":
            raise ExecutionError(f"'{name}' is an output of engine '{self.engine.name}', not an input")
        try:
            shape = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise ExecutionError(f"input '{name}': a shape is a sequence of integers, got {shape!r}") from None
        shapes = {**self._shapes, name: shape}
        if self.engine.is_dynamic:
            self.engine._specialiser.check(shapes, self._profile)
        else:
            self.engine.specialise({name: shape})
        self._shapes = shapes

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        """An input's shape as set, or an output's shape at the inputs' shapes (before execution;
        with profiles this specialises the engine for those shapes if not done yet)."""
        if self.engine.get_tensor_mode(name) == "input":
            return self._shapes[name]
        return self._target_engine(self._shapes).get_tensor_shape(name)

    @property
    def specialisations(self) -> list:
        """The engine's per-shape specialisations so far (shared by its contexts)."""
        return self.engine.specialisations

    def _target_engine(self, shapes: Mapping[str, Sequence[int]]) -> Engine:
        engine, record = self.engine.specialise(dict(shapes), self._profile)
        if record is not None and self.profiler is not None:  # the first-run cost, never hidden
            self.profiler.report_layer_time(record.label, record.build_seconds * 1e3)
        return engine

    def _target(self, shapes: Mapping[str, Sequence[int]]) -> ExecutionContext | None:
        """The context of the engine specialised for ``shapes`` (None: this context's own engine)."""
        engine = self._target_engine(shapes)
        self._shapes = {n: tuple(int(d) for d in shapes.get(n, s)) for n, s in self._shapes.items()}
        if engine is self.engine:
            return None
        sub = self._subs.get(engine)
        if sub is None:
            if engine.device_memory_size > self._arena.nbytes:
                self._arena = np.zeros(engine.device_memory_size, dtype=np.uint8)  # grows, never per call
            sub = ExecutionContext(engine, arena=self._arena)
            self._subs[engine] = sub
            while len(self._subs) > 8:
                self._subs.popitem(last=False)
        self._subs.move_to_end(engine)
        sub.profiler = self.profiler
        return sub

    def _feed_shapes(self, feeds: Any) -> dict[str, tuple[int, ...]]:
        if not isinstance(feeds, Mapping):
            raise ExecutionError(f"execute() takes a dict of input name -> array, got {type(feeds).__name__}")
        return {n: device_io.shape_of(n, a) for n, a in feeds.items() if n in self._shapes}

    def _execute_dynamic(self, frames: Sequence[Mapping[str, np.ndarray]], delays: Mapping[str, float] | None,
                         seed: int) -> list[dict[str, np.ndarray]]:
        """Frames in runs of equal shapes, each run on the engine specialised for its shapes."""
        outs: list[dict[str, np.ndarray]] = []
        events: list[Event] = []
        i = 0
        while i < len(frames):
            shapes = self._feed_shapes(frames[i])
            j = i + 1
            while j < len(frames) and self._feed_shapes(frames[j]) == shapes:
                j += 1
            sub = self._target(shapes)
            if sub is None:
                checked = [self.check_feeds(f) for f in frames[i:j]]
                got = (self._run([FrameStore(f) for f in checked], delays, seed) if not self.engine.uses_arena
                       else [self._run([self._arena_store(f)], delays, seed)[0] for f in checked])
            else:
                got = sub.execute_frames(frames[i:j], delays=delays, seed=seed)
                self.last_events = sub.last_events
            events += [Event(e.frame + i, e.partition, e.lane, e.start, e.end) for e in self.last_events]
            outs += got
            i = j
        self.last_events = events
        return outs

    # ------------------------------------------------------------------ device-resident execution

    def set_tensor_address(self, name: str, buffer: Any) -> None:
        """Bind a caller buffer to I/O tensor ``name`` (TensorRT's setTensorAddress): a host numpy
        array or a device array (CuPy, PyTorch CUDA tensor, anything with __cuda_array_interface__
        or DLPack). ``execute_async`` reads bound inputs and writes bound outputs; None unbinds."""
        self.engine.io_tensor(name)
        if buffer is None:
            self._addresses.pop(name, None)
        else:
            device_io.shape_of(name, buffer)
            self._addresses[name] = buffer

    def get_tensor_address(self, name: str) -> Any:
        self.engine.io_tensor(name)
        return self._addresses.get(name)

    def execute_async(self, inputs: Mapping[str, Any] | None = None, stream: Any | None = None,
                      outputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Enqueue the engine on ``stream`` (a CuPy stream, a ``torch.cuda.Stream`` or a raw
        handle) without host copies or synchronization. ``inputs``: host or device arrays by name
        (CuPy, PyTorch CUDA tensors, ...; device arrays are read in place), merged over the buffers
        bound by ``set_tensor_address``; None with nothing bound reuses the inputs staged by the
        last call (engines of one partition). ``outputs`` (and bound output buffers) receive the
        results, copied on ``stream``; other outputs are returned as device arrays owned by this
        context, valid until its next run. Engines whose partitions run on the host (the
        reference backend) accept host arrays only and run synchronously."""
        bound_in = {n: a for n, a in self._addresses.items() if n in self._shapes}
        feeds = None if inputs is None and not bound_in else {**bound_in, **(inputs or {})}
        buffers = {**{n: a for n, a in self._addresses.items() if n not in self._shapes}, **(outputs or {})}
        for name in buffers:
            if self.engine.get_tensor_mode(name) != "output":
                raise ExecutionError(f"'{name}' is an input of engine '{self.engine.name}', not an output")
        if self.engine.is_dynamic:
            sub = self._target(self._feed_shapes(feeds) if feeds is not None else self._shapes)
            if sub is not None:
                return sub.execute_async(feeds, stream, buffers)
        for name, dst in buffers.items():
            device_io.check_output(name, dst, self._target_engine(self._shapes).get_tensor_shape(name),
                                   self.engine.get_tensor_dtype(name).numpy)
        descs = self.engine.partition_descs
        host = [p.name for p in descs if not hasattr(self._context(p.index), "execute_async")]
        if host:
            return device_io.deliver(self._host_async(feeds, host), buffers, stream)
        if feeds is None and len(descs) > 1:
            raise UnsupportedError(f"execute_async without inputs needs an engine of one partition; "
                                   f"'{self.engine.name}' has {len(descs)}")
        if not self._busy.acquire(blocking=False):
            raise ExecutionError("this execution context is already executing on another thread")
        try:
            produced = self._device_async(feeds, device_io.as_stream(stream))
        finally:
            self._busy.release()
        return device_io.deliver(produced, buffers, stream)

    def _device_async(self, feeds: Mapping[str, Any] | None, stream: Any) -> dict[str, Any]:
        env: dict[str, Any] = {}
        if feeds is not None:
            env = {n: (device_io.as_cupy(n, a) if device_io.is_device(a) else a) for n, a in feeds.items()}
        for p in self.engine.partition_descs:
            part_feeds = None if feeds is None else {t: env[t] for t in p.inputs}
            env.update(self._context(p.index).execute_async(part_feeds, stream))
        return {t: env[t] for t in self.engine.output_names}

    def _host_async(self, feeds: Mapping[str, Any] | None, host: list[str]) -> dict[str, Any]:
        """Engines with host partitions: host arrays in, one synchronous run, host arrays out."""
        if feeds is None:
            raise UnsupportedError(f"execute_async without inputs needs device-staged inputs; partitions {host} "
                                   f"of '{self.engine.name}' run on the host")
        device = sorted(n for n, a in feeds.items() if device_io.is_device(a))
        if device:
            backends = sorted({p.backend for p in self.engine.partition_descs if p.name in host})
            raise UnsupportedError(f"execute_async with device arrays (inputs {device}) needs every partition on "
                                   f"the GPU backend; partitions {host} run on {backends}")
        return self.execute(feeds)
