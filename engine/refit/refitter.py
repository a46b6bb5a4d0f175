"""The refitter: new source weights → replayed folds → engine weights replaced in place."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from engine import plan as plan_format
from engine.fp16_range import to_fp16_range
from engine.ir.dtypes import Precision
from engine.ir.errors import HetrtError, UnsupportedError
from engine.ir.layers import LayerKind
from engine.ir.network import Layer, Network


class RefitError(HetrtError, ValueError):
    """A refit request is wrong (unknown weight, shape, dtype, missing weights) or cannot replay."""


def _float(a: np.ndarray) -> bool:
    return a.dtype.kind == "f"


@dataclass
class _Source:
    """The recorded source: the ONNX model or the source network, and its refittable weights."""

    format: str
    proto: onnx.ModelProto | None
    network: Network  # the parsed (or recorded) network before optimization
    weights: dict[str, np.ndarray]  # refittable weight id → current value
    uses: dict[str, set[str]] = field(default_factory=dict)  # weight id → source node/layer names
    aliases: dict[tuple[str, str], str] = field(default_factory=dict)  # (layer, role) → ONNX initializer


def _load_source(record: dict) -> _Source:
    if record["format"] == "plan":
        network = plan_format.deserialize(record["source"]).network
        weights = {f"{la.name}:{k}": w for la in network.layers for k, w in la.weights.items() if _float(w)}
        uses = {wid: {wid.rsplit(":", 1)[0]} for wid in weights}
        return _Source("plan", None, network, weights, uses)
    from engine.onnx_parser import _node_names, parse

    proto = onnx.ModelProto()
    proto.ParseFromString(record["source"])
    network = parse(proto, input_shapes=record["input_shapes"] or None, batch=record["batch"], check=False)
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    weights = {n: a for n, a in inits.items() if _float(a)}
    uses: dict[str, set[str]] = {n: set() for n in weights}
    node_inputs: dict[str, list[str]] = {}
    for node, name in zip(proto.graph.node, _node_names(proto.graph)):
        node_inputs[node.name or name] = list(node.input)
        for t in node.input:
            if t in uses:
                uses[t].add(node.name or name)
    aliases = {}
    for layer in network.layers:
        for role, w in layer.weights.items():
            cands = [t for o in layer.origin for t in node_inputs.get(o, []) if t in weights]
            match = [t for t in cands if weights[t].shape == w.shape and weights[t].dtype == w.dtype
                     and np.array_equal(weights[t], w)]
            if match:
                aliases[(layer.name, role)] = match[0]
    return _Source("onnx", proto, network, weights, uses, aliases)


class Refitter:
    """Sets new weights on a refittable engine (or plan) and refits it in place."""

    def __init__(self, target: Any) -> None:
        if isinstance(target, (bytes, bytearray, memoryview)):
            self._engine = None
            self._contents = plan_format.deserialize(bytes(target))
        else:
            self._engine = target
            self._contents = getattr(target, "plan_contents", None) or target._contents
        if self._contents.refit is None or not self._contents.build_config.get("refittable", True):
            raise RefitError("this plan was not built refittable (BuilderConfig.refittable=True, hetrt build --refit)")
        self._source = _load_source(self._contents.refit)
        self._pending: dict[str, np.ndarray] = {}
        self.last_refit: list[str] = []  # engine layers whose weights the last refit() changed
        self.last_refit_seconds = 0.0

    # ------------------------------------------------------------------ weights

    def get_all(self) -> list[str]:
        """Every refittable weight: ONNX initializer names, or 'layer:role' for network builds."""
        return sorted(self._source.weights)

    def set_named_weights(self, name: str, value: np.ndarray) -> None:
        """Set an ONNX initializer by name (IParserRefitter); 'layer:role' for network builds."""
        if name not in self._source.weights:
            raise RefitError(f"'{name}' is not a refittable weight of this plan"
                             + (" (non-float initializers are not weights)" if self._source.proto is not None and
                                any(i.name == name for i in self._source.proto.graph.initializer) else "")
                             + f"; refittable: {_preview(self.get_all())}")
        old = self._source.weights[name]
        if not isinstance(value, np.ndarray):
            raise RefitError(f"weights '{name}' must be a numpy array, got {type(value).__name__}")
        if value.shape != old.shape:
            raise RefitError(f"weights '{name}' have shape {value.shape}, the plan's are {old.shape}")
        if value.dtype != old.dtype:
            raise RefitError(f"weights '{name}' have dtype {value.dtype}, the plan's are {old.dtype}")
        if not np.all(np.isfinite(value)):
            raise RefitError(f"weights '{name}' hold NaN or infinity")
        self._pending[name] = np.array(value, copy=True)

    def set_weights(self, layer: str, role: str, value: np.ndarray) -> None:
        """Set a source layer's weights by role (kernel, bias, scale, shift, ...)."""
        try:
            src = self._source.network.layer(layer)
        except HetrtError:
            raise RefitError(f"no layer '{layer}' in the plan's source network") from None
        if role not in src.weights:
            raise RefitError(f"layer '{layer}' ({src.kind.value}) has no weights '{role}' "
                             f"(it has: {', '.join(sorted(src.weights)) or 'none'})")
        if self._source.format == "plan":
            return self.set_named_weights(f"{layer}:{role}", value)
        alias = self._source.aliases.get((layer, role))
        if alias is None:
            inits = sorted(t for t, users in self._source.uses.items() if set(src.origin) & users)
            raise RefitError(f"weights '{role}' of layer '{layer}' are computed from ONNX initializers "
                             f"{', '.join(inits) or '(none)'}; set those by name with set_named_weights")
        self.set_named_weights(alias, value)

    def get_missing(self) -> list[str]:
        """Weights that must also be set: the other source weights of every engine layer touched."""
        network = self._contents.network
        group: set[str] = set()
        for wid in self._pending:
            users = self._source.uses.get(wid, set())
            for layer in network.layers:
                if users & set(layer.origin):
                    group |= {w for w, u in self._source.uses.items() if u & set(layer.origin)}
        return sorted(group - set(self._pending))

    # ------------------------------------------------------------------ refit

    def refit(self) -> list[str]:
        """Replay the folds with the pending weights and replace the engine's; returns the layers changed."""
        t0 = time.perf_counter()
        missing = self.get_missing()
        if missing:
            raise RefitError(f"refit needs these weights too (they are folded into the same engine layers): "
                             f"{_preview(missing)}")
        if not self._pending:
            raise RefitError("no weights were set; call set_named_weights or set_weights first")
        if self._engine is not None and any(getattr(p, "backend", "") == "gpu"
                                            for p in getattr(self._engine, "partitions", ())):
            raise UnsupportedError("in-place refit of an engine running on the CuPy GPU backend is not supported "
                                   "(its partitions hold device copies of the weights); refit the plan bytes with "
                                   "Refitter(plan), serialize() and load the new plan")
        source, new_record, proto = self._replayed_source()
        optimized = self._optimize(source)
        self._assign_precisions(optimized)
        changes = self._changes(optimized)
        for layer, key, value in changes:
            value.flags.writeable = False
            layer.weights[key] = value
        self._contents.refit = new_record
        self._source.weights.update(self._pending)  # names, uses and aliases stay as they were
        self._source.network, self._source.proto = source, proto
        self._pending.clear()
        self.last_refit = sorted({layer.name for layer, _, _ in changes})
        self.last_refit_seconds = time.perf_counter() - t0
        return self.last_refit

    def serialize(self) -> bytes:
        """The (refitted) plan, still refittable."""
        return plan_format.serialize(self._contents)

    def _replayed_source(self) -> tuple[Network, dict, onnx.ModelProto | None]:
        record = dict(self._contents.refit)
        if self._source.format == "plan":
            network = plan_format.deserialize(record["source"]).network
            for wid, value in self._pending.items():
                name, role = wid.rsplit(":", 1)
                network.layer(name).weights[role] = value
            network.validate()
            record["source"] = plan_format.serialize(plan_format.PlanContents(network=network.copy()))
            return network, record, None
        from engine.onnx_parser import parse

        proto = onnx.ModelProto()
        proto.CopyFrom(self._source.proto)
        for init in proto.graph.initializer:
            if init.name in self._pending:
                init.CopyFrom(numpy_helper.from_array(self._pending[init.name], init.name))
        # the recorded model passed onnx.checker at build time; the new initializers are checked above
        network = parse(proto, input_shapes=record["input_shapes"] or None, batch=record["batch"], check=False)
        record["source"] = proto.SerializeToString()
        return network, record, proto

    def _optimize(self, network: Network) -> Network:
        if not self._contents.build_config.get("optimize", True):
            return network.copy()
        from engine.optimizer import optimize

        return optimize(network).network

    def _assign_precisions(self, network: Network) -> None:
        """The builder's own precision step: FP16 weights, INT8 kernels from the recorded scales."""
        from engine.builder import Builder, BuilderConfig
        from engine.ir.logger import Logger, Severity

        bc = self._contents.build_config
        pins = {k: Precision(v) for k, v in (bc.get("layer_precisions") or {}).items()}
        config = BuilderConfig(fp16=bool(bc.get("fp16")), int8=bool(bc.get("int8")), layer_precisions=pins)
        table = None
        scales = self._contents.refit.get("int8_scales")
        if config.int8:
            from engine.quantization.builder_step import ScaleTable

            table = ScaleTable({k: np.float32(v) for k, v in (scales or {}).items()}, True, "the refit record")
        Builder(Logger(Severity.ERROR))._assign_precisions(network, config, table)

    def _changes(self, optimized: Network) -> list[tuple[Layer, str, np.ndarray]]:
        """Each engine weight the replay changes; refuses a replay whose structure differs."""
        engine_net = self._contents.network
        replay = {la.name: la for la in optimized.layers}
        if [la.name for la in optimized.layers] != [la.name for la in engine_net.layers]:
            raise RefitError("with the new weights the optimizer produces a different graph (for example a weight "
                             "that became zero or one is folded away); rebuild the plan instead")
        changes = []
        for layer in engine_net.layers:
            new = replay[layer.name]
            if (new.params != layer.params or new.inputs != layer.inputs or set(new.weights) != set(layer.weights)
                    or (new.precision is Precision.INT8) != (layer.precision is Precision.INT8)):
                raise RefitError(f"with the new weights layer '{layer.name}' is optimized differently; rebuild "
                                 f"the plan instead")
            for key, value in new.weights.items():
                value = _as_built(layer, value)
                old = layer.weights[key]
                if value.shape != old.shape or value.dtype != old.dtype:
                    raise RefitError(f"layer '{layer.name}' weights '{key}': replay gives {value.dtype} "
                                     f"{value.shape}, the plan holds {old.dtype} {old.shape}")
                if not np.array_equal(value, old):
                    changes.append((layer, key, value))
        on_dla = sorted({la.name for la, _, _ in changes if la.device == "dla"})
        if on_dla:
            raise UnsupportedError(f"layers {', '.join(on_dla)} run on the DLA, whose weights are compiled into "
                                   f"DLA loadables at build time; hetrt (like TensorRT) refits GPU layers only: "
                                   f"rebuild the plan")
        return changes


def _as_built(layer: Layer, value: np.ndarray) -> np.ndarray:
    """The weight as the builder stores it: float16 for FP16 layers, brought into its range first
    (``fp16_range.to_fp16_range``; constants keep their type)."""
    if layer.precision is Precision.FP16 and value.dtype.kind == "f" and layer.kind is not LayerKind.CONSTANT:
        return to_fp16_range(value).astype(np.float16)
    return np.ascontiguousarray(value)


def _preview(names: list[str], n: int = 12) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")
