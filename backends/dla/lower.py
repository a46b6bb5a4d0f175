"""Lowering of an IR partition (a set of layer names) to dla_sim hardware operations.

One function, :func:`lower`, walks the partition's layers in network order and emits hardware ops
the way TensorRT's DLA compiler maps layers onto NVDLA units:

* Convolution / FullyConnected / MatMul with a constant second input: ``ConvOp`` + on-the-fly
  ``SdpOp`` (bias, fused activation, fused residual add through the SDP element-wise unit). FC and
  MatMul run as 1×1 convolutions on an (N, C, 1, 1) cube. 3×3 stride-1 layers use Winograd where
  the configuration and the output size allow it ([PG]).
* Pooling → ``PdpOp``, on the fly after the producing convolution when it is that convolution's
  only consumer and the share-line buffer rule holds, else off-line (split in width if needed).
* Activation / PReLU / Scale / ElementWise / Unary(abs) → off-line ``SdpOp`` (an activation or an
  element-wise op that directly follows a convolution with no other consumer is folded into the
  convolution's SDP instead: no memory round trip).
* LRN → ``CdpOp``. Deconvolution → stride_y·stride_x phase convolutions whose outputs are placed
  side by side along C, then a RUBIK contract and a crop ([IAS], ``dla_sim.conv_core``).
* Concatenation on channels, channel Split/Slice, layout-preserving Shuffle, Identity → addressing
  only (:class:`View`, :class:`Assembly`): producers write straight into the channel offset of the
  concatenated cube, consumers read a window of their parent's memory; no op, no time. A tensor that
  must appear in two places (the same tensor concatenated twice) is copied by a ``BdmaOp``.

Anything else raises :class:`UnsupportedError` with a reason a user can act on; hardware limits
are not checked here (``support.py`` and the units check them with ``dla_sim.limits``).

Precision: FP16 follows the project's convention — weights and operands rounded to fp16, CACC and
SDP arithmetic in fp32, outputs rounded to fp16. An INT8 partition is mixed precision: each layer
runs in the mode the INT8 builder gave it (:mod:`backends.dla.int8`: INT8 convolution / FC /
pooling with their annotated scales, FP16 for the rest, data movement in its input's
representation); every tensor is an int8 cube at one scale or an fp16 cube, boundary inputs are
declared in the representation their readers in the partition need, and an FP16 reader of an
int8 cube gets an SDP conversion (int8 -> fp16, then times the scale).

``with_weights=False`` builds the same ops without converting weights (for costing and support
checks, where only shapes matter).
"""

from __future__ import annotations

import copy
from collections import ChainMap
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from dla_sim import conv_core, pdp
from dla_sim.config import DlaConfig
from dla_sim.ops import BdmaOp, CdpOp, ConvOp, CubeDesc, HwOp, PdpOp, RubikOp, SdpOp
from dla_sim.ops import Precision as HwPrecision
from engine.ir.dtypes import Precision
from engine.ir.errors import UnsupportedError
from engine.ir.layers import (
    ActivationSpec,
    ActivationType,
    ElementWiseOp,
    LayerKind,
    PoolingType,
    ReduceOp,
    ScaleMode,
    UnaryOp,
)
from engine.ir.network import Layer, Network

from . import int8, resize, shuffle
from .cubes import atom_channels, cube_shape, hw_precision, make_cube
from .int8 import FP16_REP, Rep

Shape4 = tuple[int, int, int, int]


@dataclass(frozen=True)
class View:
    """``name`` is the window ``start``/``shape`` (NCHW) of ``parent``'s memory: no data moves."""

    name: str
    parent: str
    start: Shape4
    shape: Shape4

    def to_json(self) -> dict:
        return {"name": self.name, "parent": self.parent, "start": list(self.start), "shape": list(self.shape)}

    @classmethod
    def from_json(cls, d: dict) -> View:
        return cls(str(d["name"]), str(d["parent"]), tuple(d["start"]), tuple(d["shape"]))


@dataclass(frozen=True)
class Assembly:
    """``name`` is a cube whose channel ranges were written in place by the producers of ``parts``
    ((tensor, first channel) pairs): concatenation by addressing."""

    name: str
    parts: tuple[tuple[str, int], ...]

    def to_json(self) -> dict:
        return {"name": self.name, "parts": [[t, c] for t, c in self.parts]}

    @classmethod
    def from_json(cls, d: dict) -> Assembly:
        return cls(str(d["name"]), tuple((str(t), int(c)) for t, c in d["parts"]))


@dataclass
class Lowered:
    """Hardware ops of a partition, with everything needed to build its loadable."""

    precision: Precision
    ops: list[HwOp] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)  # IR layer that emitted each op
    cubes: dict[str, CubeDesc] = field(default_factory=dict)  # every hardware tensor
    blobs: dict[str, np.ndarray] = field(default_factory=dict)  # constants (empty without weights)
    constants: dict[str, str] = field(default_factory=dict)  # constant tensor -> role (weight/operand)
    views: list[View] = field(default_factory=list)
    assemblies: list[Assembly] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)  # boundary inputs (IR tensor names)
    outputs: list[str] = field(default_factory=list)  # boundary outputs (IR tensor names)
    fused: dict[str, str] = field(default_factory=dict)  # layer -> layer whose op absorbed it
    reps: dict[str, Rep] = field(default_factory=dict)  # INT8 partitions: boundary tensor -> int8 (scale) / fp16


# ----------------------------------------------------------------------------------------------
# context


class _NetView:
    """The network with extra tensors (conversions the lowering adds) visible in ``tensors``."""

    def __init__(self, network: Network) -> None:
        self._net = network
        self.tensors = ChainMap({}, network.tensors)

    def __getattr__(self, name: str):
        return getattr(self._net, name)


