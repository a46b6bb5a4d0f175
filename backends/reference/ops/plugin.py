"""Plugin layers on the reference backend: call the plugin's registered numpy implementation.

The dispatcher (``kernels.run_layer``) hands float inputs over in float32 (rounded to float16
first for an FP16 layer) and rounds float outputs to the layer's storage type, as for every other
kernel. Here the outputs are checked against the shape function, so a plugin that returns the
wrong count, shape or type fails with ``ExecutionError`` naming the layer, never silently.
"""

from __future__ import annotations

import numpy as np

from engine.ir import plugin_registry
from engine.ir.errors import ExecutionError, UnsupportedError
from engine.ir.network import Layer


def spec_of(layer: Layer) -> plugin_registry.PluginSpec:
    p = layer.params
    spec = plugin_registry.lookup(p.namespace, p.name, p.version)
    if spec is None:
        raise ExecutionError(f"layer {layer.describe()}: plugin '{p.key}' version {p.version} is not registered "
                             f"in this process (load it with --plugins FILE.py)")
    return spec


def expected_outputs(layer: Layer, inputs: list) -> list[plugin_registry.TensorDesc]:
    spec = spec_of(layer)
    descs = [plugin_registry.TensorDesc(tuple(x.shape), np.dtype(str(x.dtype))) for x in inputs]
    try:
        return plugin_registry.infer_outputs(spec, descs, layer.params.fields)
    except plugin_registry.PluginError as e:
        raise ExecutionError(f"layer {layer.describe()}: {e}") from None


def check_outputs(layer: Layer, outs: object, want: list[plugin_registry.TensorDesc]) -> list:
    """The implementation's result as a list, each output with the declared shape and dtype kind."""
    got = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    if len(got) != len(want):
        raise ExecutionError(f"layer {layer.describe()}: plugin '{layer.params.key}' returned {len(got)} "
                             f"output(s), its shape function declares {len(want)}")
    for i, (o, w) in enumerate(zip(got, want)):
        shape = tuple(getattr(o, "shape", ()))
        if not hasattr(o, "dtype") or shape != w.shape:
            raise ExecutionError(f"layer {layer.describe()}: plugin '{layer.params.key}' output {i} has shape "
                                 f"{shape}, its shape function declares {w.shape}")
        dt = np.dtype(str(o.dtype))
        if (dt.kind == "f") != (w.dtype.kind == "f") or (dt.kind != "f" and dt != w.dtype):
            raise ExecutionError(f"layer {layer.describe()}: plugin '{layer.params.key}' output {i} is {dt}, "
                                 f"its shape function declares {w.dtype}")
    return got


def plugin(layer: Layer, xs: list[np.ndarray], ws: dict[str, np.ndarray]) -> list[np.ndarray]:
    spec = spec_of(layer)
    fn = spec.impls.get("reference")
    if fn is None:
        raise UnsupportedError(f"layer {layer.describe()}: {spec.describe()} has no reference implementation "
                               f"(register one with @engine.plugin.impl('{spec.key}', backend='reference'))")
    want = expected_outputs(layer, xs)
    try:
        outs = fn(*xs, **layer.params.field_values())
    except Exception as e:  # user code: name the layer and plugin
        raise ExecutionError(f"layer {layer.describe()}: {spec.describe()} failed: {type(e).__name__}: {e}") from e
    outs = check_outputs(layer, outs, want)
    return [np.asarray(o).astype(w.dtype, copy=False) if np.asarray(o).dtype.kind != "f" else np.asarray(o)
            for o, w in zip(outs, want)]
