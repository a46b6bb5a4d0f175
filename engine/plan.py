"""The plan file (``engine.plan``): a versioned binary container for a built engine.

A plan holds the optimized network (layers, parameters, weights), the platform it targets, the
build configuration, the placement, chosen tactics, DLA loadables and the activation memory plan.
It is read by ``engine.runtime``. Loading never executes anything from the file: the manifest is
JSON, tensors are raw little-endian bytes, and every field is validated before use; anything
wrong is a ``PlanError`` that says what is wrong. Serialization is deterministic, so
``serialize(deserialize(b)) == b`` for every plan this module writes.

Byte layout (all integers little-endian; docs/plan-format.md has the same table)::

    offset size  field
    0      8     magic b"HETRTPLN"
    8      2     format major (u16)    -- a reader rejects a newer major
    10     2     format minor (u16)    -- minors of one major stay readable
    12     4     header size H (u32)   -- 128 for format 1; a multiple of 64
    16     24    producer version, ASCII, NUL padded (hetrt version that wrote the plan)
    40     32    platform tag, ASCII, NUL padded (a key of engine.ir.platforms.KNOWN_PLATFORMS)
    72     8     payload length P (u64)
    80     32    SHA-256 of the payload
    112    16    header digest: the first 16 bytes of SHA-256 of header bytes [0, H - 16)
    H      P     payload

Bytes [0, 40) keep this meaning in every format major, and the header digest is always the last 16
bytes of the header, so a reader can tell a corrupt header from a newer format and name the
producer of a plan it cannot read.

Payload (offsets relative to its start, which is 64-byte aligned in the file)::

    0      8     manifest length M (u64)
    8      M     manifest: JSON, UTF-8, sorted keys, no whitespace
    ...          zero padding to a multiple of 64
    B      ...   blob area: blob i at offset blobs[i].offset from B (64-byte aligned, packed in
                 order, zero padding between), raw little-endian bytes; the area is padded to a
                 multiple of 64

Manifest keys: ``network`` (name, inputs, outputs, tensors, layers), ``blobs`` (dtype, shape,
offset, length), ``build_config``, ``placement``, ``tactics``, ``memory_plan``, ``metadata``
(free JSON objects) and ``loadables`` (blob indices of opaque DLA loadables).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine import __version__
from engine.ir.dtypes import DataType, Precision
from engine.ir.errors import PlanError
from engine.ir.layers import LayerKind, params_from_dict
from engine.ir.network import Layer, Network, Tensor
from engine.ir.platforms import KNOWN_PLATFORMS, describe_known
from engine.verify import DEFAULT_LIMITS, ResourceLimits, check_json_depth, check_network, verify_contents

MAGIC = b"HETRTPLN"
FORMAT_MAJOR = 1
FORMAT_MINOR = 0
HEADER_SIZE = 128
ALIGNMENT = 64
MAX_HEADER_SIZE = 1024
PRODUCER_FIELD = 24
PLATFORM_FIELD = 32
DIGEST_SIZE = 16

# magic, major, minor, header size, producer, platform, payload length, payload SHA-256.
_HEADER = struct.Struct("<8sHHI24s32sQ32s")
assert _HEADER.size + DIGEST_SIZE == HEADER_SIZE

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


@dataclass(frozen=True)
class PlanHeader:
    """The fixed header of a plan, as read by ``read_header``."""

    format_major: int
    format_minor: int
    header_size: int
    producer: str
    platform: str
    payload_length: int
    payload_sha256: bytes

    @property
    def format_version(self) -> str:
        return f"{self.format_major}.{self.format_minor}"


# ---------------------------------------------------------------------------------------------
# writing


def _align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def _dumps(obj: Any, what: str) -> bytes:
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    except (TypeError, ValueError, RecursionError) as e:
        raise PlanError(f"cannot serialize {what}: {e}") from None


def _ascii_field(value: str, size: int, what: str) -> bytes:
    if not isinstance(value, str) or not value or not value.isascii() or not value.isprintable() or len(value) > size:
        raise PlanError(f"{what} {value!r} must be 1..{size} printable ASCII characters")
    return value.encode("ascii").ljust(size, b"\0")


def encode_header(payload: bytes, platform: str, *, major: int = FORMAT_MAJOR, minor: int = FORMAT_MINOR,
                  producer: str = __version__) -> bytes:
    """The 128-byte header for ``payload`` (tests use the keyword arguments to forge headers)."""
    body = _HEADER.pack(MAGIC, major, minor, HEADER_SIZE, _ascii_field(producer, PRODUCER_FIELD, "producer version"),
                        _ascii_field(platform, PLATFORM_FIELD, "platform tag"), len(payload),
                        hashlib.sha256(payload).digest())
    return body + hashlib.sha256(body).digest()[:DIGEST_SIZE]


def encode_payload(manifest: bytes, blobs: list[bytes]) -> tuple[bytes, list[tuple[int, int]]]:
    """Lay out manifest and blobs; returns the payload and each blob's (offset, length).

    The manifest must already carry those offsets, so callers compute them with ``blob_layout``.
    """
    head = struct.pack("<Q", len(manifest)) + manifest
    parts = [head, b"\0" * (_align(len(head)) - len(head))]
    layout = blob_layout([len(b) for b in blobs])
    pos = 0
    for blob, (offset, _) in zip(blobs, layout):
        parts.append(b"\0" * (offset - pos))
        parts.append(blob)
        pos = offset + len(blob)
    parts.append(b"\0" * (_align(pos) - pos))
    return b"".join(parts), layout


def blob_layout(lengths: list[int]) -> list[tuple[int, int]]:
    """Canonical (offset, length) of each blob in the blob area: packed in order, 64-byte aligned."""
    out, pos = [], 0
    for n in lengths:
        out.append((pos, n))
        pos = _align(pos + n)
    return out


class _BlobWriter:
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


def _network_manifest(network: Network, blobs: _BlobWriter) -> dict[str, Any]:
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


def serialize(contents: PlanContents, limits: ResourceLimits | None = None) -> bytes:
    """Write ``contents`` as plan bytes (deterministic: equal contents give equal bytes).

    The plan verifier runs first (``engine.verify``, the same checks as ``deserialize``): hetrt
    never writes a plan it would refuse to load."""
    if contents.platform not in KNOWN_PLATFORMS:
        raise PlanError(f"unknown platform '{contents.platform}'; known platforms: {describe_known()}")
    try:
        verify_contents(contents, limits)
    except PlanError as e:
        raise PlanError(f"refusing to write a plan that would not load: {e}") from None
    blobs = _BlobWriter()
    network = _network_manifest(contents.network, blobs)
    loadables = []
    for i, blob in enumerate(contents.loadables):
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise PlanError(f"DLA loadable {i} must be bytes, got {type(blob).__name__}")
        loadables.append(blobs.add(np.frombuffer(bytes(blob), dtype=np.uint8), f"DLA loadable {i}"))
    refit = _refit_manifest(contents.refit, blobs)
    for entry, (offset, _) in zip(blobs.entries, blob_layout([len(d) for d in blobs.data])):
        entry["offset"] = offset
    manifest = {
        "network": network,
        "blobs": blobs.entries,
        "loadables": loadables,
        "build_config": contents.build_config,
        "placement": contents.placement,
        "tactics": contents.tactics,
        "memory_plan": contents.memory_plan,
        "metadata": contents.metadata,
    }
    if refit is not None:
        manifest["refit"] = refit
    for key in ("build_config", "placement", "tactics", "memory_plan", "metadata"):
        if not isinstance(manifest[key], dict):
            raise PlanError(f"plan {key} must be a dict, got {type(manifest[key]).__name__}")
        _dumps(manifest[key], f"plan {key}")  # names the offending field
    payload, _ = encode_payload(_dumps(manifest, "plan manifest"), blobs.data)
    return encode_header(payload, contents.platform) + payload


# ---------------------------------------------------------------------------------------------
# reading: every check raises PlanError with what is wrong


def _ascii(raw: bytes, what: str) -> str:
    text = raw.rstrip(b"\0")
    if not text or b"\0" in text or not all(32 <= c < 127 for c in text):
        raise PlanError(f"plan header is corrupt: {what} field {raw!r} is not NUL-padded printable ASCII")
    return text.decode("ascii")


def read_header(data: bytes) -> PlanHeader:
    """Validate and decode the header (magic, size, digest, version, strings); not the payload."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PlanError(f"a plan is bytes, got {type(data).__name__}")
    data = bytes(data)
    n = len(data)
    if data[:len(MAGIC)] != MAGIC[:min(n, len(MAGIC))]:
        raise PlanError(f"not a hetrt plan: magic {data[:len(MAGIC)]!r}, expected {MAGIC!r}")
    if n < HEADER_SIZE:
        raise PlanError(f"plan is truncated: {n} bytes, the header needs {HEADER_SIZE}")
    major, minor, header_size = struct.unpack_from("<HHI", data, 8)
    if header_size % ALIGNMENT or not HEADER_SIZE <= header_size <= MAX_HEADER_SIZE:
        raise PlanError(f"plan header is corrupt: header size {header_size} is not a multiple of {ALIGNMENT} "
                        f"in [{HEADER_SIZE}, {MAX_HEADER_SIZE}]")
    if n < header_size:
        raise PlanError(f"plan is truncated: {n} bytes, the header needs {header_size}")
    digest = hashlib.sha256(data[:header_size - DIGEST_SIZE]).digest()[:DIGEST_SIZE]
    if digest != data[header_size - DIGEST_SIZE:header_size]:
        raise PlanError("plan header is corrupt: header checksum mismatch")
    producer = _ascii(data[16:16 + PRODUCER_FIELD], "producer version")
    if major > FORMAT_MAJOR:
        raise PlanError(f"plan format {major}.{minor} (written by hetrt {producer}) is newer than this hetrt "
                        f"{__version__} (supports <= {FORMAT_MAJOR}.x); rebuild the plan with hetrt {__version__}")
    if major < FORMAT_MAJOR:
        raise PlanError(f"plan format {major}.{minor} (written by hetrt {producer}) is older than this hetrt "
                        f"{__version__} reads (format {FORMAT_MAJOR}.x only); "
                        f"rebuild the plan with hetrt {__version__}")
    _, _, _, _, _, platform_raw, payload_length, payload_sha = _HEADER.unpack_from(data, 0)
    return PlanHeader(major, minor, header_size, producer, _ascii(platform_raw, "platform tag"),
                      payload_length, payload_sha)


