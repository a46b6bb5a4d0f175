"""An ``onnx.backend.base.Backend`` over the whole engine, so onnx's own backend tests run on hetrt.

``prepare`` parses the model and builds an engine: network → builder → plan bytes → runtime →
execution context, exactly as a user would. Two ONNX features need values hetrt fixes at build
time, and the rep defers the build to the first ``run`` for them:

* inputs with symbolic dims: the engine is built for the shapes actually fed (cached per shape);
* graph inputs used as parameters (a Reshape shape, Pad pads, …): like TensorRT's shape-tensor
  inputs, their values are bound at build time (cached per value).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, namedtupledict

from engine.builder import BuilderConfig, build_serialized
from engine.ir.errors import ExecutionError, UnsupportedError
from engine.ir.logger import Logger, Severity
from engine.ir.network import Network
from engine.onnx_parser import NonConstantError, parse
from engine.onnx_parser.context import elem_type_name, numpy_dtype_of
from engine.runtime import Runtime

# How many parameter inputs a model may bind before we give up (each bind re-parses).
_MAX_BINDS = 16


class _Engine:
    """One network built into a plan, loaded back and ready to execute on feeds by name."""

    def __init__(self, network: Network) -> None:
        self.network = network
        plan = build_serialized(network, BuilderConfig(), Logger(Severity.ERROR))
        self._context = Runtime(Logger(Severity.ERROR)).deserialize(plan).create_execution_context()

    def execute(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._context.execute(feeds)


class HetrtRep(BackendRep):
    """A prepared model: positional inputs in, outputs in graph order out."""

    def __init__(self, model: onnx.ModelProto, **parse_kwargs: Any) -> None:
        self.model = model
        inits = {i.name for i in model.graph.initializer}
        self.input_infos = [vi for vi in model.graph.input if vi.name not in inits]
        self.input_names = [vi.name for vi in self.input_infos]
        self.output_names = [o.name for o in model.graph.output]
        self._parse_kwargs = parse_kwargs
        self._bound: list[str] = []  # graph inputs bound at build time
        self._engines: dict[Any, _Engine] = {}
        self._dynamic = any(not d.HasField("dim_value") for vi in self.input_infos
                            for d in vi.type.tensor_type.shape.dim) and "input_shapes" not in parse_kwargs
        if not self._dynamic:
            self._engine_for({}, None)  # build now: errors surface at prepare time

    def _engine_for(self, feeds: Mapping[str, np.ndarray], shapes: dict[str, tuple] | None) -> _Engine:
        for _ in range(_MAX_BINDS):
            bound = {n: np.asarray(feeds[n]) for n in self._bound if n in feeds}
            if len(bound) < len(self._bound):
                return None  # needs values that only run() has
            key = (tuple(sorted((shapes or {}).items())),
                   tuple((n, v.dtype.str, v.shape, v.tobytes()) for n, v in sorted(bound.items())))
            if key in self._engines:
                return self._engines[key]
            kwargs = dict(self._parse_kwargs)
            if shapes:
                kwargs["input_shapes"] = {n: s for n, s in shapes.items() if n not in bound}
            try:
                network = parse(self.model, constant_inputs=bound or None, **kwargs)
            except NonConstantError as e:
                if e.graph_input and e.tensor not in self._bound:
                    self._bound.append(e.tensor)
                    continue
                raise
            engine = _Engine(network)
            self._engines[key] = engine
            return engine
        raise UnsupportedError(f"model needs more than {_MAX_BINDS} inputs bound at build time")

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        feeds = self._feeds(inputs)
        shapes = {n: tuple(a.shape) for n, a in feeds.items()} if self._dynamic else None
        engine = self._engine_for(feeds, shapes)
        if engine is None:
            raise ExecutionError("inputs bound at build time were not fed")
        net_feeds = {n: a for n, a in feeds.items() if n in engine.network.inputs}
        outs = engine.execute(net_feeds)
        results = []
        for n in self.output_names:
            # The engine may hand back float tensors in its compute precision; ONNX callers get the
            # element type the model declares.
            want = engine.network.tensors[n].dtype.numpy
            a = np.asarray(outs[n])
            results.append(a.astype(want) if a.dtype != want else a)
        return namedtupledict("Outputs", self.output_names)(*results)

    def _feeds(self, inputs: Any) -> dict[str, np.ndarray]:
        if isinstance(inputs, Mapping):
            feeds = {k: np.asarray(v) for k, v in inputs.items()}
            unknown = set(feeds) - set(self.input_names)
            if unknown:
                raise ExecutionError(f"unknown input(s) {sorted(unknown)}; the model's inputs are {self.input_names}")
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            inputs = list(inputs)
            if len(inputs) != len(self.input_names):
                raise ExecutionError(f"model takes {len(self.input_names)} inputs {self.input_names}, "
                                     f"got {len(inputs)}")
            feeds = {n: np.asarray(v) for n, v in zip(self.input_names, inputs)}
        for vi in self.input_infos:
            if vi.name not in feeds:
                raise ExecutionError(f"input '{vi.name}' is missing")
            a = feeds[vi.name]
            tt = vi.type.tensor_type
            want = numpy_dtype_of(tt.elem_type)
            if want is not None and a.dtype != want:
                raise ExecutionError(f"input '{vi.name}': expected element type {elem_type_name(tt.elem_type)} "
                                     f"({want}), got {a.dtype}")
            if tt.HasField("shape"):
                dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
                if len(dims) != a.ndim or any(d is not None and d != s for d, s in zip(dims, a.shape)):
                    shown = tuple(d if d is not None else "?" for d in dims)
                    raise ExecutionError(f"input '{vi.name}': expected shape {shown}, got {tuple(a.shape)}")
        return feeds


class HetrtBackend(Backend):
    """onnx.backend entry points: ``prepare``, ``run_model``, ``run_node``, ``supports_device``."""

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return True

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> HetrtRep:
        if not cls.supports_device(device):
            raise UnsupportedError(f"device '{device}' is not supported (hetrt backend: CPU)")
        parse_kwargs = {k: kwargs[k] for k in ("input_shapes", "batch") if k in kwargs}
        return HetrtRep(model, **parse_kwargs)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple[Any, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Sequence[np.ndarray], device: str = "CPU",
                 outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,
                 **kwargs: Any) -> tuple[Any, ...]:
        raise UnsupportedError("run_node is not supported; wrap the node in a model and use prepare")

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper() == "CPU"


prepare = HetrtBackend.prepare
run_model = HetrtBackend.run_model
supports_device = HetrtBackend.supports_device
