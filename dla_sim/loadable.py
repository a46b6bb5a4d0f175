"""The DLA loadable: an ordered list of hardware operations, their tensors and packed weights.

* Operations are the descriptors of :mod:`dla_sim.ops`, in execution order. Consecutive
  CONV -> SDP(flying) -> PDP(flying) form one fused hardware layer (:meth:`Loadable.pipelines`).
* Every unit except CBUF/CMAC has two ping-pong register groups [HWARCH]: software programs the
  idle group while the other runs, so consecutive layers on a unit start without a gap.
  :meth:`Loadable.register_groups` assigns them alternately per unit in execution order.
* Tensors: a name, an optional feature :class:`~dla_sim.ops.CubeDesc`, the memory (dram/sram),
  a byte offset in that memory, a size and a role; constant tensors (packed weights, operands)
  point at a named blob.

Serialized form (:meth:`to_bytes`), little-endian, nothing executes on load (no pickle, no eval):

    magic  b"HTDLALD\\0"  (8 B)
    u16 format major, u16 format minor, u32 reserved (0)
    u64 manifest length, u64 blob-region length
    32 B SHA-256 of manifest + blob region
    manifest: UTF-8 JSON, keys sorted
    blob region: raw arrays, each 64-B aligned, described in the manifest (offset, size, dtype, shape)

Descriptors are encoded as ``{"__type__": "SdpOp", field: value, ...}``; only the classes of
:mod:`dla_sim.ops` are accepted back. Any malformed input raises :class:`LoadableError` saying
what and where.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from . import ops as O

__all__ = ["FORMAT_VERSION", "Loadable", "LoadableError", "TensorEntry"]

MAGIC = b"HTDLALD\0"
FORMAT_VERSION = (1, 0)
_HEADER = struct.Struct("<8sHHIQQ32s")
_ALIGN = 64
_DTYPES = ("int8", "uint8", "int16", "int32", "int64", "float16", "float32", "float64")
_TYPES: dict[str, type] = {
    c.__name__: c for c in (O.CubeDesc, O.Requant, O.ConvOp, O.SdpOp, O.PdpOp, O.CdpOp, O.RubikOp, O.BdmaOp)
}
_ENUMS: dict[str, type] = {"Precision": O.Precision}

Role = Literal["input", "output", "intermediate", "weight", "operand", "view"]


class LoadableError(ValueError):
    """A loadable that cannot be built, serialized or parsed."""


@dataclass(frozen=True)
class TensorEntry:
    """A tensor of the loadable and where it lives."""

    name: str
    memory: O.Memory
    offset: int
    size: int
    role: Role
    cube: O.CubeDesc | None = None
    blob: str | None = None  # constant content (weights, operands)
    # role "view": the tensor occupies memory that the ops writing ``parts`` fill (a concatenation by
    # addressing, or a window of one parent cube); no op writes it, it is readable once all parts are
    parts: tuple[str, ...] = ()


# ----------------------------------------------------------------------------------------------
# descriptor <-> JSON


def _encode(v: Any) -> Any:
    if isinstance(v, tuple(_ENUMS.values())):
        return {"__enum__": type(v).__name__, "value": v.value}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        name = type(v).__name__
        if name not in _TYPES and not isinstance(v, TensorEntry):
            raise LoadableError(f"cannot serialize descriptor type {name}")
        d = {"__type__": name}
        for f in dataclasses.fields(v):
            if f.init:
                d[f.name] = _encode(getattr(v, f.name))
        return d
    if isinstance(v, (tuple, list)):
        return [_encode(x) for x in v]
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise LoadableError(f"cannot serialize value of type {type(v).__name__}")


def _decode(v: Any, where: str) -> Any:
    if isinstance(v, list):
        return tuple(_decode(x, f"{where}[{i}]") for i, x in enumerate(v))
    if isinstance(v, dict):
        if "__enum__" in v:
            cls = _ENUMS.get(v.get("__enum__"))
            if cls is None:
                raise LoadableError(f"{where}: unknown enum {v.get('__enum__')!r}")
            try:
                return cls(v.get("value"))
            except ValueError as e:
                raise LoadableError(f"{where}: bad {cls.__name__} value {v.get('value')!r}") from e
        name = v.get("__type__")
        cls = TensorEntry if name == "TensorEntry" else _TYPES.get(name)
        if cls is None:
            raise LoadableError(f"{where}: unknown descriptor type {name!r}")
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
        extra = set(v) - fields - {"__type__"}
        if extra:
            raise LoadableError(f"{where}: {name} has unknown fields {sorted(extra)}")
        kw = {k: _decode(x, f"{where}.{k}") for k, x in v.items() if k != "__type__"}
        try:
            return cls(**kw)
        except TypeError as e:
            raise LoadableError(f"{where}: cannot build {name}: {e}") from e
    return v


# ----------------------------------------------------------------------------------------------


class Loadable:
    """Hardware operations in execution order, their tensors and constant blobs."""

    def __init__(
        self,
        name: str,
        ops: list[O.HwOp] | tuple[O.HwOp, ...],
        tensors: list[TensorEntry] | tuple[TensorEntry, ...],
        blobs: dict[str, np.ndarray] | None = None,
        config_name: str = "",
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.ops = tuple(ops)
        self.tensors = {t.name: t for t in tensors}
        if len(self.tensors) != len(tensors):
            raise LoadableError("duplicate tensor names")
        self.blobs = {k: np.ascontiguousarray(v) for k, v in (blobs or {}).items()}
        self.config_name = config_name
        self.meta = dict(meta or {})
        self._validate()

    # -- structure ---------------------------------------------------------------------------

    def _validate(self) -> None:
        for t in self.tensors.values():
            if t.blob is not None and t.blob not in self.blobs:
                raise LoadableError(f"tensor {t.name!r} refers to missing blob {t.blob!r}")
            if t.offset < 0 or t.size < 0:
                raise LoadableError(f"tensor {t.name!r} has negative offset/size")
            if t.memory not in ("dram", "sram"):
                raise LoadableError(f"tensor {t.name!r}: unknown memory {t.memory!r}")
        for b, a in self.blobs.items():
            if a.dtype.name not in _DTYPES:
                raise LoadableError(f"blob {b!r}: dtype {a.dtype} not allowed ({', '.join(_DTYPES)})")
        produced = {n for n, t in self.tensors.items() if t.role in ("input", "weight", "operand")}
        for i, op in enumerate(self.ops):
            if type(op).__name__ not in _TYPES:
                raise LoadableError(f"op {i} has unsupported type {type(op).__name__}")
            for n in op.inputs:
                if n not in self.tensors:
                    raise LoadableError(f"op {i} ({op.name!r}) reads unknown tensor {n!r}")
                if not self._ready(n, produced):
                    raise LoadableError(f"op {i} ({op.name!r}) reads {n!r} before any op writes it")
            for n in op.outputs:
                if n not in self.tensors:
                    raise LoadableError(f"op {i} ({op.name!r}) writes unknown tensor {n!r}")
                produced.add(n)

    def _ready(self, name: str, produced: set[str], depth: int = 0) -> bool:
        """Whether ``name`` holds data: written by an op, or a view whose parts all are."""
        t = self.tensors[name]
        if t.role != "view":
            return name in produced
        if depth > len(self.tensors) or not t.parts:
            raise LoadableError(f"view tensor {name!r} has no parts or a cycle of parts")
        for p in t.parts:
            if p not in self.tensors:
                raise LoadableError(f"view tensor {name!r} names unknown part {p!r}")
        return all(self._ready(p, produced, depth + 1) for p in t.parts)

    def pipelines(self) -> list[tuple[int, ...]]:
        """Op indices grouped into hardware layers: CONV -> SDP(flying) -> PDP(flying) fuse."""
        groups: list[list[int]] = []
        for i, op in enumerate(self.ops):
            src = getattr(op, "source", None)
            prev = self.ops[groups[-1][-1]] if groups else None
            fuse = (
                prev is not None
                and src == "flying"
                and ((op.unit == "sdp" and prev.unit == "conv") or (op.unit == "pdp" and prev.unit == "sdp"))
            )
            if fuse:
                groups[-1].append(i)
            else:
                if src == "flying" and op.unit in ("sdp", "pdp"):
                    raise LoadableError(f"op {i} ({op.name!r}) is flying but does not follow a CONV/SDP")
                groups.append([i])
        return [tuple(g) for g in groups]

    def register_groups(self) -> tuple[int, ...]:
        """Ping-pong register group (0/1) of every op: alternating per unit in execution order."""
        count: dict[str, int] = {}
        out = []
        for op in self.ops:
            g = count.get(op.unit, 0)
            out.append(g % 2)
            count[op.unit] = g + 1
        return tuple(out)

    # -- serialization -----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        blob_meta, chunks, off = [], [], 0
        for name in sorted(self.blobs):
            a = self.blobs[name]
            raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
            pad = (-off) % _ALIGN
            chunks.append(b"\0" * pad)
            off += pad
            blob_meta.append({"name": name, "offset": off, "size": len(raw), "dtype": a.dtype.name,
                              "shape": list(a.shape)})
            chunks.append(raw)
            off += len(raw)
        manifest = {
            "name": self.name,
            "config": self.config_name,
            "meta": self.meta,
            "ops": [_encode(op) for op in self.ops],
            "register_groups": list(self.register_groups()),
            "pipelines": [list(p) for p in self.pipelines()],
            "tensors": [_encode(t) for t in self.tensors.values()],
            "blobs": blob_meta,
        }
        try:
            mbytes = json.dumps(manifest, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
        except ValueError as e:
            raise LoadableError(f"manifest not serializable: {e}") from e
        region = b"".join(chunks)
        digest = hashlib.sha256(mbytes + region).digest()
        head = _HEADER.pack(MAGIC, *FORMAT_VERSION, 0, len(mbytes), len(region), digest)
        return head + mbytes + region

    @classmethod
    def from_bytes(cls, data: bytes) -> Loadable:
        data = bytes(data)
        if len(data) < _HEADER.size:
            raise LoadableError(f"truncated: {len(data)} B is shorter than the {_HEADER.size}-B header")
        magic, major, minor, _res, mlen, blen, digest = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise LoadableError(f"bad magic {magic!r}, expected {MAGIC!r}")
        if major != FORMAT_VERSION[0]:
            raise LoadableError(f"unsupported format version {major}.{minor} (reader is {FORMAT_VERSION[0]}.x)")
        end = _HEADER.size + mlen + blen
        if len(data) != end:
            raise LoadableError(f"length {len(data)} B does not match header (expected {end} B)")
        body = data[_HEADER.size :]
        if hashlib.sha256(body).digest() != digest:
            raise LoadableError("checksum mismatch: manifest or blobs corrupted")
        try:
            manifest = json.loads(body[:mlen].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LoadableError(f"manifest is not valid JSON: {e}") from e
        if not isinstance(manifest, dict):
            raise LoadableError("manifest is not a JSON object")
        for key in ("name", "config", "meta", "ops", "tensors", "blobs"):
            if key not in manifest:
                raise LoadableError(f"manifest lacks {key!r}")
        region = body[mlen:]
        blobs: dict[str, np.ndarray] = {}
        for i, b in enumerate(manifest["blobs"]):
            try:
                name, off, size, dt, shape = b["name"], int(b["offset"]), int(b["size"]), b["dtype"], b["shape"]
            except (KeyError, TypeError, ValueError) as e:
                raise LoadableError(f"blob entry {i} malformed: {e}") from e
            if dt not in _DTYPES:
                raise LoadableError(f"blob {name!r}: dtype {dt!r} not allowed")
            if off < 0 or size < 0 or off + size > len(region):
                raise LoadableError(f"blob {name!r}: bytes [{off}, {off + size}) outside the {len(region)}-B region")
            dtype = np.dtype(dt).newbyteorder("<")
            count = int(np.prod(shape)) if shape else 1
            if count * dtype.itemsize != size:
                raise LoadableError(f"blob {name!r}: shape {shape} x {dt} != {size} B")
            arr = np.frombuffer(region, dtype=dtype, count=count, offset=off).reshape(shape)
            blob = arr.astype(dtype.newbyteorder("="))
            blob.flags.writeable = False  # constants: units may keep prepared copies of read-only arrays
            blobs[name] = blob
        ops = [_decode(o, f"ops[{i}]") for i, o in enumerate(manifest["ops"])]
        tensors = [_decode(t, f"tensors[{i}]") for i, t in enumerate(manifest["tensors"])]
        for i, t in enumerate(tensors):
            if not isinstance(t, TensorEntry):
                raise LoadableError(f"tensors[{i}] is not a TensorEntry")
        meta = manifest["meta"]
        if not isinstance(meta, dict):
            raise LoadableError("manifest 'meta' is not an object")
        ld = cls(str(manifest["name"]), ops, tensors, blobs, str(manifest["config"]), meta)
        if "register_groups" in manifest and list(ld.register_groups()) != manifest["register_groups"]:
            raise LoadableError("register groups in the manifest do not match the op order")
        return ld