def _check_platform(header: PlanHeader, expected: str | None) -> None:
    if header.platform not in KNOWN_PLATFORMS:
        raise PlanError(f"plan targets unknown platform '{header.platform}'; this hetrt {__version__} knows: "
                        f"{describe_known()}")
    if expected is not None and header.platform != expected:
        raise PlanError(f"plan was built for platform '{header.platform}', this runtime targets '{expected}'; "
                        f"rebuild the plan for '{expected}'")


def deserialize(data: bytes, expected_platform: str | None = None,
                limits: ResourceLimits | None = None) -> PlanContents:
    """Validate and decode plan bytes; ``expected_platform`` rejects plans built for another one.

    Every field is verified (``engine.verify``: typed parameters, resource ``limits``, DLA
    loadables, GPU tactics) before the contents are returned; nothing has executed yet."""
    return deserialize_with_header(data, expected_platform, limits)[1]


def deserialize_with_header(data: bytes, expected_platform: str | None = None,
                            limits: ResourceLimits | None = None) -> tuple[PlanHeader, PlanContents]:
    header = read_header(data)
    data = bytes(data)
    _check_platform(header, expected_platform)
    end = header.header_size + header.payload_length
    if len(data) < end:
        raise PlanError(f"plan is truncated: {len(data)} bytes, the header announces {end} "
                        f"({header.header_size}-byte header + {header.payload_length}-byte payload)")
    if len(data) > end:
        raise PlanError(f"plan is corrupt: {len(data) - end} unexpected bytes after the {end}-byte plan")
    payload = data[header.header_size:end]
    if hashlib.sha256(payload).digest() != header.payload_sha256:
        raise PlanError("plan is corrupt: SHA-256 mismatch in the payload")
    limits = limits or DEFAULT_LIMITS
    contents = _decode_payload(payload, header, limits)
    verify_contents(contents, limits, network_checked=True)
    return header, contents


def _decode_payload(payload: bytes, header: PlanHeader, limits: ResourceLimits = DEFAULT_LIMITS) -> PlanContents:
    if len(payload) < 8:
        raise PlanError(f"plan is corrupt: payload of {len(payload)} bytes has no manifest length")
    (m_len,) = struct.unpack_from("<Q", payload, 0)
    if m_len > len(payload) - 8:
        raise PlanError(f"plan is corrupt: manifest length {m_len} exceeds the {len(payload)}-byte payload")
    try:
        manifest = json.loads(payload[8:8 + m_len].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PlanError(f"plan manifest is not valid JSON: {e}") from None
    check_json_depth(manifest, limits)
    area_start = _align(8 + m_len)
    if area_start > len(payload) or any(payload[8 + m_len:area_start]):
        raise PlanError("plan is corrupt: bad padding after the manifest")
    reader = _ManifestReader(manifest, header, limits)
    return reader.read(memoryview(payload)[area_start:])


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


class _ManifestReader:
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
        expected_end = _align(layout[-1][0] + layout[-1][1]) if layout else 0
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


def _refit_manifest(refit: dict | None, blobs: _BlobWriter) -> dict | None:
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
