"""The lowering context: views, assemblies, the ``Lowered`` result, the per-partition ``_Ctx``
(cubes, blobs, op emission, INT8/FP16 representations) and the SDP activation helpers every family uses."""

from __future__ import annotations

from collections import ChainMap
from dataclasses import dataclass, field

import numpy as np

from dla_sim.config import DlaConfig
from dla_sim.ops import CubeDesc, HwOp, SdpOp
from dla_sim.ops import Precision as HwPrecision
from engine.ir.dtypes import Precision
from engine.ir.errors import UnsupportedError
from engine.ir.layers import (
    ActivationSpec,
    ActivationType,
    LayerKind,
)
from engine.ir.network import Layer, Network

from .. import int8
from ..cubes import hw_precision, make_cube
from ..int8 import FP16_REP, Rep

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


def _sdp(ctx: _Ctx, layer: Layer, x: str, out: str, operands: tuple[str, ...] = (), name: str | None = None,
         **fields) -> None:
    """One off-line SDP pass ``x -> out`` (a new cube for ``out`` unless it has one) with ``fields``."""
    xc = ctx.cube(x)
    yc = ctx.out.cubes.get(out) or ctx.new_cube(out, ctx.net.tensors[out].shape if out in ctx.net.tensors
                                               else xc.shape)
    name = name or (f"{layer.name}.sdp" if out in ctx.net.tensors else out)
    ctx.emit(layer, SdpOp(name=name, input=xc, output=yc,
                          source="memory", inputs=(x, *operands), outputs=(out,), **fields))


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
