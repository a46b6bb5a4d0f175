"""Runtime and Engine: plan bytes -> a loaded engine (TensorRT's IRuntime and ICudaEngine).

An ``Engine`` is immutable once loaded (weights are made read-only) and can be shared by any
number of execution contexts on any number of threads. Loading resolves the plan's placement into
partitions and compiles each once through its backend (``engine.runtime.partitions``); plans with
DLA partitions must match their platform's DLA (else ``PlanError``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from backends.contract import CompiledPartition, PartitionDesc
from engine import plan as plan_format
from engine.ir.dtypes import DataType
from engine.ir.errors import ExecutionError, HetrtError, PlanError
from engine.ir.logger import Logger
from engine.ir.memory import MemoryPlan, plan_memory, storage_dtypes
from engine.ir.network import Network
from engine.ir.platforms import KNOWN_PLATFORMS, describe_known
from engine.ir.profiles import OptimizationProfile, Shape

from . import inspector, specialise
from . import partitions as parts_mod
from .context import ExecutionContext
from .executor import Executor
from .partitions import Partition


@dataclass(frozen=True)
class IOTensor:
    """A network input or output: ``dtype`` is what the caller feeds or receives."""

    name: str
    mode: str  # "input" | "output"
    shape: tuple[int, ...]
    dtype: DataType


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
                 logger: Logger | None = None, specialised: bool = False) -> None:
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
        resolved = parts_mod.resolve(network, contents.placement, self._logger)
        records = contents.placement.get("partitions", []) if isinstance(contents.placement, dict) else []
        has_dla = any(p.device == "dla" for p in resolved)
        options = parts_mod.compile_options(header.platform, contents, self._dtypes, self._logger, has_dla)
        descs, compiled = parts_mod.compile_all(parts_mod.describe(resolved, records), network, options)
        self._partitions = tuple(replace(p, backend=d.backend) for p, d in zip(resolved, descs))
        self._descs = tuple(descs)
        self._compiled = tuple(compiled)
        self._executor = Executor(descs, network.inputs, network.outputs)
        self._uses_arena = self._executor.lanes == ("gpu",) or not descs
        self._profiles = specialise.profiles_of(contents.build_config)
        self._specialiser: specialise.Specialiser | None = None
        if self._profiles and not specialised:
            if contents.refit is None or contents.refit.get("format") != "onnx":
                raise PlanError(f"plan '{network.name}' has optimization profiles but not the source model they "
                                f"are specialised from (rebuild it with this version of hetrt)")
            self._specialiser = specialise.Specialiser(self, self._profiles, contents.refit["source"], self._logger)

    # ------------------------------------------------------------------ optimization profiles

    @property
    def is_dynamic(self) -> bool:
        """True for a plan built with optimization profiles: it runs at any shape inside them."""
        return self._specialiser is not None

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._profiles)

    @property
    def profiles(self) -> list[OptimizationProfile]:
        return copy.deepcopy(self._profiles)

    def get_tensor_profile_shape(self, name: str, profile: int = 0) -> tuple[Shape, Shape, Shape]:
        """(min, opt, max) of input ``name`` in optimization profile ``profile``."""
        self.io_tensor(name)
        if not 0 <= profile < len(self._profiles):
            raise ExecutionError(f"optimization profile {profile} does not exist; engine '{self.name}' has "
                                 f"{len(self._profiles)}")
        rng = self._profiles[profile].shapes.get(name)
        if rng is None:
            shape = self.get_tensor_shape(name)
            return shape, shape, shape
        return rng.min, rng.opt, rng.max

    def specialise(self, shapes: dict[str, Shape], profile: int = 0
                   ) -> tuple[Engine, specialise.SpecialisationRecord | None]:
        """The engine for concrete input shapes inside ``profile`` (built on first use, cached),
        and the record of its build when this call built it. Static plans: only their own shapes."""
        if self._specialiser is None:
            for name, shape in shapes.items():
                if tuple(shape) != self.get_tensor_shape(name):
                    raise ExecutionError(f"input '{name}': engine '{self.name}' was built for shape "
                                         f"{self.get_tensor_shape(name)} without optimization profiles; got "
                                         f"{tuple(shape)} (build with --min-shapes/--opt-shapes/--max-shapes)")
            return self, None
        return self._specialiser.engine_for(shapes, profile)

    @property
    def specialisations(self) -> list[specialise.SpecialisationRecord]:
        """Every per-shape engine built so far, with its build time and uses."""
        return [] if self._specialiser is None else list(self._specialiser.records)

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

    def io_tensor(self, name: str) -> IOTensor:
        try:
            return self._io_by_name[name]
        except (KeyError, TypeError):
            raise ExecutionError(f"engine '{self.name}' has no I/O tensor {name!r}; "
                                 f"I/O tensors: {[t.name for t in self._io]}") from None

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.io_tensor(name).shape

    def get_tensor_dtype(self, name: str) -> DataType:
        return self.io_tensor(name).dtype

    def get_tensor_mode(self, name: str) -> str:
        return self.io_tensor(name).mode

    # ------------------------------------------------------------------ plan contents

    @property
    def num_layers(self) -> int:
        return len(self._network.layers)

    @property
    def device_memory_size(self) -> int:
        """Bytes of activation memory each execution context allocates (the arena peak; with
        optimization profiles, the largest peak at any profile's max shapes)."""
        return max([self._memory.peak_bytes, *self._contents.metadata.get("profile_max_memory", [])])

    @property
    def memory_plan(self) -> MemoryPlan:
        return self._memory

    @property
    def storage_dtypes(self) -> dict[str, DataType]:
        """The type each tensor is stored in (the memory planner's; read it, do not change it)."""
        return self._dtypes

    @property
    def partitions(self) -> list[Partition]:
        """The partitions in execution order, with the backend that executes each here."""
        return list(self._partitions)

    @property
    def partition_descs(self) -> tuple[PartitionDesc, ...]:
        """The partitions as the backends see them (boundary tensors, lane, plan record)."""
        return self._descs

    @property
    def compiled_partitions(self) -> tuple[CompiledPartition, ...]:
        """Each partition compiled by its backend (shared by contexts); ``describe()`` reports it."""
        return self._compiled

    @property
    def executor(self) -> Executor:
        return self._executor

    @property
    def uses_arena(self) -> bool:
        """True when every partition runs on the GPU lane in layer order, so executions use the
        context's arena; plans with DLA partitions use fresh tensors per frame."""
        return self._uses_arena

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

    def layer_records(self) -> list[dict[str, Any]]:
        """One dict per layer, the content of ``layer_information('json')``."""
        return inspector.layer_records(self)

    def layer_information(self, format: str = "json") -> str:
        """Per-layer description, as TensorRT's IEngineInspector: 'json' or 'oneline'."""
        return inspector.layer_information(self, format)

    def engine_information(self, format: str = "json") -> str:
        """Engine-wide description: bindings, platform, versions, memory, partitions."""
        return inspector.engine_information(self, format)
