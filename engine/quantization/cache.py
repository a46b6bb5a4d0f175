"""The calibration cache: a small text file, one scale per tensor, tied to one network.

Format (version 2), ASCII, '\\n' line ends::

    hetrt-calibration-cache v2 network=<sha256 hex> calibrator=<algorithm>
    <tensor name>: <scale as the 8 hex digits of its float32 bits>
    ...
    sha256=<SHA-256 of every byte above this line>

Tensor lines are sorted by name, so the same scales always give the same bytes (TensorRT's cache
also stores float32 bit patterns in hex: the scale round-trips exactly). ``network`` is the
fingerprint of the network structure (:func:`network_fingerprint`): a cache made for another
network is refused with both fingerprints named, instead of silently mis-scaling tensors. The
final checksum line covers the header (with the fingerprint) and every scale: a cache edited by
hand or corrupted on disk (one changed digit raised the output error against FP32 fourfold, with
no warning, before version 2) is refused. It is a checksum, not a signature: it catches accidents
and careless edits, not an adversary who recomputes it.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass

import numpy as np

from engine.ir.errors import BuildError
from engine.ir.int8_annotation import strip
from engine.ir.network import Network

MAGIC = "hetrt-calibration-cache"
VERSION = 2
CHECKSUM = "sha256="


def network_fingerprint(network: Network) -> str:
    """sha256 of the structure: I/O, tensor shapes and dtypes, layers (kind, parameters, wiring,
    weight shapes and dtypes). Weight values are left out, so retrained weights of the same
    structure keep their cache, as in TensorRT."""
    desc = {
        "inputs": [[n, list(network.tensors[n].shape), network.tensors[n].dtype.value] for n in network.inputs],
        "outputs": list(network.outputs),
        "layers": [
            {"name": la.name, "kind": la.kind.value, "params": la.params.to_dict(), "inputs": la.inputs,
             "outputs": la.outputs,
             "tensors": [[t, list(network.tensors[t].shape), network.tensors[t].dtype.value] for t in la.outputs],
             "weights": sorted([k, list(w.shape), w.dtype.name] for k, w in strip(la.weights).items())}
            for la in network.layers
        ],
    }
    text = json.dumps(desc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _hex(scale: float) -> str:
    return struct.pack(">f", np.float32(scale)).hex()


def _unhex(text: str) -> np.float32:
    return np.float32(struct.unpack(">f", bytes.fromhex(text))[0])


@dataclass(frozen=True)
class CalibrationCache:
    fingerprint: str
    algorithm: str
    scales: dict[str, np.float32]

    def to_bytes(self) -> bytes:
        lines = [f"{MAGIC} v{VERSION} network={self.fingerprint} calibrator={self.algorithm}"]
        for name in sorted(self.scales):
            if "\n" in name or "\r" in name:
                raise BuildError(f"tensor name {name!r} cannot be written to a calibration cache")
            lines.append(f"{name}: {_hex(self.scales[name])}")
        body = ("\n".join(lines) + "\n").encode("utf-8")
        return body + f"{CHECKSUM}{hashlib.sha256(body).hexdigest()}\n".encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "calibration cache") -> CalibrationCache:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise BuildError(f"{where} is not a hetrt calibration cache (not UTF-8 text)") from None
        lines = text.split("\n")
        head = lines[0].split(" ")
        if len(head) != 4 or head[0] != MAGIC:
            raise BuildError(f"{where} is not a hetrt calibration cache (header {lines[0][:60]!r})")
        if head[1] != f"v{VERSION}":
            raise BuildError(f"{where} has version {head[1]}; this hetrt reads v{VERSION} (recalibrate)")
        if not head[2].startswith("network=") or not head[3].startswith("calibrator="):
            raise BuildError(f"{where}: malformed header {lines[0]!r}")
        fp, algo = head[2][len("network="):], head[3][len("calibrator="):]
        if len(fp) != 64 or any(c not in "0123456789abcdef" for c in fp):
            raise BuildError(f"{where}: malformed network fingerprint {fp!r}")
        if lines[-1] != "":
            raise BuildError(f"{where} is truncated (no final newline)")
        _check_sum(text, lines, where)
        scales: dict[str, np.float32] = {}
        for no, line in enumerate(lines[1:-2], start=2):
            name, sep, value = line.rpartition(": ")
            if not sep or not name or len(value) != 8:
                raise BuildError(f"{where} line {no}: expected 'tensor: <8 hex digits>', got {line[:80]!r}")
            try:
                s = _unhex(value)
            except ValueError:
                raise BuildError(f"{where} line {no}: {value!r} is not hexadecimal") from None
            if not np.isfinite(s) or s <= 0:
                raise BuildError(f"{where} line {no}: scale {s} of '{name}' must be finite and > 0")
            if name in scales:
                raise BuildError(f"{where} line {no}: tensor '{name}' appears twice")
            scales[name] = s
        return cls(fp, algo, scales)

    def check_network(self, network: Network, where: str = "calibration cache") -> None:
        fp = network_fingerprint(network)
        if fp != self.fingerprint:
            raise BuildError(f"{where} was made for another network (cache network={self.fingerprint[:16]}…, this "
                             f"network={fp[:16]}…); recalibrate or give the cache of this network")
        missing = sorted(t for t in network.tensors if network.tensors[t].dtype.is_float
                         and t not in self.scales and t not in _constant_tensors(network))
        if missing:
            raise BuildError(f"{where} lacks scales for tensors {missing[:5]}{' …' if len(missing) > 5 else ''}")


def _check_sum(text: str, lines: list[str], where: str) -> None:
    """The last line seals every byte before it."""
    last = lines[-2] if len(lines) >= 2 else ""
    if len(lines) < 3 or not last.startswith(CHECKSUM):
        raise BuildError(f"{where} is truncated or unsealed (no final '{CHECKSUM}…' checksum line)")
    body = text[:len(text) - len(last) - 1]
    if hashlib.sha256(body.encode("utf-8")).hexdigest() != last[len(CHECKSUM):]:
        raise BuildError(f"{where} has been modified or corrupted: its checksum does not match its contents; "
                         f"recalibrate (or restore the cache hetrt wrote)")


def _constant_tensors(network: Network) -> set[str]:
    from engine.ir.layers import LayerKind

    return {t for la in network.layers if la.kind is LayerKind.CONSTANT for t in la.outputs}
