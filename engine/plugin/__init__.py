"""Custom layers as plugins (TensorRT's ``tensorrt.plugin`` / IPluginV3 in spirit).

Register a plugin with a shape function, then one implementation per backend::

    import numpy as np
    from engine import plugin

    @plugin.register("demo::scaled_tanh", version="1")
    def scaled_tanh(x: plugin.TensorDesc, scale: float = 1.0) -> plugin.TensorDesc:
        return x.like()

    @plugin.impl("demo::scaled_tanh", backend="reference")
    def scaled_tanh_ref(x: np.ndarray, scale: float) -> np.ndarray:
        return scale * np.tanh(x)

The parser turns an ONNX node of domain ``demo`` and op ``scaled_tanh`` into a plugin layer; a
plan stores the plugin's name, version, namespace and typed fields only. ``load_plugin_file`` is
what ``hetrt build/run/compare --plugins FILE.py`` calls: importing the user's module is an
explicit user action, never something a plan can cause. Importing this package registers the
bundled plugins (``hetrt::EfficientNMS``, ``hetrt::Reorg``).
"""

from __future__ import annotations

from engine.ir.plugin_registry import (
    PluginArray,
    PluginError,
    PluginSpec,
    TensorDesc,
    deregister,
    find,
    impl,
    lookup,
    register,
    registered,
)
from engine.plugin import bundled  # noqa: F401 (registration)
from engine.plugin.loading import load_plugin_file, load_plugin_files

__all__ = ["PluginArray", "PluginError", "PluginSpec", "TensorDesc", "deregister", "find", "impl",
           "load_plugin_file", "load_plugin_files", "lookup", "register", "registered"]
