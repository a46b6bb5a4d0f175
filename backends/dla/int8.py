"""INT8 on the DLA: which layers compute in INT8, how each tensor is held, and the integer
parameters of the INT8 convolution epilogue.

An INT8 build is mixed precision (``engine.quantization.assign``): convolution, fully connected
and pooling layers the builder marked INT8 carry their scales (``annotation``); every other
compute layer runs FP16 (FP32 when the build has no fp16 flag, which the DLA cannot run); data
movement (concat, shuffle, split, slice, identity) keeps its input's representation. A tensor on
the DLA is therefore an int8 cube at one per-tensor scale or an fp16 cube (:class:`Rep`).

Arithmetic (identical to ``backends.reference.int8``, which follows the same SDP rules):

* CONV: int8 per-output-channel weights, int32 CACC; SDP X1 adds the int16 bias << bias_shift
  (``scales.bias_params``), X2 adds the residual through the element-wise input converter
  (``requant_params(s_res / s_acc)``) and applies ReLU; the output converter requantizes with
  ``requant_params(s_in * s_w[k] / s_out)``. Convolutions run in direct mode: INT8 Winograd
  needs the transformed weights 4·G g Gᵀ to fit int8, which calibrated weights rarely do, and the
  4x accumulator would change the residual converter's rounding.
* Clip(0, max): the reference clips the int8 result at round(max / s_out); the SDP clips before
  its converter, per layer. When that bound is below 127 an extra off-line SDP pass (int8 in,
  int8 out, converter identity) clips the int8 cube exactly; otherwise ReLU alone is exact.
* A residual multiplier ≥ 2**15 has no int16 scale with an unsigned shift; the builder keeps
  such a layer out of INT8 (``assign``) and the lowering refuses it with the same reason.
* Pooling: PDP in INT8 with equal input and output scales.
* SiLU / hard-swish epilogues (:class:`NonlinearEpilogue`): three SDP passes, the form TensorRT's
  DLA runs an exported SiLU in (Sigmoid and ElementWise PROD as separate layers [TRTDOC]), all in
  the INT pipeline. (1) on the fly after the CONV core: bias, residual, and the per-channel
  converter writes the pre-activation as int16 at one per-layer step ``s_x``; (2) off-line: SiLU's
  sigmoid through the Y LUT (int16 entries, LSB 2**-14, ``dla_sim.lut.sigmoid_lut(s_x)``) or
  hard-swish's gate ``clip(x + 3, 0, 6)`` (X1 add of 2**m, clipped ReLU at 2**(m+1), with
  ``s_x = 3 / 2**m``: exact integers); (3) off-line: element-wise multiply of the gate (M-RDMA)
  by the pre-activation (E-RDMA), the converter requantizing the int32 product to int8. The
  reference (``int8_rules.quantize_nonlinear``) rounds the exact function once; these passes
  round the pre-activation to int16, the sigmoid to the table, and the product: the result stays
  within one int8 step of the reference (:func:`nonlinear_error_bound`). Only an int8 output:
  a float network output keeps such a layer in FP16 (:data:`NONLINEAR_FLOAT_OUTPUT`). The int16
  intermediates use the SDP's separate processing and output precisions (PROC_PRECISION /
  OUT_PRECISION [PREC]; INT16 cubes exist in nv_full, a Jetson loadable's I/O is INT8/FP16 only
  [FAQ], these cubes never leave the loadable) [U: whether Xavier/Orin keep INT16 SDP output].

Conversions inside a partition, all on the SDP: an FP16 result read by an INT8 layer is quantized
at the reader's scale (the FP16 pipeline's converter, ``SdpOp.fp_out_scale``); an int8 cube read at
another scale (the inputs of an INT8 concatenation, which TensorRT's DLA gives one scale) passes the
INT pipeline's converter with ``requant_params(s_have / s_want)``; INT8 -> FP16 is the SDP
converter's int8 -> fp16 path followed by an FP16 multiply by the scale rounded to fp16 (the SDP's
operand width): FP16 arithmetic, not bit-identical to the host's float32 dequantize. An INT8 layer
with a float output (a network output of a calibrated build, the host's float32 accumulator value)
writes FP16 through the converter (:func:`float_step`): FP16 accuracy.

Costing needs only shapes: a network without scales (placement before calibration) is planned
with the builder's rules (:func:`planned_int8_reason`) and lowered with placeholder converter
parameters, never executed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dla_sim.ops import Precision as HwPrecision
from dla_sim.ops import Requant
from engine.ir import int8_annotation as annotation
from engine.ir.dtypes import Precision
from engine.ir.errors import UnsupportedError
from engine.ir.int8_math import bias_params, quantize, requant_params, round_half_away
from engine.ir.int8_rules import activation_value, epilogue, epilogue_reason, nonlinear_epilogue, pool_reason
from engine.ir.layers import ActivationType, LayerKind
from engine.ir.network import Layer, Network

INT8_KINDS = (LayerKind.CONVOLUTION, LayerKind.FULLY_CONNECTED, LayerKind.POOLING)
# data movement: the integers pass unchanged at their scale (nearest Resize replicates them)
MOVES = (LayerKind.CONCATENATION, LayerKind.SHUFFLE, LayerKind.IDENTITY, LayerKind.SLICE, LayerKind.SPLIT,
         LayerKind.CONSTANT, LayerKind.RESIZE)
NONLINEAR_FLOAT_OUTPUT = ("a SiLU / hard-swish INT8 epilogue needs an int8 output; a network output of a "
                          "calibrated build leaves in float, so the layer stays in float")
PLACEHOLDER = Requant(scale=(1,), shift=(0,))  # timing-only lowering: converter values do not change time
FLOAT_OUTPUT = ("its INT8 result leaves in float (a network output of a calibrated build is the float32 "
                "accumulator value, which no DLA cube can hold); it runs on the GPU")


@dataclass(frozen=True)
class Rep:
    """How a tensor is held on the DLA: an int8 cube at ``scale`` or an fp16 cube.

    ``scale`` None: an int8 tensor of a network planned without scales (timing only)."""

    precision: HwPrecision
    scale: float | None = None

    @property
    def is_int8(self) -> bool:
        return self.precision is HwPrecision.INT8

    def matches(self, other: Rep) -> bool:
        if self.precision is not other.precision:
            return False
        if not self.is_int8 or self.scale is None or other.scale is None:
            return True
        return np.float32(self.scale) == np.float32(other.scale)

    def describe(self) -> str:
        if not self.is_int8:
            return "fp16"
        return "int8" if self.scale is None else f"int8 at scale {self.scale:.6g}"

    def to_json(self) -> dict:
        return {"precision": self.precision.value, "scale": self.scale}

    @classmethod
    def from_json(cls, d: dict) -> Rep:
        s = d.get("scale")
        return cls(HwPrecision(d["precision"]), None if s is None else float(s))


FP16_REP = Rep(HwPrecision.FP16)


# ------------------------------------------------------------------------------------ layer modes


def planned_int8_reason(layer: Layer, network: Network) -> str | None:
    """Why the INT8 builder would keep ``layer`` out of INT8 (None: it would run INT8), judged on
    structure alone, for networks that are not calibrated yet."""
    if layer.kind not in INT8_KINDS:
        return f"{layer.kind.value} has no INT8 kernel"
    if layer.kind is LayerKind.POOLING:
        return pool_reason(layer.params, len(network.tensors[layer.inputs[0]].shape))
    if layer.kind is LayerKind.CONVOLUTION and len(layer.params.kernel) != 2:
        return "INT8 convolution is 2-D only"
    why = epilogue_reason(layer.params.activation)
    if why is None and nonlinear_epilogue(layer.params.activation) is not None and \
            any(t in network.outputs for t in layer.outputs):
        return NONLINEAR_FLOAT_OUTPUT
    return why


def layer_mode(layer: Layer, network: Network) -> str:
    """'int8', 'fp16', 'fp32' or 'move' for a layer of an INT8 build.

    A compute layer without a precision belongs to a network the builder has not assigned yet
    (placement before calibration): it gets the mode the builder would give it."""
    if layer.kind in MOVES:
        return "move"
    p = layer.precision
    if p is Precision.INT8:
        return "int8"
    if p is Precision.FP16:
        return "fp16"
    if p is Precision.FP32:
        return "fp32"
    return "int8" if planned_int8_reason(layer, network) is None else "fp16"


def spec_of(layer: Layer) -> annotation.Int8Spec | None:
    """The layer's INT8 scales, or None when it has none (planned, timing only)."""
    if annotation.INPUT_SCALES not in layer.weights:
        return None
    return annotation.read(layer)


