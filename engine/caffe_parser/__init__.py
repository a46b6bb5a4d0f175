"""Caffe → hetrt network definition (TensorRT's nvcaffeparser).

``parse`` reads a deploy .prototxt and, optionally, a .caffemodel with the schema of
``schema`` (a subset of Caffe's own, built at import time), converts the layers that run in the
TEST phase, and marks the requested output blobs. Without a caffemodel every layer gets seeded
random weights (giexec's behaviour), which is enough to build, time and place a network.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from engine.caffe_parser import ops_basic, ops_weighted  # noqa: F401 (registration)
from engine.caffe_parser.converter import CONVERTERS, Converter, LayerContext
from engine.caffe_parser.reader import Source, included_in_test_phase, load_caffemodel, load_text, parse_prototxt
from engine.caffe_parser.weights import WeightSource, caffemodel_bytes
from engine.ir.errors import ParserError, UnsupportedError
from engine.ir.logger import Logger
from engine.ir.network import Network

__all__ = ["build_from_caffe", "caffemodel_bytes", "is_caffe_model", "parse", "supported_layers"]


def supported_layers() -> list[str]:
    """The Caffe layer types the parser converts."""
    return sorted(CONVERTERS)


def is_caffe_model(spec: str | os.PathLike) -> bool:
    """Whether a model path names a Caffe deploy file (by its extension)."""
    return Path(spec).suffix.lower() == ".prototxt"


def parse(prototxt: Source, weights: Source | None = None, outputs: Sequence[str] | None = None,
          batch: int | None = None, seed: int = 0) -> Network:
    """Parse a Caffe deploy network into a static-shape ``Network``.

    ``prototxt`` is a path, or the text itself (bytes, or a str holding a newline or a brace);
    ``weights`` is a .caffemodel path or its bytes.
    ``outputs`` names the blobs to mark as network outputs (default: the blobs no layer reads).
    ``batch`` replaces the first dimension of every input. ``seed`` seeds the random weights used
    when ``weights`` is not given.
    """
    text, display = load_text(prototxt)
    net, strict_error = parse_prototxt(text, display)
    layers = [layer for layer in net.layer if included_in_test_phase(layer)]
    unsupported = [f"'{la.name}' ({la.type or 'no type'})" for la in layers if la.type not in CONVERTERS]
    if unsupported:
        raise UnsupportedError(f"{display}: {len(unsupported)} layer(s) of types hetrt does not convert: "
                               f"{', '.join(unsupported)}; supported types: {', '.join(supported_layers())}")
    if strict_error is not None:
        raise ParserError(strict_error)
    if batch is not None and batch < 1:
        raise ParserError(f"batch must be >= 1, got {batch}")
    source = WeightSource(seed=seed)
    if weights is not None:
        model, wdisplay = load_caffemodel(weights)
        source = WeightSource(model, wdisplay, seed)
    network = Network(net.name or (Path(display).stem if display != "<prototxt>" else "caffe"))
    conv = Converter(network, layers, source, batch)
    _legacy_inputs(conv, net, display)
    for i, layer in enumerate(layers):
        _check_names(layer, display)
        CONVERTERS[layer.type](LayerContext(conv, layer, i))
    _mark_outputs(conv, layers, outputs, display)
    return network


def _check_names(layer, display: str) -> None:
    if not layer.name:
        raise ParserError(f"{display}: a layer of type {layer.type} has no name")
    if layer.type != "Input" and not layer.top:
        raise ParserError(f"{display}: layer '{layer.name}' (type {layer.type}) has no top blob")


def _legacy_inputs(conv: Converter, net, display: str) -> None:
    """NetParameter's own input fields: ``input`` with ``input_shape`` or 4 ``input_dim`` values each."""
    names = list(net.input)
    if not names:
        return
    where = f"{display}: net input"
    if net.input_shape:
        if len(net.input_shape) != len(names):
            raise ParserError(f"{where}: {len(names)} inputs but {len(net.input_shape)} input_shape entries")
        shapes = [[int(d) for d in s.dim] for s in net.input_shape]
    elif net.input_dim:
        dims = [int(d) for d in net.input_dim]
        if len(dims) != 4 * len(names):
            raise ParserError(f"{where}: {len(names)} inputs need {4 * len(names)} input_dim values, got {len(dims)}")
        shapes = [dims[4 * i:4 * i + 4] for i in range(len(names))]
    else:
        raise ParserError(f"{where}: inputs {names} have no input_shape or input_dim")
    for name, shape in zip(names, shapes):
        conv.add_input(name, shape, where)


def _mark_outputs(conv: Converter, layers: list, outputs: Sequence[str] | None, display: str) -> None:
    if outputs:
        for blob in outputs:
            if blob not in conv.blobs:
                known = ", ".join(sorted(conv.blobs))
                raise ParserError(f"{display}: output blob '{blob}' is not produced by the network (blobs: {known})")
            conv.network.mark_output(conv.blobs[blob])
        return
    read = {b for la in layers for b in la.bottom if not set(la.top) & {b}}
    tops = [t for la in layers if la.type != "Input" for t in la.top]
    for blob in dict.fromkeys(tops):
        if blob not in read:
            conv.network.mark_output(conv.blobs[blob])
    if not conv.network.outputs:
        raise ParserError(f"{display}: no output blob; name one with outputs=[...] (--output NAME)")


def build_from_caffe(prototxt: Source, weights: Source | None = None, outputs: Sequence[str] | None = None,
                     config=None, logger: Logger | None = None, seed: int = 0) -> bytes:
    """Parse a Caffe model and build a serialized plan (``build_from_onnx``'s Caffe twin)."""
    from engine.builder import Builder, BuilderConfig

    config = config or BuilderConfig()
    config.validate()
    logger = logger or Logger()
    t0 = time.perf_counter()
    network = parse(prototxt, weights, outputs, batch=config.batch, seed=seed)
    where = "random seeded weights" if weights is None else "weights from the caffemodel"
    logger.info(f"Parsed Caffe model in {time.perf_counter() - t0:.2f} s: {len(network)} layers, {where}")
    return Builder(logger).build_serialized_network(network, config)
