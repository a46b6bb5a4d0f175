"""The conversion state: Caffe blob names → network tensors, layer naming, weights, errors.

Caffe reuses a blob name when a layer works in place (top == bottom). Each write gets its own
tensor; the last writer of a blob takes the blob's own name (so marked outputs keep the names the
prototxt gives them), earlier writers get ``blob/layer`` names. Input blobs keep their names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from engine.caffe_parser.weights import WeightSource
from engine.ir.errors import NetworkError, ParserError
from engine.ir.layers import LayerParams
from engine.ir.network import Network


class LayerContext:
    """One Caffe layer as a converter sees it: inputs, parameters, weights and layer creation."""

    def __init__(self, conv: Converter, layer, index: int) -> None:
        self.conv = conv
        self.layer = layer
        self.index = index
        self.name = layer.name
        self.type = layer.type

    @property
    def where(self) -> str:
        return f"layer '{self.name}' (type {self.type})"

    def error(self, message: str) -> ParserError:
        return ParserError(f"{self.where}: {message}")

    @property
    def network(self) -> Network:
        return self.conv.network

    def bottoms(self, count: int | None = None, at_least: int = 1) -> list[str]:
        """Tensor names of the bottoms; checks their number."""
        names = list(self.layer.bottom)
        if count is not None and len(names) != count:
            raise self.error(f"takes {count} bottom blob(s), got {len(names)}")
        if len(names) < at_least:
            raise self.error(f"takes at least {at_least} bottom blob(s), got {len(names)}")
        out = []
        for b in names:
            if b not in self.conv.blobs:
                raise self.error(f"bottom blob '{b}' is not produced by any earlier layer or input")
            out.append(self.conv.blobs[b])
        return out

    def shape(self, tensor: str) -> tuple[int, ...]:
        return self.network.tensors[tensor].shape

    def weights(self, expected: Sequence[tuple[str, tuple[int, ...]]]) -> list[np.ndarray]:
        return self.conv.weights.blobs(self.where, self.name, expected)

    def add(self, params: LayerParams, inputs: Sequence[str], weights: dict[str, np.ndarray] | None = None,
            final: bool = True, tops: Sequence[str] | None = None) -> list[str]:
        """Add a layer. ``final`` layers write the Caffe tops; others make intermediate tensors."""
        layer_name = self.conv.fresh_layer(self.name if final else f"{self.name}/{params.kind.value}")
        tops = list(self.layer.top) if tops is None and final else list(tops or [])
        try:
            if final:
                outs = [self.conv.tensor_for_top(t, self.index) for t in tops]
                layer = self.network.add_layer(params, list(inputs), weights, name=layer_name,
                                               output_names=outs or None, origin=[self.name])
            else:
                layer = self.network.add_layer(params, list(inputs), weights, name=layer_name, origin=[self.name])
        except NetworkError as e:
            raise self.error(str(e)) from None
        if final:
            if len(layer.outputs) != len(tops):
                raise self.error(f"produces {len(layer.outputs)} outputs for {len(tops)} top blobs")
            for t, o in zip(tops, layer.outputs):
                self.conv.blobs[t] = o
        return list(layer.outputs)

    def add1(self, params: LayerParams, inputs: Sequence[str], weights: dict[str, np.ndarray] | None = None,
             final: bool = True) -> str:
        return self.add(params, inputs, weights, final)[0]


Convert = Callable[[LayerContext], None]
CONVERTERS: dict[str, Convert] = {}


def converter(*types: str) -> Callable[[Convert], Convert]:
    def register(fn: Convert) -> Convert:
        for t in types:
            CONVERTERS[t] = fn
        return fn

    return register


class Converter:
    """Builds the network layer by layer; ``blobs`` maps each Caffe blob to its current tensor."""

    def __init__(self, network: Network, layers: list, weights: WeightSource, batch: int | None) -> None:
        self.network = network
        self.layers = layers
        self.weights = weights
        self.batch = batch
        self.blobs: dict[str, str] = {}
        self.last_writer: dict[str, int] = {}
        for i, layer in enumerate(layers):
            for t in layer.top:
                self.last_writer[t] = i

    def fresh_layer(self, base: str) -> str:
        used = {la.name for la in self.network.layers}
        name, k = base, 0
        while name in used:
            k += 1
            name = f"{base}_{k}"
        return name

    def fresh_tensor(self, base: str) -> str:
        reserved = set(self.last_writer) | set(self.network.tensors)
        name, k = base, 0
        while name in reserved:
            k += 1
            name = f"{base}_{k}"
        return name

    def tensor_for_top(self, top: str, index: int) -> str:
        if self.last_writer.get(top) == index and top not in self.network.tensors:
            return top
        return self.fresh_tensor(f"{top}/{self.layers[index].name}")

    def add_input(self, blob: str, shape: Sequence[int], where: str) -> None:
        shape = [int(d) for d in shape]
        if not shape or any(d < 1 for d in shape):
            raise ParserError(f"{where}: input '{blob}' has shape {shape}; every dimension must be >= 1")
        if self.batch is not None:
            shape[0] = int(self.batch)
        if blob in self.blobs:
            raise ParserError(f"{where}: input blob '{blob}' is defined twice")
        try:
            self.network.add_input(blob, shape)
        except NetworkError as e:
            raise ParserError(f"{where}: {e}") from None
        self.blobs[blob] = blob
