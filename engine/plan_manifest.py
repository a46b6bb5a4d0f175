"""The plan manifest: what a plan holds (network, weights, loadables, placement, refit source) as JSON
plus a blob table, written by ``engine.plan.serialize`` and checked field by field when read.

Writing turns a ``PlanContents`` into the manifest dict and the raw blobs (``BlobWriter``,
``network_manifest``, ``refit_manifest``); reading (``ManifestReader``) checks the manifest's
schema, rebuilds the network from it and the blob area, and refuses anything malformed with a
``PlanError`` naming the field. Plugins are looked up in this process's registry only: a plan
never causes code to be imported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.ir.dtypes import DataType, Precision
from engine.ir.errors import PlanError
from engine.ir.layers import LayerKind, params_from_dict
from engine.ir.network import Layer, Network, Tensor
from engine.plan_header import FORMAT_MINOR, PlanHeader, align, blob_layout
from engine.verify import DEFAULT_LIMITS, ResourceLimits, check_network

# Tensor element types a blob may hold, by the name the manifest uses.
BLOB_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(name).newbyteorder("<")
    for name in ("float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")
}
MAX_DIM = 2**31 - 1
MAX_TENSOR_BYTES = 2**40
_KINDS = frozenset(k.value for k in LayerKind)
_MANIFEST_KEYS = ("blobs", "build_config", "loadables", "memory_plan", "metadata", "network", "placement", "tactics")
_OPTIONAL_KEYS = ("refit",)


@dataclass
class PlanContents:
    """Everything a plan holds. The dict fields are free JSON objects owned by their producers."""

    network: Network
    platform: str = "host"
    build_config: dict = field(default_factory=dict)
    placement: dict = field(default_factory=dict)
    tactics: dict = field(default_factory=dict)
    loadables: list[bytes] = field(default_factory=list)
    memory_plan: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    # Refittable plans (engine.refit): {"format": "onnx" | "plan", "source": bytes, "input_shapes": {...},
    # "batch": int | None}; None for plans built without refittable=True (the manifest then has no "refit").
    refit: dict | None = None


class BlobWriter:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.data: list[bytes] = []

    def add(self, array: np.ndarray, what: str) -> int:
        if not isinstance(array, np.ndarray):
            raise PlanError(f"{what} must be a numpy array, got {type(array).__name__}")
        name = array.dtype.name
        if name not in BLOB_DTYPES:
            raise PlanError(f"{what} has dtype {array.dtype}, which a plan cannot hold "
                            f"(supported: {', '.join(BLOB_DTYPES)})")
        raw = np.ascontiguousarray(array).astype(BLOB_DTYPES[name], copy=False).tobytes()
        self.entries.append({"dtype": name, "shape": [int(d) for d in array.shape], "length": len(raw)})
        self.data.append(raw)
        return len(self.entries) - 1


def network_manifest(network: Network, blobs: BlobWriter) -> dict[str, Any]:
    layers = []
    for layer in network.layers:
        where = f"layer '{layer.name}'"
        weights = {k: blobs.add(layer.weights[k], f"{where} weights '{k}'") for k in sorted(layer.weights)}
        layers.append({
            "name": layer.name,
            "kind": layer.kind.value,
            "params": layer.params.to_dict(),
            "inputs": list(layer.inputs),
            "outputs": list(layer.outputs),
            "weights": weights,
            "precision": None if layer.precision is None else Precision(layer.precision).value,
            "device": layer.device,
            "origin": list(layer.origin),
        })
    tensors = [{"name": t.name, "shape": list(t.shape), "dtype": DataType(t.dtype).value}
               for t in network.tensors.values()]
    return {"name": network.name, "inputs": list(network.inputs), "outputs": list(network.outputs),
            "tensors": tensors, "layers": layers}


def _fail(where: str, msg: str) -> PlanError:
    return PlanError(f"plan manifest: {where}: {msg}")


def _get(obj: dict, key: str, types: type | tuple[type, ...], where: str, optional: bool = False) -> Any:
    if key not in obj:
        if optional:
            return None
        raise _fail(where, f"missing '{key}'")
    value = obj[key]
    if optional and value is None:
        return None
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        names = " or ".join(t.__name__ for t in _as_tuple(types))
        raise _fail(where, f"'{key}' must be {names}, got {type(value).__name__}")
    return value


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _str_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(where, "must be a list of strings")
    return list(value)


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(type(d) is int and 0 <= d <= MAX_DIM for d in value):
        raise _fail(where, f"shape {value!r} must be a list of integers in [0, {MAX_DIM}]")
    return tuple(value)


class ManifestReader:
    """Checks the manifest's schema and rebuilds the network from it and the blob area."""

    def __init__(self, manifest: Any, header: PlanHeader, limits: ResourceLimits = DEFAULT_LIMITS) -> None:
        if not isinstance(manifest, dict):
            raise PlanError(f"plan manifest must be a JSON object, got {type(manifest).__name__}")
        missing = [k for k in _MANIFEST_KEYS if k not in manifest]
        if missing:
            raise PlanError(f"plan manifest is missing {', '.join(missing)}")
        unknown = sorted(set(manifest) - set(_MANIFEST_KEYS) - set(_OPTIONAL_KEYS))
        if unknown and header.format_minor <= FORMAT_MINOR:  # newer minors may add keys we skip
            raise PlanError(f"plan manifest has unknown keys {', '.join(unknown)}")
        self.m = manifest
        self.header = header
        self.limits = limits

    def read(self, area: memoryview) -> PlanContents:
        arrays = self._blobs(area)
        used: set[int] = set()

        def blob(index: Any, where: str) -> np.ndarray:
            if type(index) is not int or not 0 <= index < len(arrays):
                raise _fail(where, f"blob index {index!r} out of range (plan has {len(arrays)} blobs)")
            if index in used:
                raise _fail(where, f"blob {index} is referenced twice")
            used.add(index)
            return arrays[index]

        network = self._network(blob)
        loadables = []
        for i, index in enumerate(_get(self.m, "loadables", list, "plan")):
            arr = blob(index, f"DLA loadable {i}")
            if arr.dtype != np.uint8 or arr.ndim != 1:
                raise _fail(f"DLA loadable {i}", f"blob must be 1-D uint8, got {arr.dtype} {arr.shape}")
            loadables.append(arr.tobytes())
        refit = _read_refit(self.m.get("refit"), blob)
        if len(used) != len(arrays):
            raise PlanError(f"plan manifest: blobs {sorted(set(range(len(arrays))) - used)} are not referenced")
        dicts = {k: _get(self.m, k, dict, "plan") for k in ("build_config", "placement", "tactics",
                                                            "memory_plan", "metadata")}
        return PlanContents(network=network, platform=self.header.platform, loadables=loadables, refit=refit, **dicts)

    def _blobs(self, area: memoryview) -> list[np.ndarray]:
        entries = _get(self.m, "blobs", list, "plan")
        arrays = []
        lengths = []
        for i, e in enumerate(entries):
            where = f"blob {i}"
            if not isinstance(e, dict) or set(e) != {"dtype", "shape", "offset", "length"}:
                raise _fail(where, "must be an object with dtype, shape, offset, length")
            dtype_name = _get(e, "dtype", str, where)
            if dtype_name not in BLOB_DTYPES:
                raise _fail(where, f"unknown dtype '{dtype_name}'")
            dtype = BLOB_DTYPES[dtype_name]
            shape = _shape(e["shape"], where)
            offset = _get(e, "offset", int, where)
            length = _get(e, "length", int, where)
            count = math.prod(shape)
            if count * dtype.itemsize != length:
                raise _fail(where, f"{dtype_name} {list(shape)} needs {count * dtype.itemsize} bytes, "
                                   f"the table says {length}")
            lengths.append(length)
            arrays.append((offset, length, dtype, shape))
        layout = blob_layout(lengths)
        expected_end = align(layout[-1][0] + layout[-1][1]) if layout else 0
        if len(area) != expected_end:
            raise PlanError(f"plan is corrupt: blob area is {len(area)} bytes, the blob table needs {expected_end}")
        out = []
        pos = 0
        for i, ((offset, length, dtype, shape), (want, _)) in enumerate(zip(arrays, layout)):
            if offset != want:
                raise _fail(f"blob {i}", f"offset {offset} is not the packed offset {want}")
            if any(area[pos:offset]):
                raise PlanError(f"plan is corrupt: nonzero padding before blob {i}")
            raw = area[offset:offset + length]
            arr = np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=True)
            if dtype.kind == "b" and length and int(np.frombuffer(raw, dtype=np.uint8).max()) > 1:
                raise _fail(f"blob {i}", "bool blob holds bytes other than 0 and 1")
            out.append(arr)
            pos = offset + length
        if any(area[pos:]):
            raise PlanError("plan is corrupt: nonzero padding after the last blob")
        return out

    def _network(self, blob) -> Network:
        net = _get(self.m, "network", dict, "plan")
        unknown = sorted(set(net) - {"name", "inputs", "outputs", "tensors", "layers"})
        if unknown:
            raise _fail("network", f"unknown keys {', '.join(unknown)}")
        network = Network(_get(net, "name", str, "network"))
        for i, t in enumerate(_get(net, "tensors", list, "network")):
            where = f"tensor {i}"
            if not isinstance(t, dict) or set(t) != {"name", "shape", "dtype"}:
                raise _fail(where, "must be an object with name, shape, dtype")
            name = _get(t, "name", str, where)
            where = f"tensor '{name}'"
            if name in network.tensors:
                raise _fail(where, "defined twice")
            try:
                dtype = DataType(_get(t, "dtype", str, where))
            except ValueError:
                raise _fail(where, f"unknown dtype '{t['dtype']}'") from None
            shape = _shape(t["shape"], where)
            if math.prod(shape) * dtype.itemsize > MAX_TENSOR_BYTES:
                raise _fail(where, f"shape {list(shape)} is larger than {MAX_TENSOR_BYTES} bytes")
            network.tensors[name] = Tensor(name, shape, dtype)
        network.inputs = _str_list(_get(net, "inputs", list, "network"), "network inputs")
        network.outputs = _str_list(_get(net, "outputs", list, "network"), "network outputs")
        for t in network.inputs + network.outputs:
            if t not in network.tensors:
                raise _fail("network", f"I/O tensor '{t}' is not defined")
        if len(set(network.inputs)) != len(network.inputs) or len(set(network.outputs)) != len(network.outputs):
            raise _fail("network", "an I/O tensor is listed twice")
        names: set[str] = set()
        for i, entry in enumerate(_get(net, "layers", list, "network")):
            layer = self._layer(i, entry, network, blob)
            if layer.name in names:
                raise _fail(f"layer '{layer.name}'", "defined twice")
            names.add(layer.name)
            network.layers.append(layer)
        check_network(network, self.limits)  # types, ranges and sizes before any shape inference
        try:
            network.validate()
        except Exception as e:  # untrusted data: any failure of validation is a bad plan
            raise PlanError(f"plan network is invalid: {e}") from None
        return network

    def _layer(self, i: int, entry: Any, network: Network, blob) -> Layer:
        keys = {"name", "kind", "params", "inputs", "outputs", "weights", "precision", "device", "origin"}
        if not isinstance(entry, dict) or set(entry) != keys:
            raise _fail(f"layer {i}", f"must be an object with keys {', '.join(sorted(keys))}")
        name = _get(entry, "name", str, f"layer {i}")
        where = f"layer '{name}'"
        kind = _get(entry, "kind", str, where)
        if kind not in _KINDS:
            raise _fail(where, f"unknown layer kind '{kind}'")
        params_data = _get(entry, "params", dict, where)
        try:
            params = params_from_dict(kind, params_data)
        except Exception as e:  # untrusted data: TypeError/ValueError/KeyError from the record
            raise _fail(where, f"bad {kind} parameters: {e}") from None
        if kind == LayerKind.PLUGIN.value:
            _check_plugin(where, params)
        inputs = _str_list(entry["inputs"], f"{where} inputs")
        outputs = _str_list(entry["outputs"], f"{where} outputs")
        for t in inputs + outputs:
            if t not in network.tensors:
                raise _fail(where, f"tensor '{t}' is not defined")
        refs = _get(entry, "weights", dict, where)
        weights = {k: blob(v, f"{where} weights '{k}'") for k, v in refs.items()}
        precision = _get(entry, "precision", str, where, optional=True)
        if precision is not None:
            try:
                precision = Precision(precision)
            except ValueError:
                raise _fail(where, f"unknown precision '{precision}'") from None
        device = _get(entry, "device", str, where, optional=True)
        origin = _str_list(entry["origin"], f"{where} origin")
        return Layer(name, params, inputs, outputs, weights, precision, device, origin)


