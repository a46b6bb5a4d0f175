"""ONNX nodes that name a registered plugin become plugin layers.

A node matches plugin ``namespace::name`` when its (domain, op type) is (namespace, name); nodes of
the default domain match plugins with the empty namespace, and only when hetrt has no built-in
converter for the op (as TensorRT's parser falls back to plugins for ops it does not import). The
attribute ``plugin_version`` picks a version (default: the highest registered); every other
attribute becomes a typed field, checked against the plugin's schema.
"""

from __future__ import annotations

from typing import Any

import onnx
from onnx import numpy_helper

import engine.plugin  # noqa: F401 (registers the bundled plugins)
from engine.ir import plugin_registry
from engine.ir.layers import PluginParams
from engine.onnx_parser.context import NodeContext, Ref

_RESERVED = ("plugin_version",)
_DEFAULT_DOMAINS = ("", "ai.onnx")


def _version(node: onnx.NodeProto) -> str | None:
    for a in node.attribute:
        if a.name == "plugin_version":
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else str(v)
    return None


def plugin_for(node: onnx.NodeProto) -> plugin_registry.PluginSpec | None:
    """The registered plugin this node names, or None."""
    namespace = "" if node.domain in _DEFAULT_DOMAINS else node.domain
    return plugin_registry.lookup(namespace, node.op_type, _version(node))


def describe_missing(node: onnx.NodeProto) -> str:
    key = plugin_registry.qualified("" if node.domain in _DEFAULT_DOMAINS else node.domain, node.op_type)
    version = _version(node)
    return (f"no plugin '{key}'{'' if version is None else f' version {version}'} is registered "
            f"(register one with engine.plugin.register, or load it with --plugins FILE.py)")


def _attribute(a: onnx.AttributeProto) -> Any:
    v = onnx.helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, onnx.TensorProto):
        return numpy_helper.to_array(v)
    return v


def convert(nc: NodeContext) -> list[Ref]:
    spec = plugin_for(nc.node)
    if spec is None:
        raise nc.unsupported(describe_missing(nc.node))
    given = {a.name: _attribute(a) for a in nc.node.attribute if a.name not in _RESERVED}
    try:
        fields = plugin_registry.canonical_fields(spec, given, spec.describe())
    except plugin_registry.PluginError as e:
        raise nc.error(str(e)) from None
    params = PluginParams(name=spec.name, version=spec.version, namespace=spec.namespace, fields=fields)
    return nc.add(params, nc.inputs())
