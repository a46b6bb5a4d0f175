"""Plugin layers: a registered custom layer, named by (namespace, name, version), with typed fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from engine.ir import plugin_registry
from engine.ir.dtypes import DataType
from engine.ir.layers.base import LayerKind, LayerParams, TensorInfo, _fail


@dataclass(frozen=True)
class PluginParams(LayerParams):
    """A custom layer computed by a registered plugin (``engine.plugin``).

    ``fields`` are (name, type, value) triples in the plugin's schema order; values are canonical
    (ints, floats, strings, tuples of numbers, ``PluginArray``) so the record stays hashable and
    serializes as plain data. Shape inference asks the registry; an unregistered plugin is an error.
    """

    kind: ClassVar[LayerKind] = LayerKind.PLUGIN
    min_inputs: ClassVar[int] = 0
    max_inputs: ClassVar[int] = 64
    name: str
    version: str
    namespace: str = ""
    fields: tuple[tuple[str, str, Any], ...] = ()

    @property
    def key(self) -> str:
        return plugin_registry.qualified(self.namespace, self.name)

    def field_values(self) -> dict[str, Any]:
        return plugin_registry.field_values(self.fields)

    def infer(self, inputs, weights):
        spec = plugin_registry.lookup(self.namespace, self.name, self.version)
        if spec is None:
            _fail(f"plugin '{self.key}' version {self.version} is not registered")
        try:
            plugin_registry.check_stored_fields(spec, self.fields, f"plugin '{self.key}'")
            descs = [plugin_registry.TensorDesc(i.shape, i.dtype.numpy) for i in inputs]
            outs = plugin_registry.infer_outputs(spec, descs, self.fields)
        except plugin_registry.PluginError as e:
            _fail(str(e))
        return [TensorInfo(o.shape, DataType.from_numpy(o.dtype)) for o in outs]
