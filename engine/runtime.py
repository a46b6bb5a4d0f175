"""The runtime: plan bytes → ``Engine`` → ``ExecutionContext`` (TensorRT's IRuntime objects).

An ``Engine`` is immutable once loaded (weights are made read-only) and can be shared by any
number of contexts on any number of threads. Each ``ExecutionContext`` owns its activation arena,
a uint8 buffer of ``engine.device_memory_size`` bytes laid out by ``engine.ir.memory``: layer outputs
are copied into their planned views, so memory reuse between tensors with disjoint lifetimes is
real, and concatenations eliminated by the planner run no code at all. Network outputs are
returned as fresh arrays in the dtype the network declares.

Execution goes through a small seam: the engine resolves each layer's executor from the plan's
placement (``placement["partitions"]``, each naming a ``backend``). Only the numpy reference backend
executes GPU layers today; partitions for other GPU backends run on it too (the architecture's CPU
fallback) and the engine logs that once at load. Partitions with device ``dla`` make the engine run
through ``scheduler.runtime_bridge``: DLA loadables on dla_sim, one worker per DLA core, events on
every GPU<->DLA hand-off; the plan's DLA record must match its platform's DLA (else ``PlanError``).
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine import plan as plan_format
from engine.ir.dtypes import DataType, Precision
from engine.ir.errors import ExecutionError, HetrtError, PlanError
from engine.ir.logger import Logger
from engine.ir.memory import MemoryPlan, plan_memory, storage_dtypes
from engine.ir.network import Layer, Network
from engine.ir.platforms import KNOWN_PLATFORMS, describe_known
from engine.profiler import IProfiler, Profiler

LayerExecutor = Callable[[Layer, list[np.ndarray]], list[np.ndarray]]

_DTYPE_NAMES = {DataType.FLOAT: "FP32", DataType.HALF: "FP16", DataType.INT8: "Int8", DataType.UINT8: "UInt8",
                DataType.INT32: "Int32", DataType.INT64: "Int64", DataType.BOOL: "Bool"}


def _reference_executor() -> LayerExecutor:
    from backends.reference import run_layer

    return run_layer


# Backends that can execute layers here, by the name placement partitions use.
EXECUTORS: dict[str, Callable[[], LayerExecutor]] = {"reference": _reference_executor}
FALLBACK_BACKEND = "reference"


def _gpu_partition_factory() -> Callable[..., Any] | None:
    """backends.gpu's whole-partition executor, or None where the GPU backend cannot run here."""
    from backends.gpu.availability import gpu_available

    if not gpu_available()[0]:
        return None
    from backends.gpu.backend import make_partition

    return make_partition


# Backends that execute a whole run of consecutive layers at once (one CUDA graph per context),
# consulted before EXECUTORS: name -> () -> factory(network, layer_names, tactics, logger) or None.
# The factory's object has ``inputs``, ``outputs`` and ``create_context()`` whose ``execute(feeds)``
# maps host arrays to host arrays.
PARTITION_EXECUTORS: dict[str, Callable[[], Callable[..., Any] | None]] = {"gpu": _gpu_partition_factory}


@dataclass(frozen=True)
class IOTensor:
    """A network input or output: ``dtype`` is what the caller feeds or receives."""

    name: str
    mode: str  # "input" | "output"
    shape: tuple[int, ...]
    dtype: DataType


@dataclass(frozen=True)
class Partition:
    """Consecutive work for one backend; ``backend`` is the one executing it in this process."""

    name: str
    device: str
    backend: str
    planned_backend: str
    layers: tuple[str, ...]


@dataclass(frozen=True)
class _Step:
    layer: Layer
    partition: Partition
    run: LayerExecutor | None  # None: an eliminated concat (its inputs already fill its output)
    out_shapes: tuple[tuple[int, ...], ...]
    out_dtypes: tuple[np.dtype, ...]


class Runtime:
    """Deserializes plans (TensorRT's IRuntime). ``platform``: refuse plans built for another one."""

    def __init__(self, logger: Logger | None = None, platform: str | None = None) -> None:
        if platform is not None and platform not in KNOWN_PLATFORMS:
            raise PlanError(f"unknown runtime platform '{platform}'; known platforms: {describe_known()}")
        self.logger = logger or Logger()
        self.platform = platform

    def deserialize(self, plan_bytes: bytes) -> Engine:
        header, contents = plan_format.deserialize_with_header(plan_bytes, self.platform)
        try:
            engine = Engine(header, contents, self.logger)
        except HetrtError:
            raise
        except Exception as e:  # a safety net: a plan that passed validation must still not crash here
            raise PlanError(f"plan cannot be loaded: {type(e).__name__}: {e}") from e
        self.logger.info(f"Loaded engine '{engine.name}' (plan format {header.format_version}, hetrt "
                         f"{header.producer}, platform {header.platform}): {engine.num_layers} layers, "
                         f"{engine.device_memory_size} bytes of activation memory")
        return engine

    def deserialize_file(self, path: str | Path) -> Engine:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise PlanError(f"cannot read plan file '{path}': {e.strerror or e}") from None
        return self.deserialize(data)