class _Ctx:
    def __init__(self, network: Network, names: set[str], precision: Precision, cfg: DlaConfig,
                 with_weights: bool) -> None:
        self.net = _NetView(network)
        self.network = network
        self.names = names
        self.reps: dict[str, Rep] = {}  # INT8 partitions: how each hardware tensor is held
        self.cfg = cfg
        self.hp = hw_precision(precision)
        self.with_weights = with_weights
        self.out = Lowered(precision)
        self.producers = network.producers()
        self.consumers = network.consumers()
        self.placed: set[str] = set()  # tensors already written into an assembly slot
        self.consts: dict[str, np.ndarray] = {}  # weights of fused pointwise chains, used as operands
        self._boundary: set[str] = set()

    # -- tensors ---------------------------------------------------------------------------

    def const_value(self, t: str) -> np.ndarray | None:
        prod = self.producers.get(t)
        if prod is not None and prod.kind is LayerKind.CONSTANT:
            return prod.weights["value"]
        return self.consts.get(t)

    def cube(self, t: str) -> CubeDesc:
        """The cube of a tensor the current layer reads (a boundary input is declared on first use)."""
        c = self.out.cubes.get(t)
        if c is not None:
            return c
        if self.const_value(t) is not None:
            raise UnsupportedError(f"tensor '{t}' is a constant here; the DLA takes constants only as "
                                   f"weights or operands of the layers that can fold them")
        prod = self.producers.get(t)
        if prod is not None and prod.name in self.names:  # pragma: no cover - order guaranteed by the network
            raise UnsupportedError(f"tensor '{t}' is read before its producer '{prod.name}' was lowered")
        c = make_cube(t, self.net.tensors[t].shape, self.hp)
        self.out.cubes[t] = c
        self.out.inputs.append(t)
        self._boundary.add(t)
        return c

    def new_cube(self, t: str, shape: tuple[int, ...]) -> CubeDesc:
        c = make_cube(t, shape, self.hp)
        self.out.cubes[t] = c
        return c

    def ir_out(self, t: str) -> CubeDesc:
        return self.new_cube(t, self.net.tensors[t].shape)

    def needed_outside(self, t: str) -> bool:
        return t in self.net.outputs or any(c.name not in self.names for c in self.consumers.get(t, []))

    def sole_use(self, t: str, layer: Layer) -> bool:
        """True when ``layer`` is the only reader of ``t`` and nothing outside needs it."""
        cons = self.consumers.get(t, [])
        return (len(cons) == 1 and cons[0] is layer and layer.inputs.count(t) == 1
                and not self.needed_outside(t) and t not in self.placed)

    def weight(self, a: np.ndarray) -> np.ndarray | None:
        """A float weight as the DLA stores it in FP16 (None when only shapes are wanted)."""
        return np.asarray(a).astype(np.float16) if self.with_weights else None

    def blob(self, name: str, value: np.ndarray | None, role: str = "weight") -> str:
        self.out.constants[name] = role
        if value is not None:
            self.out.blobs[name] = np.ascontiguousarray(value)
        return name

    def emit(self, layer: Layer, *ops: HwOp) -> None:
        for op in ops:
            self.out.ops.append(op)
            self.out.owners.append(layer.name)

    def last_flying_sdp(self, t: str, layer: Layer) -> SdpOp | None:
        """The on-the-fly SDP just emitted that writes ``t``, when ``layer`` may fold into it."""
        if not self.out.ops:
            return None
        op = self.out.ops[-1]
        if isinstance(op, SdpOp) and op.source == "flying" and op.outputs[0] == t and self.sole_use(t, layer):
            return op
        return None

    def replace_last(self, op: HwOp, layer: Layer) -> None:
        old = self.out.ops[-1]
        self.out.ops[-1] = op
        self.out.fused[layer.name] = self.out.owners[-1]
        for t in old.outputs:
            if t not in op.outputs:
                self.out.cubes.pop(t, None)


    # -- INT8 partitions: representations -------------------------------------------------

    def mode(self, layer: Layer) -> str:
        return int8.layer_mode(layer, self.network)

    def want(self, t: str) -> Rep | None:
        """The representation this partition's readers need for ``t`` (int8 wins: fp16 readers convert; the
        first int8 reader's scale is kept, readers at other scales requantize)."""
        reps: list[Rep] = []
        for reader in self.consumers.get(t, []):
            if reader.name not in self.names:
                continue
            m = self.mode(reader)
            if m == "int8":
                reps += [int8.input_rep(reader, i) for i, x in enumerate(reader.inputs) if x == t]
            elif m == "fp16":
                reps.append(FP16_REP)
            elif m == "move" and reader.kind is not LayerKind.CONSTANT:
                reps += [w for o in reader.outputs if (w := self.want(o)) is not None]
        ints = [r for r in reps if r.is_int8]  # readers at other scales requantize it (Ctx.to_int8)
        if ints:
            return next((r for r in ints if r.scale is not None), ints[0])
        return FP16_REP if reps else None

    def read(self, t: str, rep: Rep, layer: Layer) -> str:
        """The tensor holding ``t`` as ``rep`` for ``layer``: ``t`` itself (declared on first use when
        it is a boundary input) or its FP16 conversion; refuses what the DLA cannot convert."""
        if self.const_value(t) is not None:
            return t
        have = self.reps.get(t)
        if have is None:
            if t in self.out.cubes:  # pragma: no cover - every cube of an INT8 partition has a rep
                raise UnsupportedError(f"tensor '{t}' has no representation")
            w = self.want(t) or rep
            have = w if w.is_int8 else FP16_REP
            self.out.cubes[t] = make_cube(t, self.net.tensors[t].shape, have.precision)
            self.out.inputs.append(t)
            self._boundary.add(t)
            self.reps[t] = have
        if have.matches(rep):
            return t
        if rep.is_int8:
            return self.to_int8(t, have, rep, layer)
        return self.to_fp16(t, have, layer)

    def to_int8(self, t: str, have: Rep, rep: Rep, layer: Layer) -> str:
        """``t`` requantized to int8 at ``rep``'s scale by one off-line SDP pass: an fp16 cube through
        the converter at the scale (``fp_out_scale``), an int8 cube at another scale through the INT
        pipeline's output converter (``requant_params(s_have / s_want)``), which is how TensorRT
        gives an INT8 concatenation one scale on the DLA. Emitted once per tensor and scale."""
        name = f"{t}.q{'' if rep.scale is None else f'{rep.scale:.6g}'}"
        if name in self.out.cubes:
            return name
        shape = self.net.tensors[t].shape
        src = self.out.cubes[t]
        outc = make_cube(name, shape, HwPrecision.INT8)
        self.out.cubes[name] = outc
        if self.with_weights and (rep.scale is None or (have.is_int8 and have.scale is None)):
            raise UnsupportedError(f"tensor '{t}' has no INT8 scale: calibrate before running INT8")
        if have.is_int8:
            rq = int8.PLACEHOLDER
            if self.with_weights:
                rq = int8.requant(float(have.scale) / float(rep.scale))
            op = SdpOp(name=f"{name}.requant", input=src, output=outc, source="memory", out_requant=rq,
                       inputs=(t,), outputs=(name,))
        else:
            step = float(rep.scale) if rep.scale is not None else 1.0
            op = SdpOp(name=f"{name}.quantize", input=src, output=outc, source="memory", fp_out_scale=step,
                       inputs=(t,), outputs=(name,))
        self.emit(layer, op)
        self.net.tensors.maps[0][name] = self.net.tensors[t]
        self.reps[name] = rep
        return name

    def to_fp16(self, t: str, have: Rep, layer: Layer) -> str:
        """int8 cube ``t`` as fp16 values q·scale: SDP int8 -> fp16 (converter identity), then an FP16
        SDP multiply by the scale (an fp16 operand). Emitted once per tensor."""
        name = f"{t}.fp16"
        if name in self.out.cubes:
            return name
        shape = self.net.tensors[t].shape
        mid = f"{t}.fp16i"
        src = self.out.cubes[t]
        midc = make_cube(mid, shape, HwPrecision.FP16)
        outc = make_cube(name, shape, HwPrecision.FP16)
        self.out.cubes[mid], self.out.cubes[name] = midc, outc
        scale = None
        if self.with_weights:
            if have.scale is None:
                raise UnsupportedError(f"tensor '{t}' has no INT8 scale: calibrate before running INT8")
            scale = int8.fp16_scale(have.scale)
        blob = self.blob(f"{t}.dequant.scale", scale, "operand")
        self.emit(layer,
                  SdpOp(name=f"{t}.to_fp16", input=src, output=midc, source="memory", inputs=(t,), outputs=(mid,)),
                  SdpOp(name=f"{t}.dequant", input=midc, output=outc, source="memory", scale="per_layer",
                        inputs=(mid, blob), outputs=(name,)))
        self.net.tensors.maps[0][name] = self.net.tensors[t]
        self.reps[name] = FP16_REP
        return name

    def move_rep(self, layer: Layer) -> Rep:
        """Representation of a data-movement layer: what its INT8 readers need (inputs held otherwise
        are requantized to it, see :meth:`to_int8`), else its in-partition inputs' common int8 rep,
        else FP16; with nothing known, how the producer outside holds it."""
        ins = [t for t in layer.inputs if self.const_value(t) is None]
        known = [self.reps[t] for t in ins if t in self.reps]
        w = None
        for o in layer.outputs:
            w = w or self.want(o)
        if w is not None and w.is_int8:
            return w
        if known:
            if all(k.is_int8 and k.matches(known[0]) for k in known):
                return next((k for k in known if k.scale is not None), known[0])
            return FP16_REP
        if w is not None:
            return w
        src = int8.source_rep(ins[0], self.network) if ins else None
        return src if src is not None and src.is_int8 else FP16_REP


# ----------------------------------------------------------------------------------------------
# activations on the SDP


# Activations TensorRT's DLA runs as separate layers (Sigmoid, ElementWise PROD, Scale, clipped ReLU
# [TRTDOC]) that exporters and the optimizer fuse into one: lowered back into those SDP passes.
DECOMPOSED = (ActivationType.SILU, ActivationType.HARD_SWISH, ActivationType.HARD_SIGMOID)


