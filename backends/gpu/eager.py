"""Layers the GPU backend runs on the device but outside its CUDA graphs (eagerly, on the
context's stream, between the graph segments): recurrent layers (cuBLAS per time step cannot be
captured) and plugin layers with a registered GPU implementation (user CuPy code). The lowering
table refuses both, so they split a partition into segments; this module is where they run.
"""

from __future__ import annotations

from typing import Any

from backends.gpu import plugin, recurrent
from engine.ir.network import Layer


def runs_eagerly(layer: Layer) -> bool:
    return recurrent.runs_here(layer) or plugin.has_gpu_impl(layer)


def prepare(layer: Layer) -> dict[str, Any] | None:
    """Per-partition state (uploaded weights) of an eager layer."""
    return recurrent.upload(layer) if recurrent.runs_here(layer) else None


def run(layer: Layer, inputs: list[Any], state: dict[str, Any] | None, stream: Any, host: bool) -> list[Any]:
    """Outputs of an eager layer: host arrays when ``host``, else CuPy arrays."""
    if recurrent.runs_here(layer):
        outs = recurrent.run(layer, inputs, state or {}, stream)
        return [o.get() for o in outs] if host else outs
    return plugin.run_plugin(layer, inputs, stream, host)