def _check_plugin(where: str, params: Any) -> None:
    """A plugin layer names a registered plugin and its fields match that plugin's schema.

    Only the registry of this process is consulted: a plan never causes code to be imported.
    """
    import engine.plugin  # noqa: F401 (registers the bundled plugins)
    from engine.ir import plugin_registry

    if not all(isinstance(v, str) for v in (params.name, params.version, params.namespace)):
        raise _fail(where, "plugin name, version and namespace must be strings")
    spec = plugin_registry.lookup(params.namespace, params.name, params.version)
    if spec is None:
        raise PlanError(f"plan {where} needs plugin '{params.key}' version {params.version}, which is not "
                        f"registered in this process; load the module that registers it with --plugins FILE.py "
                        f"(or import it before deserializing)")
    try:
        plugin_registry.check_stored_fields(spec, params.fields, f"plugin '{params.key}'")
    except plugin_registry.PluginError as e:
        raise _fail(where, f"bad plugin fields: {e}") from None


REFIT_FORMATS = ("onnx", "plan")


def refit_manifest(refit: dict | None, blobs: BlobWriter) -> dict | None:
    """The refit record: the build's source (ONNX model or source-network plan) as a uint8 blob."""
    if refit is None:
        return None
    if not isinstance(refit, dict) or refit.get("format") not in REFIT_FORMATS:
        raise PlanError(f"refit record must be a dict with format in {REFIT_FORMATS}")
    source = refit.get("source")
    if not isinstance(source, (bytes, bytearray)):
        raise PlanError("refit record source must be bytes")
    shapes = {str(k): [int(d) for d in v] for k, v in (refit.get("input_shapes") or {}).items()}
    batch = refit.get("batch")
    scales = refit.get("int8_scales")
    return {"format": refit["format"], "source": blobs.add(np.frombuffer(bytes(source), np.uint8), "refit source"),
            "input_shapes": shapes, "batch": None if batch is None else int(batch),
            "int8_scales": None if scales is None else {str(k): float(v) for k, v in scales.items()}}


def _read_refit(entry: Any, blob) -> dict | None:
    if entry is None:
        return None
    where = "refit"
    if not isinstance(entry, dict) or set(entry) != {"format", "source", "input_shapes", "batch", "int8_scales"}:
        raise _fail(where, "must be an object with format, source, input_shapes, batch, int8_scales")
    if entry["format"] not in REFIT_FORMATS:
        raise _fail(where, f"unknown format {entry['format']!r} (known: {', '.join(REFIT_FORMATS)})")
    arr = blob(entry["source"], "refit source")
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise _fail(where, f"source blob must be 1-D uint8, got {arr.dtype} {arr.shape}")
    shapes = _get(entry, "input_shapes", dict, where)
    batch = _get(entry, "batch", int, where, optional=True)
    scales = _get(entry, "int8_scales", dict, where, optional=True)
    if scales is not None and not all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in scales.values()):
        raise _fail(where, "int8_scales must map tensor names to finite positive floats")
    return {"format": entry["format"], "source": arr.tobytes(), "batch": batch, "int8_scales": scales,
            "input_shapes": {k: _shape(v, f"{where} input_shapes '{k}'") for k, v in shapes.items()}}
