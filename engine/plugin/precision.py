"""Build-time precision of plugin layers: a plugin computes only in the precisions it declares.

``register(..., precisions=("fp32",))`` keeps its layers in FP32 in an FP16 build (their inputs are
then not rounded to float16, and their float outputs are stored as float32), and ``("fp16",)`` runs
them in FP16 even in an FP32 build, as TensorRT runs a plugin only in a format and type its
supportsFormatCombination accepts. INT8 is never a plugin
precision here: plugin layers of an INT8 build run in the build's float precision.
"""

from __future__ import annotations

from engine.ir import plugin_registry
from engine.ir.dtypes import Precision
from engine.ir.layers import LayerKind
from engine.ir.logger import Logger
from engine.ir.network import Network


def pin_plugin_precisions(network: Network, fp16: bool, logger: Logger | None = None) -> None:
    for layer in network.layers:
        if layer.kind is not LayerKind.PLUGIN:
            continue
        p = layer.params
        spec = plugin_registry.lookup(p.namespace, p.name, p.version)
        allowed = spec.precisions if spec is not None else ("fp32",)
        want = layer.precision or Precision.FP32
        if want is Precision.INT8:
            want = Precision.FP16 if fp16 else Precision.FP32
        if want.value not in allowed:
            want = Precision.FP32 if "fp32" in allowed else Precision.FP16
            if logger is not None:
                logger.verbose(f"plugin layer '{layer.name}' ({p.key}) runs in {want.value.upper()}: the plugin "
                               f"declares precisions {', '.join(allowed)}")
        layer.precision = want
