"""Can this layer run on the DLA, and if not, why: TensorRT's DLA rules plus dla_sim's hardware limits.

Three layers of checks, all reported together (one reason each, joined with "; "):

1. TensorRT's DLA layer support table (reference notes §6, TRT ≤ 10.7) as data: per layer kind the
   precisions it runs in and numeric ranges on its parameters (:data:`RULES`), plus a few named
   checks for what a range cannot say (clip range, elementwise op set, concat axis...). Kinds the
   DLA never runs carry their reason in :data:`NO_DLA`.
2. General DLA tensor rules: rank, non-batch dims ≤ 8192, batch ≤ 4096.
3. The hardware: the layer is lowered alone (``lowering``) and every op is checked against
   ``dla_sim.limits`` (register field widths, feature crossings, config feature flags such as the
   LUT, Winograd, RUBIK), then timed once, which also proves the CBUF can hold it. Lowering
   refusals (an activation the SDP lacks, an unaddressable concat) are reasons too.

INT8 builds are mixed precision: each layer is checked in the precision it computes in there
(``int8.layer_mode``), after the INT8 context rules of ``int8.context_reason`` (an FP16 result read
by an INT8 layer, an INT8 layer with a float output, int8 scales meeting in a concatenation).

Support is per layer in isolation; a partition may still be refused when compiled (e.g. a
concatenation whose inputs run elsewhere is fine, one that needs a tensor in two slots gets a
BDMA copy) — ``compile`` raises with the reason then.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dla_sim import conv_core, limits, simulator
from dla_sim.config import DlaConfig
from dla_sim.limits import DlaLimitError
from dla_sim.ops import ConvOp
from engine.ir.dtypes import Precision
from engine.ir.errors import UnsupportedError
from engine.ir.layers import ActivationType, ElementWiseOp, LayerKind, PoolingType, ReduceOp, UnaryOp
from engine.ir.network import Layer, Network

from . import int8, resize, shuffle
from .cubes import MAX_BATCH, MAX_DIM, cube_shape


@dataclass(frozen=True)
class Support:
    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


FP16_INT8 = frozenset({Precision.FP16, Precision.INT8})
FP16_ONLY = frozenset({Precision.FP16})


@dataclass(frozen=True)
class Range:
    """``params.<field>`` (an int or each int of a tuple) must lie in [lo, hi]."""

    field: str
    lo: int
    hi: int
    what: str

    def check(self, params) -> str | None:
        v = getattr(params, self.field, None)
        if v is None or v == ():
            return None
        vals = tuple(v) if isinstance(v, tuple) else (v,)
        bad = [x for x in vals if not self.lo <= int(x) <= self.hi]
        if not bad:
            return None
        shown = "×".join(str(int(x)) for x in vals)
        bound = f"the DLA maximum {self.hi}" if max(bad) > self.hi else f"the DLA minimum {self.lo}"
        return f"{self.what} {shown} {'exceeds' if max(bad) > self.hi else 'is below'} {bound}"


Check = Callable[[Layer, Network, Precision, DlaConfig], str | None]


@dataclass(frozen=True)
class Rule:
    precisions: frozenset[Precision]
    ranges: tuple[Range, ...] = ()
    checks: tuple[Check, ...] = ()
    precision_note: str = ""  # why a precision is missing (e.g. INT8 LRN)


# ---------------------------------------------------------------------------------------------
# named checks (what a range cannot express)


def _spatial_2d(layer, net, prec, cfg):
    k = getattr(layer.params, "kernel", None) or getattr(layer.params, "window", None)
    if k and len(k) != 2:
        return f"{len(k)}-D {layer.kind.value}: the DLA runs 2-D only"
    return None


def _pad_below_kernel(layer, net, prec, cfg):
    p = layer.params
    for name, pads in (("pre", p.pre_padding), ("post", p.post_padding)):
        if any(int(a) >= int(k) for a, k in zip(pads, p.kernel)):
            return (f"padding {'×'.join(map(str, pads))} ({name}) must be smaller than the kernel "
                    f"{'×'.join(map(str, p.kernel))}")
    return None


def _deconv_shape(layer, net, prec, cfg):
    p = layer.params
    k = tuple(p.kernel)
    if len(k) == 2 and k[0] == k[1] and 23 <= k[0] <= 32:
        return f"deconvolution kernel {k[0]}×{k[1]}: square kernels 23–32 are disabled on the DLA"
    if any(p.pre_padding) or any(p.post_padding):
        return "deconvolution padding must be 0 on the DLA"
    if p.groups != 1:
        return f"deconvolution groups {p.groups}: the DLA supports groups 1 only"
    if any(d != 1 for d in p.dilation):
        return f"deconvolution dilation {'×'.join(map(str, p.dilation))}: the DLA supports dilation 1 only"
    return None


def _pool_type(layer, net, prec, cfg):
    t = layer.params.type
    if t not in (PoolingType.MAX, PoolingType.AVERAGE):
        return f"{t.value} pooling: the DLA pools max and average only"
    return None


# Activation [TRTDOC]: ReLU, Sigmoid, TanH, Clip, Leaky ReLU. SiLU, hard-sigmoid and hard-swish are
# what exporters write as Sigmoid/ElementWise PROD/Scale/Clip layers, each on TensorRT's DLA list; the
# optimizer fuses them, the lowering runs them decomposed again (lower.emit_activation).
_DLA_ACTIVATIONS = (ActivationType.RELU, ActivationType.SIGMOID, ActivationType.TANH, ActivationType.CLIP,
                    ActivationType.LEAKY_RELU, ActivationType.SILU, ActivationType.HARD_SWISH,
                    ActivationType.HARD_SIGMOID)


def _activation_spec(spec) -> str | None:
    if spec is None:
        return None
    if spec.type not in _DLA_ACTIVATIONS:
        return (f"activation {spec.type.value}: no DLA support (ReLU, sigmoid, tanh, clip, leaky ReLU, and SiLU / "
                f"hard-swish / hard-sigmoid decomposed into them)")
    if spec.type is ActivationType.CLIP and (spec.alpha != 0.0 or not 1.0 <= spec.beta <= 127.0):
        return f"clip [{spec.alpha:g}, {spec.beta:g}]: the DLA clips ReLU to [0, max] with max in [1, 127]"
    return None


def dla_runs_activation(spec) -> bool:
    """Whether a DLA runs this activation (fused or decomposed): the optimizer's DLA-aware mode
    fuses only these into GEMM epilogues."""
    return _activation_spec(spec) is None


def _activation(layer, net, prec, cfg):
    return _activation_spec(layer.params.activation)


def _eltwise_op(layer, net, prec, cfg):
    """ElementWise [TRTDOC]: sum, sub, prod, max, min (the latest docs add div, pow); div runs as a
    multiply by the reciprocal of a constant divisor."""
    op = layer.params.op
    if op is ElementWiseOp.DIV:
        prod = net.producer(layer.inputs[1])
        if prod is None or prod.kind is not LayerKind.CONSTANT:
            return "ElementWise div by a tensor: the DLA divides only by a constant (a multiply by its reciprocal)"
        return None
    if op not in (ElementWiseOp.SUM, ElementWiseOp.SUB, ElementWiseOp.PROD, ElementWiseOp.MAX, ElementWiseOp.MIN):
        return f"ElementWise {op.value}: no DLA support (sum, sub, prod, max, min, div by a constant only)"
    return None


def _scale_power(layer, net, prec, cfg):
    if "power" in layer.weights and (layer.weights["power"] != 1).any():
        return "Scale with a power term: the DLA scales and shifts only"
    return None


def _concat_axis(layer, net, prec, cfg):
    rank = len(net.tensors[layer.outputs[0]].shape)
    axis = layer.params.axis % rank
    if axis != 1:
        return f"concatenation on axis {axis}: the DLA concatenates channels only"
    if len(layer.inputs) < 2:
        return "concatenation of a single input: the DLA needs at least two"
    return None


def _slice(layer, net, prec, cfg):
    p = layer.params
    if any(s != 1 for s in p.step):
        return f"Slice with steps {tuple(p.step)}: the DLA slices with stride 1 only"
    shape = net.tensors[layer.inputs[0]].shape
    if len(shape) != 4:
        return f"Slice of a rank-{len(shape)} tensor: the DLA slices static 4-D tensors"
    if p.start[0] != 0 or p.size[0] != shape[0]:
        return "Slice on the batch dimension: not supported on the DLA"
    return None


def _softmax(layer, net, prec, cfg):
    if not cfg.post.softmax:
        return f"Softmax: DLA support on Orin only ({cfg.name} has none)"
    return None


def _unary(layer, net, prec, cfg):
    if layer.params.op is not UnaryOp.ABS:
        return f"Unary {layer.params.op.value}: no DLA support (abs only)"
    return None


def _reduce(layer, net, prec, cfg):
    p = layer.params
    shape = net.tensors[layer.inputs[0]].shape
    if p.op not in (ReduceOp.MAX, ReduceOp.MEAN) or len(shape) != 4 or {a % 4 for a in p.axes} != {2, 3}:
        return f"Reduce {p.op.value} over axes {tuple(p.axes)}: the DLA reduces max/mean over H and W only"
    return None


def _matmul(layer, net, prec, cfg):
    prod = net.producer(layer.inputs[1])
    if prod is None or prod.kind is not LayerKind.CONSTANT:
        return "MatMul with a non-constant second input: the DLA runs MatMul only with constant weights (1×1 conv)"
    return None


def _constant(layer, net, prec, cfg):
    cons = net.consumers().get(layer.outputs[0], [])
    bad = [c for c in cons if c.kind not in (LayerKind.MATRIX_MULTIPLY, LayerKind.ELEMENTWISE)]
    if bad or layer.outputs[0] in net.outputs:
        what = bad[0].describe() if bad else "a network output"
        return f"Constant feeding {what}: the DLA folds constants only into MatMul weights and ElementWise operands"
    return None


def _resize(layer, net, prec, cfg):
    try:
        resize.nearest_factors(layer.params, net.tensors[layer.inputs[0]].shape)
    except UnsupportedError as e:
        return str(e)
    return None


def _lrn_window(layer, net, prec, cfg):
    if layer.params.size not in (3, 5, 7, 9):
        return f"LRN window {layer.params.size}: the DLA supports windows 3, 5, 7, 9"
    return None


def _conv_like_ranges(kernel_field: str = "kernel") -> tuple[Range, ...]:
    return (Range(kernel_field, 1, 32, "kernel"), Range("stride", 1, 8, "stride"),
            Range("dilation", 1, 32, "dilation"), Range("pre_padding", 0, 31, "padding"),
            Range("post_padding", 0, 31, "padding"), Range("num_output_maps", 1, 8192, "output maps"),
            Range("groups", 1, 8192, "groups"))


# Convolution: TensorRT 10.x "DLA supported layers and restrictions" [TRTDOC]: 2-D, kernel [1,32],
# padding [0,31] and below the kernel, stride [1,8], dilation [1,32], output maps [1,8192], groups
# [1,8192] (kDLA_HWC4 input: groups [1,4]). Depthwise and grouped INT8 convolutions are not restricted
# further there (NVIDIA runs SSD-MobileNetV1 wholly on the Orin DLA [DLASW]); the lowering packs groups
# into the atom as the hardware does (dla_sim.conv_core.group_packing).
RULES: dict[LayerKind, Rule] = {
    LayerKind.CONVOLUTION: Rule(FP16_INT8, _conv_like_ranges(),
                                (_spatial_2d, _pad_below_kernel, _activation)),
    LayerKind.FULLY_CONNECTED: Rule(FP16_INT8, (Range("num_outputs", 1, 8192, "output maps"),), (_activation,)),
    LayerKind.MATRIX_MULTIPLY: Rule(FP16_INT8, (), (_matmul,)),
    LayerKind.DECONVOLUTION: Rule(FP16_INT8, (Range("kernel", 1, 32, "deconvolution kernel"),
                                              Range("stride", 1, 32, "deconvolution stride"),
                                              Range("num_output_maps", 1, 8192, "output maps")),
                                  (_spatial_2d, _deconv_shape, _activation)),
    LayerKind.POOLING: Rule(FP16_INT8, (Range("window", 1, 8, "pooling window"), Range("stride", 1, 16,
                                                                                       "pooling stride"),
                                        Range("pre_padding", 0, 7, "pooling padding"),
                                        Range("post_padding", 0, 7, "pooling padding")),
                            (_spatial_2d, _pool_type)),
    LayerKind.REDUCE: Rule(FP16_INT8, (), (_reduce,)),
    LayerKind.ACTIVATION: Rule(FP16_INT8, (), (_activation,)),
    LayerKind.PARAMETRIC_RELU: Rule(FP16_INT8),
    LayerKind.SCALE: Rule(FP16_INT8, (), (_scale_power,)),
    LayerKind.ELEMENTWISE: Rule(FP16_INT8, (), (_eltwise_op,)),
    LayerKind.POINTWISE: Rule(FP16_ONLY, (), (), "pointwise chains run in FP16 on the DLA"),
    LayerKind.UNARY: Rule(FP16_INT8, (), (_unary,)),
    LayerKind.LRN: Rule(FP16_ONLY, (), (_lrn_window,), "LRN runs in FP16 on the DLA (TensorRT upgrades INT8)"),
    LayerKind.CONCATENATION: Rule(FP16_INT8, (), (_concat_axis,)),
    LayerKind.RESIZE: Rule(FP16_INT8, (), (_resize,)),  # [TRTDOC], see backends.dla.resize
    LayerKind.SLICE: Rule(FP16_ONLY, (), (_slice,), "Slice runs in FP16 only on the DLA"),
    LayerKind.SPLIT: Rule(FP16_INT8),
    LayerKind.SHUFFLE: Rule(FP16_INT8),
    LayerKind.IDENTITY: Rule(FP16_INT8),
    LayerKind.SOFTMAX: Rule(FP16_ONLY, (), (_softmax,), "Softmax runs in FP16 only on the DLA"),
    LayerKind.CONSTANT: Rule(FP16_INT8, (), (_constant,)),
}


def _normalization_name(layer: Layer, net: Network) -> str:
    rank = len(net.tensors[layer.inputs[0]].shape)
    axes = sorted(a % rank for a in layer.params.axes)
    if rank >= 3 and axes == list(range(2, rank)):
        return "InstanceNormalization"
    if axes and axes == list(range(axes[0], rank)):
        return "LayerNormalization"
    return "Normalization"


NO_DLA: dict[LayerKind, Callable[[Layer, Network], str]] = {
    LayerKind.GATHER: lambda la, net: "Gather: no DLA support",
    LayerKind.NORMALIZATION: lambda la, net: (f"{_normalization_name(la, net)}: no DLA support "
                                              f"(decompose it or run it on the GPU)"),
    LayerKind.CAST: lambda la, net: "Cast: no DLA support",
    LayerKind.PADDING: lambda la, net: "Padding: no DLA support (fold it into the next convolution's padding)",
    LayerKind.QUANTIZE: lambda la, net: "QuantizeLinear: explicit Q/DQ is not supported on the DLA (calibrate instead)",
    LayerKind.DEQUANTIZE: lambda la, net: ("DequantizeLinear: explicit Q/DQ is not supported on the DLA "
                                           "(calibrate instead)"),
    LayerKind.PLUGIN: lambda la, net: f"plugin layer '{la.params.key}': plugins run on the GPU, never on the DLA",
}


# ---------------------------------------------------------------------------------------------


def _tensor_reasons(layer: Layer, net: Network) -> list[str]:
    out = []
    for t in dict.fromkeys([*layer.inputs, *layer.outputs]):
        info = net.tensors[t]
        prod = net.producer(t)
        if prod is not None and prod.kind is LayerKind.CONSTANT:
            continue
        if len(info.shape) == 5 and shuffle.channel_shuffle_pair(net, layer) is not None:
            continue  # the rank-5 middle of a channel shuffle lives inside the partition (module shuffle)
        if not info.dtype.is_float:
            out.append(f"tensor '{t}' is {info.dtype.value}: the DLA computes on floating-point tensors "
                       f"(FP16/INT8 inside)")
            continue
        try:
            n, c, h, w = cube_shape(info.shape)
        except UnsupportedError as e:
            out.append(str(e))
            continue
        big = [d for d in (c, h, w) if d > MAX_DIM]
        if big:
            out.append(f"tensor '{t}' {info.shape}: dimension {max(big)} exceeds the DLA maximum {MAX_DIM}")
        if n > MAX_BATCH:
            out.append(f"tensor '{t}': batch {n} exceeds the DLA maximum {MAX_BATCH}")
    return out


def _hardware_reasons(layer: Layer, net: Network, precision: Precision, cfg: DlaConfig,
                      have_rule_reasons: bool) -> list[str]:
    """Reasons from lowering the layer alone and checking its ops against the hardware. A lowering
    refusal that only restates an already failed TensorRT rule is dropped."""
    from .lower import lower

    pair = shuffle.channel_shuffle_pair(net, layer)
    names = [pair[0].name, pair[1].name] if pair is not None else [layer.name]
    try:
        lowered = lower(net, names, precision, cfg, with_weights=False)
    except UnsupportedError as e:
        if have_rule_reasons:
            return []
        msg = str(e)
        prefix = f"{layer.describe()}: "
        return [msg[len(prefix):] if msg.startswith(prefix) else msg]
    reasons: list[str] = []
    for op in lowered.ops:
        found = conv_core.check(op, cfg) if isinstance(op, ConvOp) else limits.check(op, cfg)
        reasons += [r for r in found if r not in reasons]
    if reasons:
        return reasons
    try:
        simulator.simulate(lowered.ops, cfg, timing_only=True)
    except (DlaLimitError, ValueError) as e:
        return [str(e)]
    return []


def supports(layer: Layer, network: Network, precision: Precision, cfg: DlaConfig) -> Support:
    """Whether ``layer`` can run on a DLA of configuration ``cfg`` at ``precision``, and why not."""
    precision = Precision(precision)
    if layer.device == "gpu":
        return Support(False, f"{layer.describe()} is pinned to the GPU")
    if precision is Precision.FP32:
        return Support(False, "FP32 requested: the DLA runs FP16 and INT8 only")
    if layer.kind in NO_DLA:
        return Support(False, NO_DLA[layer.kind](layer, network))
    rule = RULES.get(layer.kind)
    if rule is None:
        return Support(False, f"{layer.kind.value}: no DLA support")
    reasons: list[str] = []
    eff = precision
    if precision is Precision.INT8:
        why = int8.context_reason(layer, network)
        if why:
            return Support(False, why)
        eff = _int8_build_precision(layer, network)
    if eff not in rule.precisions:
        note = rule.precision_note or f"{layer.kind.value} has no {eff.value.upper()} DLA path"
        reasons.append(f"{eff.value.upper()} requested: {note}")
    reasons += _tensor_reasons(layer, network)
    reasons += [r for rng in rule.ranges if (r := rng.check(layer.params))]
    checked = [r for chk in rule.checks if (r := chk(layer, network, eff, cfg))]
    reasons += checked
    if not reasons or all(_lowerable_reason(r) for r in reasons):
        reasons += _hardware_reasons(layer, network, precision, cfg, bool(checked))
    reasons = list(dict.fromkeys(reasons))
    return Support(not reasons, "; ".join(reasons))


def _int8_build_precision(layer: Layer, network: Network) -> Precision:
    """The precision ``layer`` computes in on the DLA in an INT8 build (``int8.layer_mode``): data
    movement in INT8 when it moves int8 data (from an INT8 producer or to INT8 readers)."""
    mode = int8.layer_mode(layer, network)
    if mode == "int8":
        return Precision.INT8
    if mode == "move" and layer.inputs and layer.kind is not LayerKind.CONSTANT:
        src = int8.source_rep(layer.inputs[0], network)
        if (src is not None and src.is_int8) or int8.int8_readers_of_outputs(layer, network):
            return Precision.INT8
        return Precision.FP16
    return Precision.FP16 if mode == "fp16" else Precision.INT8


def _lowerable_reason(reason: str) -> bool:
    """Reasons after which lowering still makes sense (numeric limits): the hardware check then adds
    every violated register limit too."""
    if reason.startswith("tensor '"):
        return "exceeds the DLA maximum" in reason
    return not reason.startswith(("rank-", "FP32", "INT8 requested", "FP16 requested"))


__all__ = ["NO_DLA", "RULES", "Range", "Rule", "Support", "supports"]