class Engine:
    """A loaded plan (TensorRT's ICudaEngine plus its engine inspector)."""

    def __init__(self, header: plan_format.PlanHeader, contents: plan_format.PlanContents,
                 logger: Logger | None = None) -> None:
        self._logger = logger or Logger()
        self._header = header
        self._contents = contents
        network = contents.network
        for layer in network.layers:
            for w in layer.weights.values():
                w.flags.writeable = False
        self._network = network
        self._memory = plan_memory(network)
        self._dtypes = storage_dtypes(network)
        self._io = tuple([IOTensor(n, "input", network.tensors[n].shape, network.tensors[n].dtype)
                          for n in network.inputs]
                         + [IOTensor(n, "output", network.tensors[n].shape, network.tensors[n].dtype)
                            for n in network.outputs])
        self._io_by_name = {t.name: t for t in self._io}
        self._partitions = self._resolve_partitions(contents.placement)
        part_of = {name: p for p in self._partitions for name in p.layers}
        eliminated = self._memory.eliminated_concats
        steps = []
        for layer in network.layers:
            part = part_of[layer.name]
            run = None if layer.name in eliminated else EXECUTORS.get(part.backend, EXECUTORS[FALLBACK_BACKEND])()
            steps.append(_Step(layer, part, run, tuple(network.tensors[t].shape for t in layer.outputs),
                               tuple(self._dtypes[t].numpy for t in layer.outputs)))
        self._steps = tuple(steps)
        self._groups = self._partition_groups(contents.tactics)
        # Plans with DLA partitions execute through the scheduler's cross-device executor.
        self._hetero = None
        if any(p.device == "dla" for p in self._partitions):
            from scheduler.runtime_bridge import HeteroRunner

            self._hetero = HeteroRunner(header.platform, contents, self._logger)

    # ------------------------------------------------------------------ placement seam

    def _resolve_partitions(self, placement: dict) -> tuple[Partition, ...]:
        names = [layer.name for layer in self._network.layers]
        raw = placement.get("partitions", []) if isinstance(placement, dict) else None
        if not isinstance(raw, list):
            raise PlanError("plan placement: 'partitions' must be a list")
        parts: list[Partition] = []
        seen: dict[str, str] = {}
        for i, p in enumerate(raw):
            if not isinstance(p, dict) or not isinstance(p.get("layers"), list):
                raise PlanError(f"plan placement: partition {i} must be an object with a 'layers' list")
            device, backend = p.get("device", "gpu"), p.get("backend", FALLBACK_BACKEND)
            if not isinstance(device, str) or not isinstance(backend, str):
                raise PlanError(f"plan placement: partition {i} device and backend must be strings")
            for name in p["layers"]:
                if not isinstance(name, str) or name not in names:
                    raise PlanError(f"plan placement: partition {i} names unknown layer {name!r}")
                if name in seen:
                    raise PlanError(f"plan placement: layer '{name}' is in partitions {seen[name]} and {i}")
                seen[name] = str(i)
            runs_on = backend if backend in EXECUTORS or _partition_factory(backend) else FALLBACK_BACKEND
            if device == "dla" and backend == "dla":
                runs_on = "dla"  # DLA loadables run on dla_sim through the cross-device executor
            elif runs_on != backend:
                self._logger.info(f"partition {i} ({device}) was built for backend '{backend}', which cannot "
                                  f"execute here; it runs on the '{runs_on}' backend")
            parts.append(Partition(f"p{i}", device, runs_on, backend, tuple(p["layers"])))
        rest = tuple(n for n in names if n not in seen)
        if rest:
            parts.append(Partition(f"p{len(parts)}", "gpu", FALLBACK_BACKEND, FALLBACK_BACKEND, rest))
        return tuple(parts)

    def _partition_groups(self, tactics: Any) -> dict[int, tuple[int, int, Any]]:
        """Step index -> (first, end, program) for runs of consecutive steps whose partition has a
        whole-partition executor; a program that cannot be built leaves its layers per layer."""
        groups: dict[int, tuple[int, int, Any]] = {}
        i, steps = 0, self._steps
        while i < len(steps):
            part = steps[i].partition
            j = i
            while j < len(steps) and steps[j].partition is part:
                j += 1
            factory = _partition_factory(part.backend)
            if factory is not None:
                names = tuple(s.layer.name for s in steps[i:j])
                try:
                    program = factory(self._network, names, tactics if isinstance(tactics, dict) else {},
                                      self._logger)
                except Exception as e:  # a device failure must not make the plan unloadable
                    self._logger.warning(f"partition {part.name} could not be compiled for backend "
                                         f"'{part.backend}' ({type(e).__name__}: {e}); it runs on the reference "
                                         "backend")
                else:
                    for k in range(i, j):
                        groups[k] = (i, j, program)
            i = j
        return groups

    def _executor_for(self, layer: Layer) -> tuple[str, LayerExecutor]:
        for step in self._steps:
            if step.layer is layer or step.layer.name == layer.name:
                return step.partition.backend, EXECUTORS.get(step.partition.backend, EXECUTORS[FALLBACK_BACKEND])()
        raise ExecutionError(f"layer '{layer.name}' is not part of engine '{self.name}'")

    # ------------------------------------------------------------------ I/O queries

    @property
    def name(self) -> str:
        return self._network.name

    @property
    def num_io_tensors(self) -> int:
        return len(self._io)

    @property
    def io_tensors(self) -> list[IOTensor]:
        return list(self._io)

    @property
    def input_names(self) -> list[str]:
        return list(self._network.inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._network.outputs)

    def _io_tensor(self, name: str) -> IOTensor:
        try:
            return self._io_by_name[name]
        except (KeyError, TypeError):
            raise ExecutionError(f"engine '{self.name}' has no I/O tensor {name!r}; "
                                 f"I/O tensors: {[t.name for t in self._io]}") from None

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._io_tensor(name).shape

    def get_tensor_dtype(self, name: str) -> DataType:
        return self._io_tensor(name).dtype

    def get_tensor_mode(self, name: str) -> str:
        return self._io_tensor(name).mode

    # ------------------------------------------------------------------ plan contents

    @property
    def num_layers(self) -> int:
        return len(self._steps)

    @property
    def device_memory_size(self) -> int:
        """Bytes of activation memory each execution context allocates (the arena peak)."""
        return self._memory.peak_bytes

    @property
    def memory_plan(self) -> MemoryPlan:
        return self._memory

    @property
    def partitions(self) -> list[Partition]:
        return list(self._partitions)

    @property
    def platform(self) -> str:
        return self._header.platform

    @property
    def producer_version(self) -> str:
        return self._header.producer

    @property
    def format_version(self) -> str:
        return self._header.format_version

    @property
    def network(self) -> Network:
        """The loaded network; read it, do not change it (contexts share it)."""
        return self._network

    @property
    def build_config(self) -> dict:
        return copy.deepcopy(self._contents.build_config)

    @property
    def placement(self) -> dict:
        return copy.deepcopy(self._contents.placement)

    @property
    def tactics(self) -> dict:
        return copy.deepcopy(self._contents.tactics)

    @property
    def metadata(self) -> dict:
        return copy.deepcopy(self._contents.metadata)

    @property
    def loadables(self) -> list[bytes]:
        return list(self._contents.loadables)

    def create_execution_context(self) -> ExecutionContext:
        return ExecutionContext(self)

    # ------------------------------------------------------------------ engine inspector

    def _tensor_record(self, name: str) -> dict[str, Any]:
        t = self._network.tensors[name]
        dtype = self._dtypes[name]
        rec: dict[str, Any] = {"Name": name, "Dimensions": list(t.shape),
                               "Format/Datatype": f"Row major linear {_DTYPE_NAMES.get(dtype, dtype.value)}"}
        slot = self._memory.slots.get(name)
        if slot is not None:
            rec["Location"] = "Arena"
            rec["Offset"] = slot.offset
            rec["Bytes"] = slot.nbytes
        elif name in self._network.inputs or name in self._network.outputs:
            rec["Location"] = "Binding"
        else:
            rec["Location"] = "Constant"
        return rec

    def layer_records(self) -> list[dict[str, Any]]:
        """One dict per layer, the content of ``layer_information('json')``."""
        tactics = self._contents.tactics
        out = []
        for step in self._steps:
            layer = step.layer
            rec: dict[str, Any] = {
                "Name": layer.name,
                "LayerType": layer.kind.value,
                "Inputs": [self._tensor_record(t) for t in layer.inputs],
                "Outputs": [self._tensor_record(t) for t in layer.outputs],
                "Precision": (layer.precision or Precision.FP32).value.upper(),
                "Device": (layer.device or step.partition.device).upper(),
                "Partition": step.partition.name,
                "Backend": step.partition.backend,
                "Origin": list(layer.origin),
                "TacticName": tactics.get(layer.name) if isinstance(tactics, dict) else None,
                "Parameters": layer.params.to_dict(),
                "Weights": {k: {"Dimensions": list(w.shape), "Datatype": w.dtype.name}
                            for k, w in sorted(layer.weights.items())},
            }
            if len(layer.origin) > 1:
                rec["Fused"] = " + ".join(layer.origin)
            decision = self._memory.concats.get(layer.name)
            if decision is not None:
                rec["ConcatElimination"] = {"InPlace": decision.in_place, "Reason": decision.reason}
            out.append(rec)
        return out

    def layer_information(self, format: str = "json") -> str:
        """Per-layer description, as TensorRT's IEngineInspector: 'json' or 'oneline'."""
        records = self.layer_records()
        if format == "json":
            return json.dumps({"Layers": records, "Bindings": [t.name for t in self._io]}, indent=2)
        if format == "oneline":
            def tensors(recs: list[dict]) -> str:
                return ", ".join(f"{r['Name']}[{'x'.join(map(str, r['Dimensions']))} "
                                 f"{r['Format/Datatype'].rsplit(' ', 1)[-1]}]" for r in recs)
            lines = []
            for r in records:
                extra = f", fused: {r['Fused']}" if "Fused" in r else ""
                if "ConcatElimination" in r and r["ConcatElimination"]["InPlace"]:
                    extra += ", eliminated (in place)"
                tactic = r["TacticName"] if r["TacticName"] is not None else "-"
                lines.append(f"{r['Name']}: {r['LayerType']} [{r['Precision']}, {r['Device']}/{r['Backend']}, "
                             f"tactic {tactic}{extra}] {tensors(r['Inputs'])} -> {tensors(r['Outputs'])}")
            return "\n".join(lines)
        raise ExecutionError(f"unknown layer information format '{format}'; use 'json' or 'oneline'")

    def engine_information(self, format: str = "json") -> str:
        """Engine-wide description: bindings, platform, versions, memory, partitions."""
        info = {
            "Name": self.name,
            "Platform": self.platform,
            "PlanFormat": self.format_version,
            "Producer": f"hetrt {self.producer_version}",
            "NumLayers": self.num_layers,
            "Bindings": [{"Name": t.name, "Mode": t.mode, "Dimensions": list(t.shape),
                          "Datatype": _DTYPE_NAMES.get(t.dtype, t.dtype.value)} for t in self._io],
            "DeviceMemorySize": self.device_memory_size,
            "ActivationBytesWithoutReuse": self._memory.sum_of_tensor_bytes,
            "ConcatElimination": {n: d.in_place for n, d in self._memory.concats.items()},
            "Partitions": [{"Name": p.name, "Device": p.device, "Backend": p.backend,
                            "PlannedBackend": p.planned_backend, "NumLayers": len(p.layers)}
                           for p in self._partitions],
            "NumLoadables": len(self._contents.loadables),
            "BuildConfig": self._contents.build_config,
        }
        if format == "json":
            return json.dumps(info, indent=2)
        if format == "oneline":
            return "; ".join(f"{k}: {json.dumps(v)}" for k, v in info.items())
        raise ExecutionError(f"unknown engine information format '{format}'; use 'json' or 'oneline'")