def has_float_output(layer: Layer, network: Network) -> bool:
    """An INT8 layer without an int8 output (see the module doc)."""
    if layer.kind is LayerKind.POOLING:
        return False
    spec = spec_of(layer)
    if spec is not None:
        return spec.output_scale is None
    return any(t in network.outputs for t in layer.outputs)


def output_rep(layer: Layer) -> Rep:
    """Representation of an INT8 layer's output."""
    spec = spec_of(layer)
    if spec is None:
        return Rep(HwPrecision.INT8)
    s = spec.input_scales[0] if layer.kind is LayerKind.POOLING else spec.output_scale
    return Rep(HwPrecision.INT8, s)


def input_rep(layer: Layer, slot: int) -> Rep:
    """What an INT8 layer reads at input ``slot``: int8 at the layer's input scale."""
    spec = spec_of(layer)
    return Rep(HwPrecision.INT8, None if spec is None else spec.input_scales[slot])


def source_rep(t: str, network: Network) -> Rep | None:
    """How the producer of ``t`` (anywhere in the network) holds it: int8, fp16, or None (float32:
    a network input, an FP32 layer, an INT8 layer with a float output)."""
    prod = network.producer(t)
    if prod is None:
        return None
    mode = layer_mode(prod, network)
    if mode == "int8":
        return None if has_float_output(prod, network) else output_rep(prod)
    if mode == "fp16":
        return FP16_REP
    if mode == "move" and prod.kind is not LayerKind.CONSTANT:
        reps = [source_rep(x, network) for x in prod.inputs if network.producer(x) is None
                or network.producer(x).kind is not LayerKind.CONSTANT]
        if reps and all(r is not None and r.matches(reps[0]) for r in reps):
            return reps[0]
    return None