def emit_activation(ctx: _Ctx, layer: Layer, x: str, out: str, spec: ActivationSpec | None) -> None:
    """``out = act(x)`` as off-line SDP passes; SiLU = x * sigmoid(x) (LUT pass, then an element-wise
    multiply), hard-sigmoid = clip(alpha*x + beta, 0, 1) (X1 add-then-multiply, clipped ReLU 1),
    hard-swish = x * hard_sigmoid(x; 1/6, 1/2)."""
    if spec is None or spec.type not in DECOMPOSED:
        _sdp(ctx, layer, x, out, **sdp_activation(spec))
        return
    shape = ctx.net.tensors[x].shape if x in ctx.net.tensors else ctx.cube(x).shape
    t = spec.type
    alpha, beta = (1 / 6, 0.5) if t is ActivationType.HARD_SWISH else (spec.alpha, spec.beta)
    gate = out if t is ActivationType.HARD_SIGMOID else f"{out}.gate"
    if gate != out:
        ctx.new_cube(gate, shape)
    if t is ActivationType.SILU:
        _sdp(ctx, layer, x, gate, name=f"{out}.sigmoid", activation="sigmoid")
    else:
        if alpha <= 0:
            raise UnsupportedError(f"hard sigmoid with alpha {alpha:g}: the SDP clips an increasing ramp only")
        b = ctx.blob(f"{gate}.bias", ctx.weight(np.array([beta / alpha])), "operand")
        m = ctx.blob(f"{gate}.scale", ctx.weight(np.array([alpha])), "operand")
        _sdp(ctx, layer, x, gate, (b, m), name=f"{out}.hardsigmoid", bias="per_layer", scale="per_layer",
             activation="clip", clip_max=1.0)
    if gate != out:
        _sdp(ctx, layer, x, out, (gate,), name=f"{out}.mul", eltwise="mul", eltwise_input=ctx.out.cubes[gate])


def sdp_activation(spec: ActivationSpec | None) -> dict:
    """SdpOp fields for an IR activation, or UnsupportedError naming what the SDP lacks."""
    if spec is None:
        return {}
    t = spec.type
    if t in DECOMPOSED:
        raise UnsupportedError(f"activation {t.value} takes several SDP passes (emit_activation)")
    if t is ActivationType.RELU:
        return {"activation": "relu"}
    if t in (ActivationType.SIGMOID, ActivationType.TANH):
        return {"activation": t.value}
    if t is ActivationType.LEAKY_RELU:
        return {"activation": "prelu", "prelu_slope": float(spec.alpha)}
    if t is ActivationType.CLIP:
        if spec.alpha != 0.0 or spec.beta <= 0.0:
            raise UnsupportedError(f"Clip [{spec.alpha:g}, {spec.beta:g}]: the DLA clips only [0, max] "
                                   f"(clipped ReLU, max > 0)")
        return {"activation": "clip", "clip_max": float(spec.beta)}
    raise UnsupportedError(f"activation {t.value}: no DLA support (the SDP has ReLU, leaky ReLU, clipped ReLU "
                           f"and sigmoid/tanh lookup tables)")


# ----------------------------------------------------------------------------------------------
# convolution family


def _winograd_ok(cfg: DlaConfig, x: CubeDesc, y: CubeDesc, kernel, stride, dilation, groups) -> bool:
    return (cfg.conv.winograd and tuple(kernel) == (3, 3) and tuple(stride) == (1, 1)
            and tuple(dilation) == (1, 1) and groups == 1 and x.n == 1
            and y.h >= 8 and y.w >= 8 and y.h % 4 == 0 and y.w % 4 == 0)


def _image_input(ctx: _Ctx, x: str, xc: CubeDesc, groups: int, dilation) -> bool:
    """The first convolution reads the network's image in kDLA_HWC4 through the image-input path
    (CDMA IMG, channel pre-extension) rather than direct mode: C <= 4 straight from the host, no
    dilation, groups 1 ([IAS], [PG]; TensorRT's kDLA_HWC4: C in {1, 3, 4}, first layer a conv [TRTR])."""
    return (xc.c <= 4 and x in ctx.network.inputs and groups == 1 and tuple(dilation) == (1, 1)
            and ctx.const_value(x) is None)


def _conv_weights(ctx: _Ctx, name: str, kcrs: np.ndarray | None, mode: str) -> str:
    w = None
    if kcrs is not None:
        w16 = kcrs.astype(np.float16)
        w = conv_core.winograd_weights(w16, HwPrecision.FP16) if mode == "winograd" else w16
    return ctx.blob(f"{name}.w", w)


def _emit_conv(ctx: _Ctx, layer: Layer, x: str, out: str, kcrs: np.ndarray, bias: np.ndarray | None,
               kernel, stride, pad, dilation, groups: int, act: ActivationSpec | None,
               residual: str | None = None) -> None:
    """ConvOp + on-the-fly SdpOp (bias, residual add, activation) writing IR tensor ``out``."""
    xc = ctx.cube(x)
    yc = ctx.ir_out(out)
    mode = "winograd" if _winograd_ok(ctx.cfg, xc, yc, kernel, stride, dilation, groups) else "direct"
    if _image_input(ctx, x, xc, groups, dilation):
        mode = "image"
    wname = _conv_weights(ctx, layer.name, kcrs if ctx.with_weights else None, mode)
    acc = f"{layer.name}.acc"
    conv = ConvOp(name=layer.name, input=xc, output=yc, kernel=tuple(kernel), stride=tuple(stride),
                  pad=tuple(pad), dilation=tuple(dilation), groups=groups, mode=mode,
                  inputs=(x, wname), outputs=(acc,))
    operands: list[str] = []
    if bias is not None:
        operands.append(ctx.blob(f"{layer.name}.b", ctx.weight(bias), "operand"))
    fields: dict = {}
    if residual is not None:
        rc = ctx.cube(residual)
        fields.update(eltwise="add", eltwise_input=rc)
        operands.append(residual)
    split = act is not None and act.type in DECOMPOSED
    pre = f"{out}.pre" if split else out
    if split:
        yc = ctx.new_cube(pre, ctx.net.tensors[out].shape)
        conv = replace(conv, output=yc)
    else:
        fields.update(sdp_activation(act))
    sdp = SdpOp(name=f"{layer.name}.sdp", input=yc, output=yc, source="flying",
                bias="per_channel" if bias is not None else "none", inputs=(acc, *operands), outputs=(pre,),
                **fields)
    ctx.emit(layer, conv, sdp)
    if split:
        ctx.out.cubes[out] = ctx.out.cubes.get(out) or make_cube(out, ctx.net.tensors[out].shape, ctx.hp)
        emit_activation(ctx, layer, pre, out, act)


def _pads2d(pre, post) -> tuple[int, int, int, int]:
    return (int(pre[0]), int(pre[1]), int(post[0]), int(post[1]))


def _conv_lowering(emit):
    """A Convolution lowering over ``emit`` (_emit_conv in FP16, _emit_conv_int8 in INT8)."""

    def lower(ctx: _Ctx, layer: Layer) -> None:
        p = layer.params
        if len(p.kernel) != 2:
            raise UnsupportedError(f"{len(p.kernel)}-D convolution: DLA convolutions are 2-D only")
        residual = layer.inputs[1] if p.residual else None
        emit(ctx, layer, layer.inputs[0], layer.outputs[0], layer.weights["kernel"], layer.weights.get("bias"),
             p.kernel, p.stride, _pads2d(p.pre_padding, p.post_padding), p.dilation, p.groups, p.activation,
             residual)

    return lower