def _owned(a: np.ndarray) -> np.ndarray:
    """``a`` if it owns writable memory nobody else holds a view of, else a fresh copy."""
    return a if a.flags.owndata and a.flags.writeable else np.array(a, copy=True)


class ExecutionContext:
    """Runs an engine (TensorRT's IExecutionContext). One context runs one execution at a time;
    use one context per thread. Assign ``profiler`` to receive per-layer times."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.profiler: IProfiler | None = None
        self._busy = threading.Lock()
        self._group_contexts: dict[int, Any] = {}
        size = engine.device_memory_size
        try:
            self._arena = np.zeros(size, dtype=np.uint8)
        except MemoryError:
            raise ExecutionError(f"cannot allocate {size} bytes of activation memory for engine "
                                 f"'{engine.name}'") from None
        dtypes = engine._dtypes
        network = engine._network
        self._views: dict[str, np.ndarray] = {}
        for name, slot in engine._memory.slots.items():
            region = self._arena[slot.offset:slot.offset + slot.nbytes]
            self._views[name] = region.view(dtypes[name].numpy).reshape(network.tensors[name].shape)

    @property
    def arena(self) -> np.ndarray:
        """The context's activation memory (for inspection and tests)."""
        return self._arena

    def _check_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
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
            t = engine._io_by_name[missing[0]]
            raise ExecutionError(f"missing input '{t.name}' (shape {t.shape}, dtype {t.dtype.value}) of engine "
                                 f"'{engine.name}'")
        checked = {}
        for name in inputs:
            t = engine._io_by_name[name]
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
        if not self._busy.acquire(blocking=False):
            raise ExecutionError("this execution context is already executing on another thread; "
                                 "create one context per thread (engine.create_execution_context())")
        try:
            return self._execute(feeds)
        finally:
            self._busy.release()

    def _execute(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.engine._hetero is not None:  # GPU + DLA partitions: scheduler.executor
            return self.engine._hetero.execute(self, feeds)
        env: dict[str, np.ndarray] = self._check_feeds(feeds)
        views = self._views
        profiler = self.profiler
        for i, step in enumerate(self.engine._steps):
            layer = step.layer
            t0 = time.perf_counter()
            if i in self.engine._groups:
                if self._run_group(i, env) and profiler is not None:
                    profiler.report_layer_time(f"{step.partition.name}:{layer.name}+",
                                               (time.perf_counter() - t0) * 1e3)
                continue
            if step.run is None:
                env[layer.outputs[0]] = views[layer.outputs[0]]
            else:
                outs = self._run(step, [env[t] for t in layer.inputs])
                for name, out in zip(layer.outputs, outs):
                    view = views.get(name)
                    if view is not None:
                        np.copyto(view, out)
                        env[name] = view
                    else:
                        env[name] = _owned(out)
            if profiler is not None:
                profiler.report_layer_time(layer.name, (time.perf_counter() - t0) * 1e3)
        # Outputs leave in the dtype the network declares (an I/O reformat, as TensorRT keeps FP32
        # I/O in FP16 engines), whatever precision their producer computed in.
        io = self.engine._io_by_name
        return {t: np.array(env[t], dtype=io[t].dtype.numpy, copy=True) for t in self.engine.output_names}

    def _run_group(self, i: int, env: dict[str, np.ndarray]) -> bool:
        """Run a whole-partition executor at its first step (False for the steps it covers)."""
        first, _, program = self.engine._groups[i]
        if i != first:
            return False
        ctx = self._group_contexts.get(first)
        if ctx is None:  # one per execution context: its own device arena, stream and CUDA graph
            ctx = self._group_contexts[first] = program.create_context()
        try:
            outs = ctx.execute({t: env[t] for t in program.inputs})
        except HetrtError:
            raise
        except Exception as e:
            raise ExecutionError(f"partition {self.engine._steps[i].partition.name} failed on backend "
                                 f"'{self.engine._steps[i].partition.backend}': {type(e).__name__}: {e}") from e
        for name, out in outs.items():
            view = self._views.get(name)
            if view is not None:
                np.copyto(view, out)
                env[name] = view
            else:
                env[name] = _owned(out)
        return True

    @staticmethod
    def _run(step: _Step, args: list[np.ndarray]) -> list[np.ndarray]:
        layer = step.layer
        backend = step.partition.backend
        try:
            outs = step.run(layer, args)
        except HetrtError:
            raise
        except Exception as e:
            raise ExecutionError(f"layer '{layer.name}' ({layer.kind.value}) failed on backend '{backend}': "
                                 f"{type(e).__name__}: {e}") from e
        if not isinstance(outs, (list, tuple)) or len(outs) != len(layer.outputs):
            raise ExecutionError(f"layer '{layer.name}' ({layer.kind.value}) on backend '{backend}' returned "
                                 f"{len(outs) if isinstance(outs, (list, tuple)) else type(outs).__name__} "
                                 f"outputs, expected {len(layer.outputs)}")
        for name, out, shape, dtype in zip(layer.outputs, outs, step.out_shapes, step.out_dtypes):
            if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != dtype:
                got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
                raise ExecutionError(f"layer '{layer.name}' ({layer.kind.value}) on backend '{backend}' produced "
                                     f"output '{name}' as {got}, expected {dtype} {shape}")
        return list(outs)


def _partition_factory(backend: str) -> Callable[..., Any] | None:
    make = PARTITION_EXECUTORS.get(backend)
    return make() if make is not None else None


__all__ = ["Engine", "ExecutionContext", "IOTensor", "Partition", "Profiler", "Runtime"]