def int8_readers(t: str, network: Network, seen: set[str] | None = None) -> list[tuple[Layer, Rep]]:
    """INT8 layers reading ``t``, directly or through data movement, with the rep they read it at."""
    seen = set() if seen is None else seen
    out: list[tuple[Layer, Rep]] = []
    for reader in network.consumers().get(t, []):
        if reader.name in seen:
            continue
        mode = layer_mode(reader, network)
        if mode == "int8":
            out += [(reader, input_rep(reader, i)) for i, x in enumerate(reader.inputs) if x == t]
        elif mode == "move":
            seen.add(reader.name)
            for o in reader.outputs:
                out += int8_readers(o, network, seen)
    return out


def context_reason(layer: Layer, network: Network) -> str | None:
    """Why ``layer`` of an INT8 build cannot run on the DLA whatever its neighbours do, or None."""
    mode = layer_mode(layer, network)
    if mode == "fp32":
        return ("it computes in FP32 in this INT8 build (INT8 cannot run it and the fp16 flag is off): the DLA "
                "runs INT8 and FP16 only; build with fp16 as well")
    if mode == "int8":
        try:
            spec = spec_of(layer)
        except UnsupportedError as e:
            return str(e)
        if layer.precision is Precision.INT8 and spec is None and layer.kind in INT8_KINDS:
            return (f"layer {layer.describe()} is marked INT8 but carries no per-tensor scales (calibrate, see "
                    f"engine.quantization)")
        return None
    return None


def int8_readers_of_outputs(layer: Layer, network: Network) -> list[tuple[Layer, Rep]]:
    return [r for t in layer.outputs for r in int8_readers(t, network)]


# ------------------------------------------------------------------------------ conv epilogue


