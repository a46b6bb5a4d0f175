"""Layer weights: from a .caffemodel by layer name, or seeded random when there is none.

Random weights (giexec's behaviour without --model) are drawn per layer from a generator seeded by
the seed and the layer's name, so a layer gets the same weights whatever the rest of the network.
Their scales keep activations of deep networks in range (fan-in scaled kernels, positive variances).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from engine.caffe_parser.schema import BlobProto, NetParameter
from engine.ir.errors import ParserError


def blob_array(blob) -> np.ndarray:
    """A BlobProto as a float32 array: ``shape`` when present, else the legacy num/channels/height/width."""
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        legacy = (blob.num, blob.channels, blob.height, blob.width)
        shape = tuple(int(d) for d in legacy) if any(legacy) else (len(blob.data) or len(blob.double_data),)
    values = blob.data if len(blob.data) else blob.double_data
    a = np.asarray(values, dtype=np.float32)
    if a.size != math.prod(shape):
        raise ValueError(f"blob holds {a.size} values for shape {shape}")
    return a.reshape(shape)


def to_blob(array: np.ndarray):
    """A float array as a BlobProto with a ``shape`` (what Caffe writes today)."""
    blob = BlobProto()
    blob.shape.dim.extend(int(d) for d in array.shape)
    blob.data.extend(np.asarray(array, np.float32).reshape(-1).tolist())
    return blob


def caffemodel_bytes(layers: Mapping[str, tuple[str, Sequence[np.ndarray]]], name: str = "net") -> bytes:
    """Serialize ``{layer name: (type, [blobs])}`` as a .caffemodel (binary NetParameter)."""
    net = NetParameter(name=name)
    for layer_name, (layer_type, blobs) in layers.items():
        layer = net.layer.add(name=layer_name, type=layer_type)
        for b in blobs:
            layer.blobs.append(to_blob(b))
    return net.SerializeToString()


class WeightSource:
    """Hands each layer its blobs, checked against the shapes its parameters and inputs imply."""

    def __init__(self, caffemodel: NetParameter | None = None, display: str = "", seed: int = 0) -> None:
        self.display = display
        self.seed = seed
        self.by_name: dict[str, list] = {}
        if caffemodel is not None:
            for layer in caffemodel.layer:
                if layer.blobs:
                    self.by_name[layer.name] = list(layer.blobs)

    @property
    def random(self) -> bool:
        return not self.display

    def blobs(self, where: str, name: str, expected: Sequence[tuple[str, tuple[int, ...]]]) -> list[np.ndarray]:
        """The blobs of layer ``name`` as arrays shaped like ``expected`` ((role, shape) pairs)."""
        if self.random:
            rng = np.random.default_rng([self.seed, zlib.crc32(name.encode())])
            return [_random_blob(rng, role, shape) for role, shape in expected]
        stored = self.by_name.get(name)
        if stored is None:
            raise ParserError(f"{where}: {self.display} has no weights for this layer")
        if len(stored) != len(expected):
            roles = ", ".join(r for r, _ in expected)
            raise ParserError(f"{where}: {self.display} gives {len(stored)} blobs, the layer needs {len(expected)} "
                              f"({roles})")
        out = []
        for blob, (role, shape) in zip(stored, expected):
            try:
                a = blob_array(blob)
            except ValueError as e:
                raise ParserError(f"{where}: {role} blob in {self.display} is malformed: {e}") from None
            if a.size != math.prod(shape):
                raise ParserError(f"{where}: {role} blob in {self.display} has shape {a.shape} "
                                  f"({a.size} values), the layer needs {shape}")
            out.append(np.ascontiguousarray(a.reshape(shape)))
        return out


def _random_blob(rng: np.random.Generator, role: str, shape: tuple[int, ...]) -> np.ndarray:
    if role == "kernel":
        fan_in = max(1, math.prod(shape[1:]))
        return (rng.standard_normal(shape) * math.sqrt(1.0 / fan_in)).astype(np.float32)
    if role in ("bias", "shift"):
        return rng.uniform(-0.1, 0.1, shape).astype(np.float32)
    if role == "mean":
        return rng.normal(0.0, 0.1, shape).astype(np.float32)
    if role == "variance":
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if role == "moving-average factor":
        return np.ones(shape, np.float32)
    if role == "slope":
        return rng.uniform(0.05, 0.3, shape).astype(np.float32)
    return rng.uniform(0.5, 1.5, shape).astype(np.float32)  # scale
