"""The plan file's fixed header and payload sections (``engine.plan`` writes and reads plans with them).

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

This module owns the bytes around the manifest: the header (magic, format version, producer,
platform, payload length and digests) and the payload's sections (manifest length, manifest,
aligned blob area). What the manifest says is ``engine.plan_manifest``'s job.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from engine import __version__
from engine.ir.errors import PlanError
from engine.ir.platforms import KNOWN_PLATFORMS, describe_known

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


def align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


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
    parts = [head, b"\0" * (align(len(head)) - len(head))]
    layout = blob_layout([len(b) for b in blobs])
    pos = 0
    for blob, (offset, _) in zip(blobs, layout):
        parts.append(b"\0" * (offset - pos))
        parts.append(blob)
        pos = offset + len(blob)
    parts.append(b"\0" * (align(pos) - pos))
    return b"".join(parts), layout


def blob_layout(lengths: list[int]) -> list[tuple[int, int]]:
    """Canonical (offset, length) of each blob in the blob area: packed in order, 64-byte aligned."""
    out, pos = [], 0
    for n in lengths:
        out.append((pos, n))
        pos = align(pos + n)
    return out


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


def check_platform(header: PlanHeader, expected: str | None) -> None:
    if header.platform not in KNOWN_PLATFORMS:
        raise PlanError(f"plan targets unknown platform '{header.platform}'; this hetrt {__version__} knows: "
                        f"{describe_known()}")
    if expected is not None and header.platform != expected:
        raise PlanError(f"plan was built for platform '{header.platform}', this runtime targets '{expected}'; "
                        f"rebuild the plan for '{expected}'")


def manifest_bytes(payload: bytes) -> bytes:
    """The manifest section of a payload whose digest has been checked."""
    if len(payload) < 8:
        raise PlanError(f"plan is corrupt: payload of {len(payload)} bytes has no manifest length")
    (m_len,) = struct.unpack_from("<Q", payload, 0)
    if m_len > len(payload) - 8:
        raise PlanError(f"plan is corrupt: manifest length {m_len} exceeds the {len(payload)}-byte payload")
    return payload[8:8 + m_len]


def blob_area(payload: bytes, manifest_length: int) -> memoryview:
    """The blob area after a manifest of ``manifest_length`` bytes (its zero padding checked)."""
    area_start = align(8 + manifest_length)
    if area_start > len(payload) or any(payload[8 + manifest_length:area_start]):
        raise PlanError("plan is corrupt: bad padding after the manifest")
    return memoryview(payload)[area_start:]
