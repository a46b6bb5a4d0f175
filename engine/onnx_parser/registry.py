"""Op converters keyed by ONNX op type.

A converter takes a ``NodeContext`` and returns one ``Ref`` per node output (``None`` for an
output it does not produce). Modules register converters with ``@converter("Op", ...)``; the set
of registered op types is exactly what the parser claims to support.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.onnx_parser.context import NodeContext, Ref

Converter = Callable[[NodeContext], list[Ref | None]]

CONVERTERS: dict[str, Converter] = {}


def converter(*op_types: str) -> Callable[[Converter], Converter]:
    def register(fn: Converter) -> Converter:
        for op in op_types:
            if op in CONVERTERS:
                raise RuntimeError(f"two converters for ONNX op {op}")
            CONVERTERS[op] = fn
        return fn

    return register
