"""The plan file (``engine.plan``): a versioned binary container for a built engine.

A plan holds the optimized network (layers, parameters, weights), the platform it targets, the
build configuration, the placement, chosen tactics, DLA loadables and the activation memory plan.
It is read by ``engine.runtime``. Loading never executes anything from the file: the manifest is
JSON, tensors are raw little-endian bytes, and every field is validated before use; anything
wrong is a ``PlanError`` that says what is wrong. Serialization is deterministic, so
``serialize(deserialize(b)) == b`` for every plan this module writes.

This module is the entry point (``serialize``, ``deserialize``, ``PlanContents``); the header and
payload sections (byte layout) live in ``engine.plan_header``, the manifest (network, blobs,
refit record) in ``engine.plan_manifest``. Both are re-exported here.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from engine.ir.errors import PlanError
from engine.ir.platforms import KNOWN_PLATFORMS, describe_known
from engine.plan_header import (
    ALIGNMENT,
    DIGEST_SIZE,
    FORMAT_MAJOR,
    FORMAT_MINOR,
    HEADER_SIZE,
    MAGIC,
    MAX_HEADER_SIZE,
    PLATFORM_FIELD,
    PRODUCER_FIELD,
    PlanHeader,
    blob_area,
    blob_layout,
    check_platform,
    encode_header,
    encode_payload,
    manifest_bytes,
    read_header,
)
from engine.plan_manifest import (
    BLOB_DTYPES,
    MAX_DIM,
    MAX_TENSOR_BYTES,
    REFIT_FORMATS,
    BlobWriter,
    ManifestReader,
    PlanContents,
    network_manifest,
    refit_manifest,
)
from engine.verify import DEFAULT_LIMITS, ResourceLimits, check_json_depth, verify_contents

__all__ = ["ALIGNMENT", "BLOB_DTYPES", "DIGEST_SIZE", "FORMAT_MAJOR", "FORMAT_MINOR", "HEADER_SIZE", "MAGIC",
           "MAX_DIM", "MAX_HEADER_SIZE", "MAX_TENSOR_BYTES", "PLATFORM_FIELD", "PRODUCER_FIELD", "REFIT_FORMATS",
           "PlanContents", "PlanHeader", "blob_layout", "deserialize", "deserialize_with_header", "encode_header",
           "encode_payload", "read_header", "serialize"]


def _dumps(obj: Any, what: str) -> bytes:
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    except (TypeError, ValueError, RecursionError) as e:
        raise PlanError(f"cannot serialize {what}: {e}") from None


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
    blobs = BlobWriter()
    network = network_manifest(contents.network, blobs)
    loadables = []
    for i, blob in enumerate(contents.loadables):
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise PlanError(f"DLA loadable {i} must be bytes, got {type(blob).__name__}")
        loadables.append(blobs.add(np.frombuffer(bytes(blob), dtype=np.uint8), f"DLA loadable {i}"))
    refit = refit_manifest(contents.refit, blobs)
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
    check_platform(header, expected_platform)
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
    raw = manifest_bytes(payload)
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PlanError(f"plan manifest is not valid JSON: {e}") from None
    check_json_depth(manifest, limits)
    return ManifestReader(manifest, header, limits).read(blob_area(payload, len(raw)))