@dataclass(frozen=True)
class ConvEpilogue:
    """Integer parameters of an INT8 convolution / FC: weights, SDP operands and converters."""

    kernel: np.ndarray | None  # int8 KCRS (None: timing only)
    bias: np.ndarray | None  # int16 per channel (None: no bias, or timing only)
    has_bias: bool
    bias_shift: int
    out_requant: Requant
    in_requant: Requant | None  # residual converter
    relu: bool
    clip_q: int | None  # clip of the int8 result below 127: an extra SDP pass
    float_step: float | None = None  # float output: FP16 written in units of this power of two


def requant(ratio: float) -> Requant:
    """The INT pipeline's converter for one multiplier (int8 at one scale -> int8 at another)."""
    return _requant(*requant_params(np.float64(ratio)))


def _requant(scale: np.ndarray, shift: np.ndarray) -> Requant:
    return Requant(scale=tuple(int(v) for v in np.atleast_1d(scale)), shift=tuple(int(v) for v in np.atleast_1d(shift)))


def _residual_and_bias(spec, s_acc: np.ndarray, bias: np.ndarray | None, residual: bool
                       ) -> tuple[Requant | None, np.ndarray | None, int]:
    """(residual converter, int16 bias, bias shift) of an INT8 convolution's on-the-fly SDP pass."""
    in_rq = None
    if residual:
        try:
            in_rq = _requant(*requant_params(np.float64(spec.input_scales[1]) / s_acc))
        except UnsupportedError as e:
            raise UnsupportedError(f"residual converter: {e}; the builder keeps this layer in FP16") from None
    if bias is None:
        return in_rq, None, 0
    b16, bshift = bias_params(round_half_away(np.asarray(bias, dtype=np.float64) / s_acc))
    return in_rq, b16.astype(np.int16), int(bshift)


def conv_epilogue(layer: Layer, kernel: np.ndarray, bias: np.ndarray | None, act, residual: bool,
                  with_values: bool) -> ConvEpilogue:
    """The SDP program of an INT8 convolution/FC ``layer`` (``kernel`` KCRS as the layer stores it)."""
    relu, clip_hi = epilogue(act)
    spec = spec_of(layer)
    if spec is None:
        if with_values:
            raise UnsupportedError(f"layer {layer.describe()} has no INT8 scales: calibrate before running INT8")
        return ConvEpilogue(None, None, bias is not None, 0, PLACEHOLDER, PLACEHOLDER if residual else None, relu,
                            None)
    if spec.kernel_scales is None:
        raise UnsupportedError(f"layer {layer.describe()}: INT8 weights without per-channel scales")
    s_acc = np.float64(spec.input_scales[0]) * spec.kernel_scales.astype(np.float64)
    wq = kernel if kernel.dtype == np.int8 else quantize(kernel, spec.kernel_scales, axis=0)
    step = None
    if spec.output_scale is None:  # a float network output: FP16 through the converter (see float_step)
        step = float_step(wq, s_acc, bias)
        out_rq = _requant(*requant_params(s_acc / step))
    else:
        out_rq = _requant(*requant_params(s_acc / np.float64(spec.output_scale)))
    in_rq, b16, bshift = _residual_and_bias(spec, s_acc, bias, residual)
    clip_q = None
    if clip_hi is not None and step is None:
        q = int(round_half_away(clip_hi / spec.output_scale))
        clip_q = q if q < 127 else None
    if not with_values:
        wq, out_rq, in_rq, b16 = None, PLACEHOLDER, PLACEHOLDER if residual else None, None
    return ConvEpilogue(wq, b16, bias is not None, int(bshift), out_rq, in_rq, relu, clip_q, step)


SIGMOID_FRAC_BITS = 14  # the sigmoid table's int16 entries: LSB 2**-14 (dla_sim.lut)
INT16_MAX = 32767


