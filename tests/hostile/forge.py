"""Forging plans and DLA loadables with valid checksums, as an attacker would (checksums are not signatures)."""

from __future__ import annotations

import hashlib
import json
import struct

from engine import plan as P

_LD_HEADER = struct.Struct("<8sHHIQQ32s")  # dla_sim.loadable's container header


def split_plan(data: bytes) -> tuple[dict, list[bytes], str]:
    """(manifest, raw blob bytes in table order, platform) of a valid plan."""
    header = P.read_header(data)
    payload = data[header.header_size:header.header_size + header.payload_length]
    (m_len,) = struct.unpack_from("<Q", payload)
    manifest = json.loads(payload[8:8 + m_len])
    area = payload[-(-(8 + m_len) // 64) * 64:]
    blobs = [area[b["offset"]:b["offset"] + b["length"]] for b in manifest["blobs"]]
    return manifest, blobs, header.platform


def join_plan(manifest: dict | bytes, blobs: list[bytes], platform: str = "host") -> bytes:
    """Plan bytes around ``manifest`` with the blob table's offsets and lengths recomputed."""
    if isinstance(manifest, dict):
        for entry, (offset, length) in zip(manifest["blobs"], P.blob_layout([len(b) for b in blobs])):
            entry["offset"], entry["length"] = offset, length
        manifest = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    payload, _ = P.encode_payload(manifest, blobs)
    return P.encode_header(payload, platform) + payload


def split_loadable(data: bytes) -> tuple[dict, bytes]:
    _, _, _, _, mlen, _, _ = _LD_HEADER.unpack_from(data)
    return json.loads(data[_LD_HEADER.size:_LD_HEADER.size + mlen]), data[_LD_HEADER.size + mlen:]


def join_loadable(manifest: dict, region: bytes) -> bytes:
    m = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return _LD_HEADER.pack(b"HTDLALD\0", 1, 0, 0, len(m), len(region), hashlib.sha256(m + region).digest()) + m + region
