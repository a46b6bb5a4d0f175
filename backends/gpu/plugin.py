"""Plugin layers in a GPU partition: the plugin's CuPy implementation, on the context's stream.

A plugin layer is its own unit between CUDA-graph segments (``backend.GpuPartition``). When the
plugin registered a ``gpu`` implementation it gets CuPy arrays and the stream and returns CuPy
arrays; otherwise the layer runs on the reference backend like any other fallback. Float inputs
reach the implementation in the layer's storage type (float16 for an FP16 layer) when the plugin
declares fp16 among its precisions, in float32 otherwise; float outputs are stored in the layer's
storage type, as the reference backend stores them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from backends.reference.ops.plugin import check_outputs, expected_outputs, spec_of
from engine.ir import plugin_registry
from engine.ir.dtypes import Precision
from engine.ir.errors import ExecutionError
from engine.ir.layers import LayerKind
from engine.ir.network import Layer


def has_gpu_impl(layer: Layer) -> bool:
    if layer.kind is not LayerKind.PLUGIN:
        return False
    p = layer.params
    spec = plugin_registry.lookup(p.namespace, p.name, p.version)
    return spec is not None and "gpu" in spec.impls


def run_plugin(layer: Layer, inputs: list[Any], stream: Any, host: bool) -> list[Any]:
    """Run ``layer``'s GPU implementation; returns host arrays when ``host``, CuPy arrays otherwise."""
    import cupy

    spec = spec_of(layer)
    fp16 = (layer.precision or Precision.FP32) is Precision.FP16
    storage = np.float16 if fp16 else np.float32
    compute = storage if "fp16" in spec.precisions else np.float32
    with stream:
        xs = [cupy.asarray(x) for x in inputs]
        xs = [x.astype(compute, copy=False) if x.dtype.kind == "f" else x for x in xs]
        want = expected_outputs(layer, xs)
        try:
            outs = spec.impls["gpu"](*xs, stream=stream, **layer.params.field_values())
        except Exception as e:  # user code: name the layer and plugin
            raise ExecutionError(f"layer {layer.describe()}: {spec.describe()} (gpu) failed: "
                                 f"{type(e).__name__}: {e}") from e
        outs = [cupy.asarray(o) for o in check_outputs(layer, outs, want)]
        outs = [o.astype(storage, copy=False) if o.dtype.kind == "f" else o.astype(w.dtype, copy=False)
                for o, w in zip(outs, want)]
        if host:
            outs = [o.get(stream=stream) for o in outs]
    stream.synchronize()
    return outs