@dataclass(frozen=True)
class NonlinearEpilogue:
    """The three SDP passes of an INT8 convolution with a SiLU / hard-swish epilogue (module doc).

    ``pre``: the conv pass (bias, residual; ``out_requant`` to int16 at ``x_scale``). SiLU: the LUT
    pass reads int16 at ``x_scale`` (``lut_in_scale``). Hard-swish: the gate pass adds ``gate_bias``
    and clips at ``gate_clip``. ``mul_requant``: int32 product -> int8 at the layer's output scale."""

    kind: ActivationType
    pre: ConvEpilogue
    x_scale: float | None  # real value of one int16 LSB of the pre-activation (None: timing only)
    mul_requant: Requant
    gate_bias: int = 0
    gate_clip: int = 0


def _silu_range(s_out: float) -> float:
    """Pre-activation half-range R of a SiLU with output step ``s_out``: above R the output saturates
    at 127 (silu(R) = 127 s_out), below -R |silu| < s_out / 8 (it rounds to 0 either way)."""
    hi_target = 127.0 * s_out
    lo, hi = 0.0, hi_target + 40.0
    for _ in range(200):  # silu is increasing on [0, inf)
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if activation_value(ActivationType.SILU, mid) < hi_target else (lo, mid)
    x_neg = 1.5
    while abs(float(activation_value(ActivationType.SILU, -x_neg))) > s_out / 8:  # decreasing for x < -1.28
        x_neg += 0.25
    return max(hi, x_neg)


def nonlinear_params(layer: Layer, kernel: np.ndarray, bias: np.ndarray | None, act, residual: bool,
                     with_values: bool) -> NonlinearEpilogue:
    """The SDP programs of an INT8 convolution with a SiLU / hard-swish epilogue (module doc)."""
    kind = nonlinear_epilogue(act)
    if kind is None:
        raise UnsupportedError(f"layer {layer.describe()}: activation {act} is not a non-linear INT8 epilogue")
    spec = spec_of(layer)
    if spec is None or not with_values:
        if spec is None and with_values:
            raise UnsupportedError(f"layer {layer.describe()} has no INT8 scales: calibrate before running INT8")
        pre = ConvEpilogue(None, None, bias is not None, 0, PLACEHOLDER, PLACEHOLDER if residual else None, False,
                           None)
        return NonlinearEpilogue(kind, pre, None, PLACEHOLDER, 1, 2)
    if spec.output_scale is None:
        raise UnsupportedError(f"layer {layer.describe()}: {NONLINEAR_FLOAT_OUTPUT}")
    if spec.kernel_scales is None:
        raise UnsupportedError(f"layer {layer.describe()}: INT8 weights without per-channel scales")
    s_out = float(spec.output_scale)
    s_acc = np.float64(spec.input_scales[0]) * spec.kernel_scales.astype(np.float64)
    gate_bias = gate_clip = 0
    if kind is ActivationType.SILU:
        s_x = _silu_range(s_out) / INT16_MAX
        mul = 2.0 ** -SIGMOID_FRAC_BITS * s_x / s_out  # sigmoid (LSB 2**-14) x pre-activation (LSB s_x)
    else:  # hard-swish: s_x = 3 / 2**m makes x + 3 and the clip at 6 integers 2**m and 2**(m+1)
        reach = max(127.0 * s_out, 3.0)  # above it the output saturates; below -3 it is 0
        m = min(13, int(np.floor(np.log2(3.0 * INT16_MAX / reach))))  # gate 2**(m+1) fits int16
        s_x = 3.0 / 2.0 ** m
        gate_bias, gate_clip = 1 << m, 1 << (m + 1)
        mul = s_x * s_x / (6.0 * s_out)  # x (LSB s_x) times gate (LSB s_x), over 6
    wq = kernel if kernel.dtype == np.int8 else quantize(kernel, spec.kernel_scales, axis=0)
    pre_rq = _requant(*requant_params(s_acc / s_x))
    in_rq, b16, bshift = _residual_and_bias(spec, s_acc, bias, residual)
    pre = ConvEpilogue(wq, b16, bias is not None, int(bshift), pre_rq, in_rq, False, None)
    return NonlinearEpilogue(kind, pre, float(s_x), _requant(*requant_params(np.float64(mul))), gate_bias,
                             gate_clip)