def _fc_lowering(emit):
    """A FullyConnected lowering as a 1×1 convolution over ``emit``."""

    def lower(ctx: _Ctx, layer: Layer) -> None:
        x = layer.inputs[0]
        shape = ctx.net.tensors[x].shape
        if len(shape) != 2:
            raise UnsupportedError(f"fully connected over the last axis of a rank-{len(shape)} tensor {shape}: "
                                   f"the DLA runs FC as a 1×1 convolution over channels of an (N, C) input")
        w = layer.weights["kernel"]
        emit(ctx, layer, x, layer.outputs[0], w.reshape(*w.shape, 1, 1), layer.weights.get("bias"),
             (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, layer.params.activation)

    return lower


def lower_matrix_multiply(ctx: _Ctx, layer: Layer) -> None:
    p = layer.params
    a, b = layer.inputs
    bv = ctx.const_value(b)
    if bv is None:
        raise UnsupportedError("MatMul with a non-constant second input: the DLA runs MatMul only as a 1×1 "
                               "convolution with constant weights")
    ashape = ctx.net.tensors[a].shape
    if len(ashape) != 2 or p.transpose_a or bv.ndim != 2:
        raise UnsupportedError(f"MatMul of {ashape} by {bv.shape} (transpose_a={p.transpose_a}): the DLA "
                               f"lowers only (N, C) @ (C, K) to a 1×1 convolution")
    kc = bv if p.transpose_b else bv.T
    _emit_conv(ctx, layer, a, layer.outputs[0], np.asarray(kc).reshape(*kc.shape, 1, 1), None,
               (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, None)


def lower_deconvolution(ctx: _Ctx, layer: Layer) -> None:
    p = layer.params
    if len(p.kernel) != 2:
        raise UnsupportedError(f"{len(p.kernel)}-D deconvolution: DLA deconvolutions are 2-D only")
    if p.groups != 1:
        raise UnsupportedError(f"deconvolution groups {p.groups}: the DLA supports groups 1 only")
    if tuple(p.dilation) != (1, 1):
        raise UnsupportedError(f"deconvolution dilation {tuple(p.dilation)}: the DLA supports dilation 1 only")
    if any(p.pre_padding) or any(p.post_padding) or any(p.output_padding or ()):
        raise UnsupportedError(f"deconvolution padding {tuple(p.pre_padding)}/{tuple(p.post_padding)} "
                               f"(output padding {tuple(p.output_padding or ())}): the DLA supports padding 0 only")
    if ctx.hp is HwPrecision.INT8:
        raise UnsupportedError("INT8 deconvolution lowering is not implemented (run it in FP16)")
    x, out = layer.inputs[0], layer.outputs[0]
    xc = ctx.cube(x)
    k = p.num_output_maps
    (r, s), (sy, sx) = tuple(p.kernel), tuple(p.stride)
    convs, rub, (hc, wc) = conv_core.lower_deconvolution(xc, k, (r, s), (sy, sx), layer.name, ctx.hp)
    phases = conv_core.deconv_phase_weights(layer.weights["kernel"].astype(np.float16), (sy, sx)) \
        if ctx.with_weights else [None] * len(convs)
    bias = layer.weights.get("bias")
    single = sy * sx == 1
    atom = atom_channels(ctx.hp)
    if not single and k % atom:
        raise UnsupportedError(f"deconvolution with {k} output maps at stride {sy}×{sx}: the phase outputs are "
                               f"placed side by side along C, which needs K to be a multiple of the "
                               f"{atom}-channel atom")
    bname = ctx.blob(f"{layer.name}.b", ctx.weight(bias), "operand") if bias is not None else None
    fields = sdp_activation(p.activation)
    parts = []
    ops: list[HwOp] = []
    for i, (conv, wp) in enumerate(zip(convs, phases)):
        ph = out if single else f"{layer.name}.ph{i}"
        phc = ctx.out.cubes[ph] = conv.output.with_(name=ph)
        wname = ctx.blob(f"{layer.name}.w{i}", wp)
        acc = f"{layer.name}.acc{i}"
        ops.append(replace(conv, input=xc, output=phc, inputs=(x, wname), outputs=(acc,)))
        ops.append(SdpOp(name=f"{layer.name}.sdp{i}", input=phc, output=phc, source="flying",
                         bias="per_channel" if bname else "none", inputs=(acc, *([bname] if bname else [])),
                         outputs=(ph,), **fields))
        parts.append((ph, i * k))
    if single:  # stride 1: one convolution with the flipped kernel gives the output directly
        ctx.emit(layer, *ops)
        return
    ext = f"{layer.name}.ext"
    ctx.out.cubes[ext] = rub.input.with_(name=ext)
    ctx.out.assemblies.append(Assembly(ext, tuple(parts)))
    full = out if (hc, wc) == (rub.output.h, rub.output.w) else f"{layer.name}.full"
    fc = ctx.out.cubes[full] = rub.output.with_(name=full)
    ops.append(replace(rub, input=ctx.out.cubes[ext], output=fc, inputs=(ext,), outputs=(full,)))
    ctx.emit(layer, *ops)
    if full != out:
        n = xc.n
        ctx.out.cubes[out] = CubeDesc(n=n, c=k, h=hc, w=wc, precision=ctx.hp, name=out,
                                      line_stride_bytes=fc.line_stride, surface_stride_bytes=fc.surface_stride)
        ctx.out.views.append(View(out, full, (0, 0, 0, 0), (n, k, hc, wc)))


# ----------------------------------------------------------------------------------------------
# pooling


def _emit_pool(ctx: _Ctx, layer: Layer, mode: str, window, stride, pad) -> None:
    x, out = layer.inputs[0], layer.outputs[0]
    prev = ctx.last_flying_sdp(x, layer)
    xc = ctx.out.cubes[x] if prev is not None else ctx.cube(x)
    yc = ctx.ir_out(out)
    op = PdpOp(name=layer.name, input=xc, output=yc, mode=mode, kernel=tuple(window), stride=tuple(stride),
               pad=tuple(pad), source="flying", inputs=(x,), outputs=(out,))
    if pdp.output_shape(op) != yc.shape:
        raise UnsupportedError(f"pooling output {yc.shape} differs from the PDP's window arithmetic "
                               f"{pdp.output_shape(op)}")
    lim = pdp.flying_max_width(op, ctx.cfg)
    if prev is None or yc.w > lim:
        op = replace(op, source="memory", split_width=max(1, -(-yc.w // lim)))
    ctx.emit(layer, op)


def lower_pooling(ctx: _Ctx, layer: Layer) -> None:
    x = layer.inputs[0]
    shape = ctx.net.tensors[x].shape
    if len(shape) != 4:
        raise UnsupportedError(f"{len(shape) - 2}-D pooling: DLA pooling is 2-D only")
    p = layer.params.resolved(shape[2:])
    if p.type is PoolingType.LP:
        raise UnsupportedError("Lp pooling: the DLA pools max and average only")
    if tuple(p.dilation) != (1, 1):
        raise UnsupportedError(f"pooling dilation {tuple(p.dilation)}: the DLA pools without dilation")
    out_hw = ctx.net.tensors[layer.outputs[0]].shape[2:]
    # the PDP computes floor((H + pads - k) / s) + 1; ceil mode adds bottom/right padding
    post = [max(int(b), (o - 1) * s + k - n - a) for o, s, k, n, a, b in
            zip(out_hw, p.stride, p.window, shape[2:], p.pre_padding, p.post_padding)]
    grown = any(q > b for q, b in zip(post, p.post_padding))
    mode = "max" if p.type is PoolingType.MAX else "avg"
    if mode == "avg":
        if grown:
            raise UnsupportedError("average pooling in ceil mode with a partial last window: the PDP divides "
                                   "by the full window")
        if (any(p.pre_padding) or any(p.post_padding)) and not p.count_include_pad:
            raise UnsupportedError("average pooling that excludes padding (count_include_pad=0): the PDP "
                                   "divides by the full window")
    pad = (int(p.pre_padding[0]), int(p.pre_padding[1]), post[0], post[1])
    _emit_pool(ctx, layer, mode, p.window, p.stride, pad)


def lower_reduce(ctx: _Ctx, layer: Layer) -> None:
    p = layer.params
    shape = ctx.net.tensors[layer.inputs[0]].shape
    axes = {a % len(shape) for a in p.axes} if shape else set()
    if len(shape) != 4 or axes != {2, 3} or not p.keep_dims or p.op not in (ReduceOp.MAX, ReduceOp.MEAN):
        raise UnsupportedError(f"Reduce {p.op.value} over axes {tuple(p.axes)}: the DLA reduces only max/mean "
                               f"over H and W (global pooling, keep_dims)")
    _emit_pool(ctx, layer, "max" if p.op is ReduceOp.MAX else "avg", shape[2:], (1, 1), (0, 0, 0, 0))


# ----------------------------------------------------------------------------------------------
# single-point ops (SDP)


def _fold_into_conv(ctx: _Ctx, layer: Layer, x: str, out: str, **changes) -> bool:
    """Fold a pointwise op writing ``out`` into the convolution SDP that writes ``x``; False when it
    cannot (``x`` has other readers, or the SDP's activation/element-wise slot is taken)."""
    prev = ctx.last_flying_sdp(x, layer)
    if prev is None or prev.activation != "none":
        return False
    if "eltwise" in changes and prev.eltwise is not None:
        return False
    yc = prev.output.with_(name=out)
    ctx.out.cubes[out] = yc
    extra = changes.pop("extra_inputs", ())
    op = replace(prev, output=yc, outputs=(out,), inputs=(*prev.inputs, *extra), **changes)
    ctx.replace_last(op, layer)
    return True


def _sdp(ctx: _Ctx, layer: Layer, x: str, out: str, operands: tuple[str, ...] = (), name: str | None = None,
         **fields) -> None:
    xc = ctx.cube(x)
    yc = ctx.out.cubes.get(out) or ctx.new_cube(out, ctx.net.tensors[out].shape if out in ctx.net.tensors
                                               else xc.shape)
    name = name or (f"{layer.name}.sdp" if out in ctx.net.tensors else out)
    ctx.emit(layer, SdpOp(name=name, input=xc, output=yc,
                          source="memory", inputs=(x, *operands), outputs=(out,), **fields))


def lower_activation(ctx: _Ctx, layer: Layer) -> None:
    spec = layer.params.activation
    x = layer.inputs[0]
    if spec is not None and spec.type in DECOMPOSED:
        ctx.cube(x)
        emit_activation(ctx, layer, x, layer.outputs[0], spec)
        return
    fields = sdp_activation(spec)
    if not _fold_into_conv(ctx, layer, x, layer.outputs[0], **fields):
        _sdp(ctx, layer, x, layer.outputs[0], **fields)


def lower_parametric_relu(ctx: _Ctx, layer: Layer) -> None:
    x = layer.inputs[0]
    slope = np.asarray(layer.weights["slope"])
    ctx.cube(x)
    mode = broadcast_mode(slope.shape, ctx.net.tensors[x].shape)
    if mode == "per_layer":
        _sdp(ctx, layer, x, layer.outputs[0], activation="prelu", prelu_slope=float(slope.reshape(-1)[0]))
        return
    if mode != "per_channel":
        raise UnsupportedError(f"PReLU slope of shape {slope.shape}: the DLA takes one slope per layer or per "
                               f"channel")
    op = ctx.blob(f"{layer.name}.slope", ctx.weight(slope.reshape(-1)), "operand")
    _sdp(ctx, layer, x, layer.outputs[0], (op,), activation="prelu")


def lower_scale(ctx: _Ctx, layer: Layer) -> None:
    p = layer.params
    x, out = layer.inputs[0], layer.outputs[0]
    power = layer.weights.get("power")
    if power is not None and np.any(np.asarray(power) != 1):
        raise UnsupportedError("Scale with a power term: the DLA scales and shifts only")
    xc = ctx.cube(x)
    if p.mode is ScaleMode.CHANNEL and p.channel_axis % len(ctx.net.tensors[x].shape) != 1:
        raise UnsupportedError(f"per-channel Scale on axis {p.channel_axis}: the DLA scales along C only")
    mode = {ScaleMode.UNIFORM: "per_layer", ScaleMode.CHANNEL: "per_channel", ScaleMode.ELEMENTWISE: "per_element"}[
        p.mode]

    def operand(key: str) -> str:
        v = np.asarray(layer.weights[key])
        v = v.reshape(xc.c, xc.h, xc.w) if mode == "per_element" else v.reshape(-1)
        return ctx.blob(f"{layer.name}.{key}", ctx.weight(v), "operand")

    scale, shift = "scale" in layer.weights, "shift" in layer.weights
    if scale and shift:  # the SDP's X1 adds before it multiplies: x*s + b takes two passes
        mid = f"{layer.name}.scaled"
        ctx.new_cube(mid, xc.shape)
        _sdp(ctx, layer, x, mid, (operand("scale"),), scale=mode)
        _sdp(ctx, layer, mid, out, (operand("shift"),), bias=mode)
    elif scale:
        _sdp(ctx, layer, x, out, (operand("scale"),), scale=mode)
    else:
        _sdp(ctx, layer, x, out, (operand("shift"),), bias=mode)


_SDP_ELTWISE = {ElementWiseOp.SUM: "add", ElementWiseOp.SUB: "sub", ElementWiseOp.PROD: "mul",
                ElementWiseOp.MAX: "max", ElementWiseOp.MIN: "min", ElementWiseOp.DIV: "mul"}


def _shape(ctx: _Ctx, t: str) -> tuple[int, ...]:
    """Shape of an IR tensor, or of a cube the lowering added (a step of a fused chain)."""
    return ctx.net.tensors[t].shape if t in ctx.net.tensors else ctx.out.cubes[t].shape


def _eltwise(ctx: _Ctx, layer: Layer, a: str, b: str, op: ElementWiseOp, out: str) -> None:
    """``out = a op b`` for tensors or constants ``a``, ``b`` (one SDP pass, or folded into a conv)."""
    if op not in _SDP_ELTWISE:
        raise UnsupportedError(f"ElementWise {op.value}: no DLA support (the SDP adds, subtracts, multiplies, "
                               f"takes max and min, and divides by a constant)")
    kind = _SDP_ELTWISE[op]
    av, bv = ctx.const_value(a), ctx.const_value(b)
    if op is ElementWiseOp.DIV:  # x / c = x * (1/c), the reciprocal an fp16 operand (TensorRT: Div [TRTDOC])
        if bv is None or av is not None or np.any(np.asarray(bv) == 0):
            raise UnsupportedError("ElementWise div: the DLA divides only by a non-zero constant (a multiply by "
                                   "its reciprocal)")
        bv = 1.0 / np.asarray(bv, dtype=np.float64)
        ctx.consts[f"{out}.recip"] = bv
        b = f"{out}.recip"
    if av is not None and bv is not None:
        raise UnsupportedError("ElementWise of two constants: fold it before placement")
    if av is not None:  # constant first: commute, or c - x = (x + (-c)) * -1
        if kind == "sub":
            mode, arr = _const_operand(ctx, -np.asarray(av), _shape(ctx, b), ctx.cube(b))
            neg = ctx.blob(f"{out}.bias", arr, "operand")
            m1 = ctx.blob(f"{out}.scale", ctx.weight(np.array([-1.0])), "operand")
            _sdp(ctx, layer, b, out, (neg, m1), bias=mode, scale="per_layer")
            return
        a, b, av, bv = b, a, bv, av
    if bv is not None:
        xc = ctx.cube(a)
        if kind in ("add", "sub", "mul"):
            v = -np.asarray(bv) if kind == "sub" else np.asarray(bv)
            slot = "scale" if kind == "mul" else "bias"
            mode, arr = _const_operand(ctx, v, _shape(ctx, a), xc)
            name = ctx.blob(f"{out}.{slot}", arr, "operand")
            _sdp(ctx, layer, a, out, (name,), **{slot: mode})
            return
        full = np.broadcast_to(np.asarray(bv), (1, xc.c, xc.h, xc.w)) if ctx.with_weights else None
        name = ctx.blob(f"{out}.operand", ctx.weight(full) if full is not None else None, "operand")
        ctx.out.cubes[name] = xc.with_(n=1, name=name)
        _sdp(ctx, layer, a, out, (name,), eltwise=kind, eltwise_input=ctx.out.cubes[name])
        return
    sa, sb = _shape(ctx, a), _shape(ctx, b)
    if sa != sb:
        if kind in ("add", "mul") and len(sb) == 4 and sb[0] == 1 and sb[2:] == (1, 1) and sa[0] == 1:
            ctx.cube(b)  # a per-channel tensor operand (e.g. squeeze-excitation): SDP bias/scale from memory
            slot = "scale" if kind == "mul" else "bias"
            _sdp(ctx, layer, a, out, (b,), **{slot: "per_channel"})
            return
        if kind in ("add", "mul") and len(sa) == 4 and sa[0] == 1 and sa[2:] == (1, 1) and sb[0] == 1:
            _eltwise(ctx, layer, b, a, op, out)
            return
        raise UnsupportedError(f"ElementWise {op.value} of shapes {sa} and {sb}: the DLA broadcasts only a "
                               f"(1, C, 1, 1) operand in add/mul")
    if _fold_into_conv(ctx, layer, a, out, eltwise=kind, eltwise_input=ctx.cube(b), extra_inputs=(b,)):
        return
    if kind != "sub" and _fold_into_conv(ctx, layer, b, out, eltwise=kind, eltwise_input=ctx.cube(a),
                                         extra_inputs=(a,)):
        return
    bc = ctx.cube(b)
    _sdp(ctx, layer, a, out, (b,), eltwise=kind, eltwise_input=bc)


def _const_operand(ctx: _Ctx, v: np.ndarray, x_shape: tuple[int, ...], xc: CubeDesc
                   ) -> tuple[str, np.ndarray | None]:
    """(SDP operand mode, fp16 array) of a constant broadcast (numpy rules) against a tensor of
    shape ``x_shape`` held as cube ``xc``."""
    mode = broadcast_mode(np.shape(v), x_shape)
    v = np.asarray(v)
    if mode == "per_layer":
        return mode, ctx.weight(v.reshape(1))
    if mode == "per_channel":
        return mode, ctx.weight(v.reshape(-1))
    if mode == "per_element":
        full = np.broadcast_to(v, x_shape).reshape(xc.n, xc.c, xc.h, xc.w)[0]
        return mode, ctx.weight(full)
    raise UnsupportedError(f"constant operand of shape {v.shape} varies over the batch of {x_shape}: the DLA's "
                           f"operands are per layer, per channel or per element of one image")


def broadcast_mode(shape: tuple[int, ...], x_shape: tuple[int, ...]) -> str | None:
    """How a constant of ``shape`` broadcasts over ``x_shape`` (numpy rules): 'per_layer',
    'per_channel', 'per_element' (same for every image), or None (varies with the batch or does
    not broadcast)."""
    r = len(x_shape)
    if len(shape) > r:
        return None
    s = (1,) * (r - len(shape)) + tuple(shape)
    if any(d not in (1, x) for d, x in zip(s, x_shape)):
        return None
    if all(d == 1 for d in s):
        return "per_layer"
    if r >= 2 and all(d == 1 for i, d in enumerate(s) if i != 1):
        return "per_channel"
    if s[0] == 1 or x_shape[0] == 1:
        return "per_element"
    return None


def lower_elementwise(ctx: _Ctx, layer: Layer) -> None:
    a, b = layer.inputs
    _eltwise(ctx, layer, a, b, layer.params.op, layer.outputs[0])


def lower_unary(ctx: _Ctx, layer: Layer) -> None:
    op = layer.params.op
    if op is not UnaryOp.ABS:
        raise UnsupportedError(f"Unary {op.value}: no DLA support (abs only)")
    _sdp(ctx, layer, layer.inputs[0], layer.outputs[0], activation="prelu", prelu_slope=-1.0)


def lower_pointwise(ctx: _Ctx, layer: Layer) -> None:
    """A fused pointwise chain as one SDP pass per step (each step rounds to fp16)."""
    steps = layer.params.steps
    cur = layer.inputs[0]
    shape = ctx.net.tensors[layer.inputs[0]].shape
    for i, s in enumerate(steps):
        out = layer.outputs[0] if i == len(steps) - 1 else f"{layer.name}.s{i}"
        if out != layer.outputs[0]:
            ctx.new_cube(out, shape)
        if s.kind == "activation":
            emit_activation(ctx, layer, cur, out, ActivationSpec(ActivationType(s.op), s.alpha, s.beta))
        elif s.kind == "unary":
            if s.op != UnaryOp.ABS.value:
                raise UnsupportedError(f"pointwise step unary {s.op}: no DLA support (abs only)")
            _sdp(ctx, layer, cur, out, activation="prelu", prelu_slope=-1.0)
        else:
            if s.operand_input is not None:
                other = layer.inputs[s.operand_input]
            else:  # a constant of the chain: an SDP operand, as a Constant layer's value would be
                other = f"{layer.name}.{s.operand_weight}"
                ctx.consts[other] = np.asarray(layer.weights[s.operand_weight])
            a, b = (other, cur) if s.reverse else (cur, other)
            _eltwise(ctx, layer, a, b, ElementWiseOp(s.op), out)
        cur = out


def lower_resize(ctx: _Ctx, layer: Layer) -> None:
    """Nearest upsampling by (fy, fx): ``fy*fx`` 1x1 depthwise copies (weight 1, identity converter)
    written side by side along C, then a RUBIK contract interleaves them (module ``resize``)."""
    x, out = layer.inputs[0], layer.outputs[0]
    xc = ctx.cube(x)
    fy, fx = resize.nearest_factors(layer.params, ctx.net.tensors[x].shape)
    if fy * fx == 1:
        _window(ctx, layer, x, out, (0, 0, 0, 0), cube_shape(ctx.net.tensors[out].shape))
        return
    c = xc.c
    atom = atom_channels(ctx.hp)
    if c % atom:
        raise UnsupportedError(f"nearest Resize of {c} channels: the copies are placed side by side along C, which "
                               f"needs C to be a multiple of the {atom}-channel atom")
    is_int = ctx.hp is HwPrecision.INT8
    ones = None
    if ctx.with_weights:
        ones = np.ones((c, 1, 1, 1), dtype=np.int8 if is_int else np.float16)
    wname = ctx.blob(f"{layer.name}.w", ones)
    identity = int8.PLACEHOLDER if is_int else None
    parts, ops = [], []
    for i in range(fy * fx):
        ph = f"{layer.name}.ph{i}"
        phc = ctx.new_cube(ph, (xc.n, c, xc.h, xc.w))
        acc = f"{layer.name}.acc{i}"
        ops.append(ConvOp(name=f"{layer.name}.copy{i}", input=xc, output=phc, kernel=(1, 1), groups=c,
                          weight_precision=ctx.hp, inputs=(x, wname), outputs=(acc,)))
        ops.append(SdpOp(name=f"{layer.name}.sdp{i}", input=phc, output=phc, source="flying",
                         out_requant=identity, inputs=(acc,), outputs=(ph,)))
        parts.append((ph, i * c))
    ext = f"{layer.name}.ext"
    extc = ctx.new_cube(ext, (xc.n, c * fy * fx, xc.h, xc.w))
    ctx.out.assemblies.append(Assembly(ext, tuple(parts)))
    oc = ctx.ir_out(out)
    ops.append(RubikOp(name=f"{layer.name}.contract", input=extc, output=oc, mode="contract", stride=(fy, fx),
                       inputs=(ext,), outputs=(out,)))
    ctx.emit(layer, *ops)


def lower_lrn(ctx: _Ctx, layer: Layer) -> None:
    p = layer.params
    if ctx.hp is HwPrecision.INT8:
        raise UnsupportedError("LRN in INT8: the CDP's INT pipeline is not a DLA path (TensorRT runs LRN in FP16)")
    x, out = layer.inputs[0], layer.outputs[0]
    xc = ctx.cube(x)
    yc = ctx.ir_out(out)
    ctx.emit(layer, CdpOp(name=layer.name, input=xc, output=yc, local_size=int(p.size), alpha=float(p.alpha),
                          beta=float(p.beta), k=float(p.bias), inputs=(x,), outputs=(out,)))


def lower_softmax(ctx: _Ctx, layer: Layer) -> None:
    if not ctx.cfg.post.softmax:
        raise UnsupportedError(f"Softmax: DLA support on Orin only ({ctx.cfg.name} has none)")
    raise UnsupportedError("Softmax: Orin's DLA runs it, but dla_sim models no softmax unit to lower it to")


# ----------------------------------------------------------------------------------------------
# addressing: concatenation, slices, splits, reshapes


def _place(ctx: _Ctx, layer: Layer, t: str, dst: str, c0: int, copies: list[HwOp]) -> str:
    """The tensor to write into channel offset ``c0`` of ``dst``: ``t`` itself, or a BDMA copy of it
    when ``t`` already lives elsewhere (placed in another slot, or a window of another cube)."""
    c = ctx.cube(t)
    is_view = any(v.name == t for v in ctx.out.views)
    if t not in ctx.placed and not is_view and ctx.const_value(t) is None:
        ctx.placed.add(t)
        return t
    if c.n != 1:
        raise UnsupportedError(f"tensor '{t}' is needed in two places with batch {c.n}: the BDMA copy "
                               f"supports batch 1 only")
    name = f"{dst}.copy{c0}"
    yc = ctx.out.cubes[name] = CubeDesc(n=1, c=c.c, h=c.h, w=c.w, precision=c.precision, name=name)
    ab = c.atom_bytes
    copies.append(BdmaOp(name=name, src_memory="dram", dst_memory="dram", line_bytes=c.w * ab, lines=c.h,
                         surfaces=c.surfaces, src_line_stride=c.line_stride, dst_line_stride=yc.line_stride,
                         src_surface_stride=c.surface_stride, dst_surface_stride=yc.surface_stride,
                         inputs=(t,), outputs=(name,)))
    ctx.placed.add(name)
    return name


def lower_concatenation(ctx: _Ctx, layer: Layer) -> None:
    out = layer.outputs[0]
    shape = ctx.net.tensors[out].shape
    axis = layer.params.axis % len(shape)
    if axis != 1 or len(shape) not in (2, 4):
        raise UnsupportedError(f"concatenation on axis {axis}: the DLA concatenates channels only")
    if len(layer.inputs) < 2:
        raise UnsupportedError("concatenation of one input: the DLA needs at least two")
    atom = atom_channels(ctx.hp)
    offsets = np.cumsum([0] + [ctx.net.tensors[t].shape[1] for t in layer.inputs])[:-1]
    if len(shape) == 4 and any(int(c) % atom for c in offsets):
        _concat_by_placement(ctx, layer, out, [int(c) for c in offsets])
        return
    parts, copies, c0 = [], [], 0
    for t in layer.inputs:
        if c0 % atom:
            raise UnsupportedError(f"concatenation input '{t}' starts at channel {c0}, not a multiple of the "
                                   f"{atom}-channel {ctx.hp.value.upper()} atom: the DLA concatenates by "
                                   f"addressing whole 32-byte atoms")
        if ctx.cube(t).n != 1:
            raise UnsupportedError(f"concatenation with batch {ctx.cube(t).n}: addressing a channel slot of "
                                   f"a multi-image cube is not modelled")
        parts.append((_place(ctx, layer, t, out, c0, copies), c0))
        c0 += ctx.net.tensors[t].shape[1]
    ctx.ir_out(out)
    ctx.emit(layer, *copies)
    ctx.out.assemblies.append(Assembly(out, tuple(parts)))


def _matrix_conv(ctx: _Ctx, layer: Layer, name: str, x: str, out: str, rows: np.ndarray, k: int,
                 residual: str | None = None) -> None:
    """A 1x1 convolution whose weights are 0/1 (output channel ``j`` copies input channel ``rows[j]``;
    -1: none), plus ``residual`` added by the SDP: moves channels to any offset exactly (one product
    per output, INT8 through identity converters). The DLA's way to reach channels addressing cannot
    (a channel window or a concatenation slot off the 32-byte atom)."""
    xc = ctx.cube(x)
    is_int = ctx.hp is HwPrecision.INT8
    w = None
    if ctx.with_weights:
        w = np.zeros((k, xc.c, 1, 1), dtype=np.int8 if is_int else np.float16)
        sel = np.flatnonzero(rows >= 0)
        w[sel, rows[sel], 0, 0] = 1
    yc = ctx.out.cubes.get(out) or ctx.new_cube(out, (xc.n, k, xc.h, xc.w))
    wname = ctx.blob(f"{name}.w", w)
    acc = f"{name}.acc"
    ident = int8.PLACEHOLDER if is_int else None  # Requant scale 1, shift 0: the identity
    fields: dict = {}
    ins: tuple[str, ...] = (acc,)
    if residual is not None:
        fields.update(eltwise="add", eltwise_input=ctx.out.cubes[residual], in_requant=ident)
        ins = (acc, residual)
    ctx.emit(layer, ConvOp(name=name, input=xc, output=yc, kernel=(1, 1), weight_precision=ctx.hp,
                           inputs=(x, wname), outputs=(acc,)),
             SdpOp(name=f"{name}.sdp", input=yc, output=yc, source="flying", out_requant=ident, inputs=ins,
                   outputs=(out,), **fields))


def _concat_by_placement(ctx: _Ctx, layer: Layer, out: str, offsets: list[int]) -> None:
    """A concatenation whose slots are off the atom: each input placed at its offset by a 0/1 1x1
    convolution, the partial results summed by the SDP (zeros elsewhere: exact)."""
    total = ctx.net.tensors[out].shape[1]
    prev = None
    for i, (t, c0) in enumerate(zip(layer.inputs, offsets)):
        c = ctx.net.tensors[t].shape[1]
        rows = np.full(total, -1)
        rows[c0:c0 + c] = np.arange(c)
        last = i == len(layer.inputs) - 1
        dst = out if last else f"{out}.part{i}"
        if last:
            ctx.ir_out(out)
        _matrix_conv(ctx, layer, f"{layer.name}.place{i}", t, dst, rows, total, prev)
        prev = dst


def _window(ctx: _Ctx, layer: Layer, x: str, out: str, start: Shape4, shape: Shape4) -> None:
    xc = ctx.cube(x)
    atom = atom_channels(ctx.hp)
    if start[0] != 0 or shape[0] != xc.n:
        raise UnsupportedError("slicing the batch dimension: the DLA slices C, H and W only")
    if start[1] % atom and tuple(start[2:]) == (0, 0) and tuple(shape[2:]) == (xc.h, xc.w):
        rows = np.arange(start[1], start[1] + shape[1])
        ctx.out.cubes[out] = make_cube(out, tuple(shape), ctx.hp)
        _matrix_conv(ctx, layer, f"{layer.name}.{out}.select", x, out, rows, shape[1])
        return
    if start[1] % atom:
        raise UnsupportedError(f"channel window starting at {start[1]}: not a multiple of the {atom}-channel "
                               f"{ctx.hp.value.upper()} atom, so it is not addressable")
    ctx.out.cubes[out] = CubeDesc(n=shape[0], c=shape[1], h=shape[2], w=shape[3], precision=ctx.hp, name=out,
                                  line_stride_bytes=xc.line_stride, surface_stride_bytes=xc.surface_stride)
    ctx.out.views.append(View(out, x, start, shape))


def lower_slice(ctx: _Ctx, layer: Layer) -> None:
    p = layer.params
    x = layer.inputs[0]
    shape = ctx.net.tensors[x].shape
    if len(shape) != 4 or any(s != 1 for s in p.step):
        raise UnsupportedError(f"Slice of a rank-{len(shape)} tensor with steps {tuple(p.step)}: the DLA slices "
                               f"static 4-D tensors with stride 1")
    _window(ctx, layer, x, layer.outputs[0], tuple(p.start), tuple(p.size))


def lower_split(ctx: _Ctx, layer: Layer) -> None:
    p = layer.params
    x = layer.inputs[0]
    shape = ctx.net.tensors[x].shape
    if len(shape) != 4 or p.axis % 4 != 1:
        raise UnsupportedError(f"Split on axis {p.axis}: the DLA splits 4-D tensors along channels only")
    c0 = 0
    for out, size in zip(layer.outputs, p.sizes):
        _window(ctx, layer, x, out, (0, c0, 0, 0), (shape[0], size, shape[2], shape[3]))
        c0 += size


def _order_preserving(shape: tuple[int, ...], perm: tuple[int, ...] | None) -> bool:
    if perm is None:
        return True
    moved = [d for d in perm if shape[d] != 1]
    return moved == sorted(moved)


def _lower_channel_shuffle(ctx: _Ctx, layer: Layer, pair) -> None:
    """One half of a channel-shuffle pair (module ``shuffle``): the first writes the permuted channels
    into a 4-D cube held under the rank-5 tensor's name, the second is a view of that cube."""
    first, second, perm = pair
    if first.name not in ctx.names or second.name not in ctx.names:
        raise UnsupportedError(f"channel shuffle '{first.name}' -> '{second.name}' passes a rank-5 tensor, which "
                               f"the DLA holds only inside one partition: place both layers on the same core")
    if layer is first:
        x, mid = layer.inputs[0], layer.outputs[0]
        xc = ctx.cube(x)
        ctx.out.cubes[mid] = make_cube(mid, xc.shape, ctx.hp)
        _matrix_conv(ctx, layer, f"{layer.name}.permute", x, mid, np.asarray(perm), xc.c)
        return
    mid, out = layer.inputs[0], layer.outputs[0]
    mc = ctx.out.cubes[mid]
    ctx.out.cubes[out] = CubeDesc(n=mc.n, c=mc.c, h=mc.h, w=mc.w, precision=mc.precision, name=out,
                                  line_stride_bytes=mc.line_stride, surface_stride_bytes=mc.surface_stride)
    ctx.out.views.append(View(out, mid, (0, 0, 0, 0), mc.shape))


def lower_shuffle(ctx: _Ctx, layer: Layer) -> None:
    p = layer.params
    pair = shuffle.channel_shuffle_pair(ctx.network, layer)
    if pair is not None:
        _lower_channel_shuffle(ctx, layer, pair)
        return
    x, out = layer.inputs[0], layer.outputs[0]
    si, so = ctx.net.tensors[x].shape, ctx.net.tensors[out].shape
    mid = tuple(si[d] for d in p.first_perm) if p.first_perm is not None else si
    mid = tuple(p.reshape) if p.reshape is not None else mid
    same = _order_preserving(si, p.first_perm) and _order_preserving(mid, p.second_perm)
    try:
        same = same and cube_shape(si) == cube_shape(so)
    except UnsupportedError:
        same = False
    if not same:
        raise UnsupportedError(f"Shuffle {si} → {so}: changes the element order of the DLA's channel-"
                               f"interleaved layout; RUBIK only contracts, splits and merges planes")
    _window(ctx, layer, x, out, (0, 0, 0, 0), cube_shape(so))


def lower_identity(ctx: _Ctx, layer: Layer) -> None:
    x, out = layer.inputs[0], layer.outputs[0]
    _window(ctx, layer, x, out, (0, 0, 0, 0), cube_shape(ctx.net.tensors[out].shape))


def lower_constant(ctx: _Ctx, layer: Layer) -> None:
    """Constants emit nothing: their consumers fold them into weights or operands."""
    t = layer.outputs[0]
    if ctx.needed_outside(t):
        raise UnsupportedError(f"constant '{t}' is also read outside the DLA partition: let the GPU own it")


# ----------------------------------------------------------------------------------------------
# INT8 layers (convolution, fully connected, pooling with annotated scales)


def _emit_conv_int8(ctx: _Ctx, layer: Layer, x: str, out: str, kcrs: np.ndarray, bias: np.ndarray | None,
                    kernel, stride, pad, dilation, groups: int, act: ActivationSpec | None,
                    residual: str | None = None) -> None:
    """INT8 ConvOp (direct mode) + on-the-fly SdpOp: bias, residual through the element-wise
    converter, ReLU and the per-channel output converter; a clip below 127 adds an SDP pass."""
    ep = int8.conv_epilogue(layer, kcrs, bias, act, residual is not None, ctx.with_weights)
    xc = ctx.cube(x)
    to_float = int8.has_float_output(layer, ctx.network)
    clip = ep.clip_q is not None and not to_float
    first = f"{layer.name}.preclip" if clip else f"{layer.name}.units" if to_float else out
    yc = ctx.new_cube(first, ctx.net.tensors[out].shape)
    sdp_out = yc
    if to_float:  # the INT pipeline's converter writes FP16 (Int17ToFp16)
        sdp_out = ctx.out.cubes[first] = make_cube(first, ctx.net.tensors[out].shape, HwPrecision.FP16)
    wname = ctx.blob(f"{layer.name}.w", ep.kernel)
    acc = f"{layer.name}.acc"
    conv = ConvOp(name=layer.name, input=xc, output=yc, kernel=tuple(kernel), stride=tuple(stride),
                  pad=tuple(pad), dilation=tuple(dilation), groups=groups,
                  mode="image" if _image_input(ctx, x, xc, groups, dilation) else "direct",
                  weight_precision=HwPrecision.INT8, inputs=(x, wname), outputs=(acc,))
    operands: list[str] = []
    if ep.has_bias:
        operands.append(ctx.blob(f"{layer.name}.b", ep.bias, "operand"))
    fields: dict = {}
    if residual is not None:
        fields.update(eltwise="add", eltwise_input=ctx.cube(residual), in_requant=ep.in_requant)
        operands.append(residual)
    sdp = SdpOp(name=f"{layer.name}.sdp", input=yc, output=sdp_out, source="flying",
                bias="per_channel" if ep.has_bias else "none", bias_shift=ep.bias_shift,
                activation="relu" if ep.relu else "none", out_requant=ep.out_requant,
                inputs=(acc, *operands), outputs=(first,), **fields)
    ctx.emit(layer, conv, sdp)
    if to_float:  # FP16 in units of the step, times the step (a power of two: exact)
        oc = ctx.out.cubes[out] = make_cube(out, ctx.net.tensors[out].shape, HwPrecision.FP16)
        step = ctx.blob(f"{layer.name}.step", ctx.weight(np.array([ep.float_step or 1.0])), "operand")
        ctx.emit(layer, SdpOp(name=f"{layer.name}.tofloat", input=sdp_out, output=oc, source="memory",
                              scale="per_layer",
                              inputs=(first, step), outputs=(out,)))
    if clip:
        oc = ctx.ir_out(out)
        ctx.emit(layer, SdpOp(name=f"{layer.name}.clip", input=yc, output=oc, source="memory", activation="clip",
                              clip_max=float(ep.clip_q), inputs=(first,), outputs=(out,)))


def lower_pooling_int8(ctx: _Ctx, layer: Layer) -> None:
    int8.check_pool(layer)
    lower_pooling(ctx, layer)


INT8_LOWERERS: dict[LayerKind, Callable[[_Ctx, Layer], None]] = {
    LayerKind.CONVOLUTION: _conv_lowering(_emit_conv_int8),
    LayerKind.FULLY_CONNECTED: _fc_lowering(_emit_conv_int8),
    LayerKind.POOLING: lower_pooling_int8,
}


def _lower_int8_partition_layer(ctx: _Ctx, layer: Layer) -> None:
    """One layer of an INT8 partition in its mode (see the module doc and ``int8``)."""
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
        fn = INT8_LOWERERS.get(layer.kind)
        if fn is None:
            raise UnsupportedError(f"{layer.kind.value} in INT8: the DLA's INT8 lowering covers convolution, fully "
                                   f"connected and pooling (the INT8 builder's layers); run it in FP16")
        fn(ctx, layer)
        rep = FP16_REP if int8.has_float_output(layer, ctx.network) else int8.output_rep(layer)
    else:
        rep = FP16_REP if mode == "fp16" else ctx.move_rep(layer)
        ctx.hp = rep.precision
        mapped = [ctx.read(t, rep, layer) for t in layer.inputs]
        if mapped != list(layer.inputs):  # read converted copies (their names have no other readers)
            layer = copy.copy(layer)
            layer.inputs = mapped
        fn = LOWERERS.get(layer.kind)
        if fn is None:
            raise UnsupportedError(f"{layer.describe()}: no DLA lowering for {layer.kind.value}")
        fn(ctx, layer)
    for t in layer.outputs:
        if t in ctx.out.cubes:
            ctx.reps[t] = rep


LOWERERS: dict[LayerKind, Callable[[_Ctx, Layer], None]] = {
    LayerKind.CONVOLUTION: _conv_lowering(_emit_conv),
    LayerKind.FULLY_CONNECTED: _fc_lowering(_emit_conv),
    LayerKind.MATRIX_MULTIPLY: lower_matrix_multiply,
    LayerKind.DECONVOLUTION: lower_deconvolution,
    LayerKind.POOLING: lower_pooling,
    LayerKind.REDUCE: lower_reduce,
    LayerKind.ACTIVATION: lower_activation,
    LayerKind.PARAMETRIC_RELU: lower_parametric_relu,
    LayerKind.SCALE: lower_scale,
    LayerKind.ELEMENTWISE: lower_elementwise,
    LayerKind.UNARY: lower_unary,
    LayerKind.POINTWISE: lower_pointwise,
    LayerKind.LRN: lower_lrn,
    LayerKind.RESIZE: lower_resize,
    LayerKind.SOFTMAX: lower_softmax,
    LayerKind.CONCATENATION: lower_concatenation,
    LayerKind.SLICE: lower_slice,
    LayerKind.SPLIT: lower_split,
    LayerKind.SHUFFLE: lower_shuffle,
    LayerKind.IDENTITY: lower_identity,
    LayerKind.CONSTANT: lower_constant,
}


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
        fn = LOWERERS.get(layer.kind)
        if fn is None:
            raise UnsupportedError(f"{layer.describe()}: no DLA lowering for {layer.kind.value}")
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


__all__ = ["Assembly", "INT8_LOWERERS", "LOWERERS", "Lowered", "View", "broadcast_mode", "lower", "op_count_by_layer",
           "sdp_activation"]
