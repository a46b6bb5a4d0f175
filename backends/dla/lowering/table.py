"""The DLA layer tables and the partition walk: every ``LayerKind`` maps to its lowering or to an
explicit ``Unsupported`` with the reason, and :func:`lower` dispatches each layer through them.

``DLA_LOWERINGS`` lowers a layer in FP16 (and, in an INT8 partition, every layer the INT8 builder
left in FP16 or data movement); ``DLA_INT8_LOWERINGS`` lowers the layers an INT8 partition runs in
INT8. The reasons of the kinds the DLA never runs are those of the support rules
(``backends.dla.support``), which refuse such layers before a partition is formed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from dla_sim.config import DlaConfig
from dla_sim.ops import Precision as HwPrecision
from engine.ir.dtypes import Precision
from engine.ir.errors import UnsupportedError
from engine.ir.layers import LayerKind
from engine.ir.network import Layer, Network

from ...table import Unsupported, check_complete, lookup
from .. import int8
from ..int8 import FP16_REP
from . import conv, movement, pointwise, pool
from .context import Lowered, _Ctx

DlaLowering = Callable[[_Ctx, Layer], None]


def _never(kind: LayerKind, why: str) -> Unsupported:
    return Unsupported(f"no DLA lowering for {kind.value}: {why}")


_QDQ = "explicit Q/DQ is not supported on the DLA (calibrate instead)"

DLA_LOWERINGS: dict[LayerKind, DlaLowering | Unsupported] = {
    # convolution family (CONV core + SDP)
    LayerKind.CONVOLUTION: conv.lower_convolution,
    LayerKind.FULLY_CONNECTED: conv.lower_fully_connected,
    LayerKind.MATRIX_MULTIPLY: conv.lower_matrix_multiply,
    LayerKind.DECONVOLUTION: conv.lower_deconvolution,
    # pooling, reductions, normalisations (PDP, CDP)
    LayerKind.POOLING: pool.lower_pooling,
    LayerKind.REDUCE: pool.lower_reduce,
    LayerKind.LRN: pool.lower_lrn,
    LayerKind.SOFTMAX: pool.lower_softmax,
    # single-point ops (SDP)
    LayerKind.ACTIVATION: pointwise.lower_activation,
    LayerKind.PARAMETRIC_RELU: pointwise.lower_parametric_relu,
    LayerKind.SCALE: pointwise.lower_scale,
    LayerKind.ELEMENTWISE: pointwise.lower_elementwise,
    LayerKind.UNARY: pointwise.lower_unary,
    LayerKind.POINTWISE: pointwise.lower_pointwise,
    # data movement (addressing, BDMA, RUBIK)
    LayerKind.RESIZE: movement.lower_resize,
    LayerKind.CONCATENATION: movement.lower_concatenation,
    LayerKind.SLICE: movement.lower_slice,
    LayerKind.SPLIT: movement.lower_split,
    LayerKind.SHUFFLE: movement.lower_shuffle,
    LayerKind.IDENTITY: movement.lower_identity,
    LayerKind.CONSTANT: movement.lower_constant,
    # kinds the DLA never runs
    LayerKind.GATHER: _never(LayerKind.GATHER, "Gather: no DLA support"),
    LayerKind.NORMALIZATION: _never(LayerKind.NORMALIZATION, "Instance/Layer normalization: no DLA support "
                                                             "(decompose it or run it on the GPU)"),
    LayerKind.CAST: _never(LayerKind.CAST, "Cast: no DLA support"),
    LayerKind.PADDING: _never(LayerKind.PADDING, "Padding: no DLA support (fold it into the next convolution's "
                                                 "padding)"),
    LayerKind.QUANTIZE: _never(LayerKind.QUANTIZE, f"QuantizeLinear: {_QDQ}"),
    LayerKind.DEQUANTIZE: _never(LayerKind.DEQUANTIZE, f"DequantizeLinear: {_QDQ}"),
    LayerKind.PLUGIN: _never(LayerKind.PLUGIN, "plugins run on the GPU, never on the DLA"),
    LayerKind.RNN: _never(LayerKind.RNN, "rnn: no DLA support"),
    LayerKind.LSTM: _never(LayerKind.LSTM, "lstm: no DLA support"),
    LayerKind.GRU: _never(LayerKind.GRU, "gru: no DLA support"),
}
check_complete(DLA_LOWERINGS, "DLA")

_INT8_IMPLEMENTED: dict[LayerKind, DlaLowering] = {
    LayerKind.CONVOLUTION: conv.lower_convolution_int8,
    LayerKind.FULLY_CONNECTED: conv.lower_fully_connected_int8,
    LayerKind.POOLING: pool.lower_pooling_int8,
}
DLA_INT8_LOWERINGS: dict[LayerKind, DlaLowering | Unsupported] = {
    k: _INT8_IMPLEMENTED.get(k) or Unsupported(
        f"{k.value} in INT8: the DLA's INT8 lowering covers convolution, fully connected and pooling (the INT8 "
        f"builder's layers); run it in FP16")
    for k in LayerKind
}
check_complete(DLA_INT8_LOWERINGS, "DLA INT8")

# The implemented entries alone (the names this module's callers used before the tables)
LOWERERS: dict[LayerKind, DlaLowering] = {k: v for k, v in DLA_LOWERINGS.items() if not isinstance(v, Unsupported)}
INT8_LOWERERS: dict[LayerKind, DlaLowering] = dict(_INT8_IMPLEMENTED)


def _lower_int8_partition_layer(ctx: _Ctx, layer: Layer) -> None:
    """One layer of an INT8 partition in its mode (see the package doc and ``int8``)."""
    mode = ctx.mode(layer)
    if mode in ("fp32", "int8"):
        why = int8.context_reason(layer, ctx.network)
        if why:
            raise UnsupportedError(why)
    if mode == "int8":
        ctx.hp = HwPrecision.INT8
        mapped = [ctx.read(t, int8.input_rep(layer, i), layer) for i, t in enumerate(layer.inputs)]
        if mapped != list(layer.inputs):  # read requantized copies
            layer = copy.copy(layer)
            layer.inputs = mapped
        fn = lookup(DLA_INT8_LOWERINGS, layer, "DLA INT8")
        fn(ctx, layer)
        rep = FP16_REP if int8.has_float_output(layer, ctx.network) else int8.output_rep(layer)
    else:
        rep = FP16_REP if mode == "fp16" else ctx.move_rep(layer)
        ctx.hp = rep.precision
        mapped = [ctx.read(t, rep, layer) for t in layer.inputs]
        if mapped != list(layer.inputs):  # read converted copies (their names have no other readers)
            layer = copy.copy(layer)
            layer.inputs = mapped
        fn = lookup(DLA_LOWERINGS, layer, "DLA")
        fn(ctx, layer)
    for t in layer.outputs:
        if t in ctx.out.cubes:
            ctx.reps[t] = rep


def lower(network: Network, layer_names, precision: Precision, cfg: DlaConfig, *,
          with_weights: bool = True) -> Lowered:
    """Hardware ops of the layers ``layer_names`` of ``network`` (a DLA subgraph) at ``precision``."""
    names = set(layer_names)
    unknown = names - {la.name for la in network.layers}
    if unknown:
        raise UnsupportedError(f"partition names unknown layers {sorted(unknown)}")
    if not names:
        raise UnsupportedError("empty partition")
    precision = Precision(precision)
    is_int8 = precision is Precision.INT8
    if is_int8 and with_weights:
        missing = [la.name for la in network.layers if la.name in names
                   and int8.layer_mode(la, network) == "int8" and int8.spec_of(la) is None]
        if missing:
            raise UnsupportedError(f"INT8 on the DLA needs the calibrated scales of its INT8 layers (build with "
                                   f"int8 and calibration, see engine.quantization); missing on {missing[:5]}")
    ctx = _Ctx(network, names, precision, cfg, with_weights)
    for layer in network.layers:
        if layer.name not in names:
            continue
        fn = lookup(DLA_LOWERINGS, layer, "DLA")
        try:
            if is_int8:
                _lower_int8_partition_layer(ctx, layer)
            else:
                fn(ctx, layer)
        except UnsupportedError as e:
            msg = str(e)
            raise UnsupportedError(msg if layer.name in msg else f"{layer.describe()}: {msg}") from None
    outs = [t for la in network.layers if la.name in names for t in la.outputs if ctx.needed_outside(t)]
    ctx.out.outputs = list(dict.fromkeys(t for t in outs if ctx.const_value(t) is None))
    if is_int8:
        ctx.out.reps = {t: ctx.reps[t] for t in (*ctx.out.inputs, *ctx.out.outputs)}
    return ctx.out


def op_count_by_layer(lowered: Lowered) -> dict[str, int]:
    """How many hardware ops each layer emitted (0 for addressing-only or folded layers)."""
    out: dict[str, int] = {}
    for o in lowered.owners:
        out[o] = out.get(o, 0) + 1
    return out


__all__ = ["DLA_INT8_LOWERINGS", "DLA_LOWERINGS", "INT8_LOWERERS", "LOWERERS", "DlaLowering", "lower",
           "op_count_by_layer"]