def nonlinear_error_bound(ne: NonlinearEpilogue, s_out: float) -> float:
    """Worst distance, in int8 steps, between the DLA's passes and the exact function before the
    reference's rounding: every int16 pre-activation run through the gate and multiply passes
    (dla_sim's LUT and converter arithmetic) against ``f(x_q * s_x) / s_out``, plus what rounding the
    accumulator to int16 can move (``max|f'| * (s_x / 2 + R * 2**-15)``, the converter's relative
    multiplier error). Below 1.5 the int8 result is within one step of the reference's."""
    if ne.x_scale is None:
        raise ValueError("timing-only epilogue has no values to bound")
    from dla_sim import lut as dla_lut
    from dla_sim.formats import convert_int, rshift_round, saturate

    xq = np.arange(-INT16_MAX, INT16_MAX + 1, dtype=np.int64)
    if ne.kind is ActivationType.SILU:
        gate = saturate(dla_lut.evaluate(dla_lut.sigmoid_lut(ne.x_scale).lut, xq, unit="sdp"), 16)
        slope = 1.1  # max silu' = 1.0998
    else:
        gate = np.minimum(np.maximum(xq + ne.gate_bias, 0), ne.gate_clip)
        slope = 1.5  # max hard-swish' (at x = 3)
    sc, sh = ne.mul_requant.arrays(1)
    y = convert_int(saturate(rshift_round(gate * xq, 0), 32), 0, sc, sh, 8)
    ideal = activation_value(ne.kind, xq * ne.x_scale) / s_out
    grid = float(np.max(np.abs(y - np.clip(ideal, -128.5, 127.5))))
    pre = slope * (ne.x_scale / 2 + INT16_MAX * ne.x_scale * 2.0 ** -15) / s_out
    return grid + pre


def float_step(wq: np.ndarray, s_acc: np.ndarray, bias: np.ndarray | None) -> float:
    """The power of two in whose units an INT8 layer writes a float (FP16) output.

    The SDP's INT pipeline hands FP16 on through its converter as a 17-bit integer then Int17ToFp16
    (cmod ``sdp_c.cpp``), so the converter scales the accumulator to integers of this step; an FP16
    SDP pass multiplies the step back (exact: a power of two). The step is the smallest power of two
    that keeps the largest value the layer can produce (127 * sum|w| * s_acc + |bias|) within fp16's
    range of 2**15, so nothing saturates and the result carries fp16 precision."""
    w = np.abs(wq.astype(np.float64)).reshape(wq.shape[0], -1).sum(axis=1)
    bound = float(np.max(127.0 * w * s_acc + (0.0 if bias is None else np.abs(np.asarray(bias, np.float64)))))
    return float(2.0 ** np.ceil(np.log2(max(bound, 1e-30) / 2.0 ** 15)))


def check_pool(layer: Layer) -> None:
    """INT8 pooling on the PDP needs equal input and output scales."""
    spec = spec_of(layer)
    if spec is not None and spec.output_scale is not None and \
            np.float32(spec.output_scale) != np.float32(spec.input_scales[0]):
        raise UnsupportedError(f"INT8 pooling needs equal input and output scales (got {spec.input_scales[0]:.6g} "
                               f"and {spec.output_scale:.6g})")


def fp16_scale(scale: float) -> np.ndarray:
    """The dequantization multiplier as the SDP's FP16 operand; refused when fp16 cannot hold it."""
    s16 = np.float16(scale)
    if not np.isfinite(s16) or s16 == 0:
        raise UnsupportedError(f"INT8 -> FP16 conversion: scale {scale:.3g} is outside the fp16 operand range")
    return np.array([s16], dtype=np.float16)


__all__ = ["FP16_REP", "INT8_KINDS", "MOVES", "NONLINEAR_FLOAT_OUTPUT", "PLACEHOLDER", "ConvEpilogue",
           "NonlinearEpilogue", "nonlinear_error_bound", "nonlinear_params", "Rep", "check_pool", "context_reason",
           "conv_epilogue", "fp16_scale", "has_float_output", "input_rep", "int8_readers", "layer_mode",
           "output_rep", "planned_int8_reason", "source_rep", "spec_of"]
