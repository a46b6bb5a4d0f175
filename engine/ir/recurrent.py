"""Recurrent layers (ONNX RNN, LSTM and GRU): parameters, validation and shape inference.

One parameter record per kind, all sharing :class:`RecurrentParams`. The layout follows ONNX:

* inputs: ``X`` first, then the run-time tensors named by ``runtime_inputs`` (any of
  ``sequence_lens`` (int32/int64, one length per batch entry), ``initial_h`` and, for LSTM,
  ``initial_c``), in that order. A value known at build time is a weight of the same name instead.
* weights: ``W`` (dirs, G*H, I), ``R`` (dirs, G*H, H), optional ``B`` (dirs, 2*G*H) and, for LSTM,
  optional ``P`` (dirs, 3*H) peepholes; G is 1 (RNN), 3 (GRU, gates z r h) or 4 (LSTM, gates i o f c).
* outputs: ``Y`` (seq, dirs, batch, H), ``Y_h`` (dirs, batch, H) and, for LSTM, ``Y_c``; with
  ``layout`` 1 the batch axis comes first: X (batch, seq, I), Y (batch, seq, dirs, H), states
  (batch, dirs, H).

Activations are stored resolved: one name per function per direction (RNN 1, GRU 2, LSTM 3), each
with its alpha and beta, so a plan never depends on defaults. Entries past a batch entry's sequence
length are zero in ``Y``; its final state is the state after its last valid step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from engine.ir.dtypes import DataType
from engine.ir.errors import NetworkError
from engine.ir.layers import PARAMS_BY_KIND, LayerKind, LayerParams, TensorInfo

DIRECTIONS = ("forward", "reverse", "bidirectional")

# Activation names as ONNX spells them, with the (alpha, beta) used when the model gives none.
# These defaults are ONNX Runtime's (the reference the layers are checked against): LeakyRelu,
# HardSigmoid and Elu take their operators' defaults; the others default to 0.
ACTIVATION_DEFAULTS: dict[str, tuple[float, float]] = {
    "Relu": (0.0, 0.0), "Tanh": (0.0, 0.0), "Sigmoid": (0.0, 0.0), "Affine": (0.0, 0.0),
    "LeakyRelu": (0.01, 0.0), "ThresholdedRelu": (0.0, 0.0), "ScaledTanh": (0.0, 0.0),
    "HardSigmoid": (0.2, 0.5), "Elu": (1.0, 0.0), "Softsign": (0.0, 0.0), "Softplus": (0.0, 0.0),
}
# Which functions read alpha / beta (the model's alpha and beta lists are consumed in that order).
USES_ALPHA = frozenset({"Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh", "HardSigmoid", "Elu"})
USES_BETA = frozenset({"Affine", "ScaledTanh", "HardSigmoid"})

RUNTIME_INPUT_ORDER = ("sequence_lens", "initial_h", "initial_c")


def _fail(msg: str) -> None:
    raise NetworkError(msg)


def canonical_activation(name: str) -> str:
    """The ONNX spelling of an activation name given in any case; NetworkError when unknown."""
    for known in ACTIVATION_DEFAULTS:
        if known.lower() == str(name).lower():
            return known
    _fail(f"recurrent activation '{name}' is not supported (known: {', '.join(ACTIVATION_DEFAULTS)})")
    return ""


@dataclass(frozen=True)
class RecurrentParams(LayerParams):
    """Shared fields of RNN, LSTM and GRU (see the module docstring for the tensor layout)."""

    max_inputs: ClassVar[int] = 4
    gates: ClassVar[int] = 1
    functions: ClassVar[int] = 1  # activation functions per direction
    default_activations: ClassVar[tuple[str, ...]] = ("Tanh",)
    state_outputs: ClassVar[int] = 1  # Y_h (and Y_c for LSTM)

    hidden_size: int
    direction: str = "forward"
    activations: tuple[str, ...] = ()
    activation_alpha: tuple[float, ...] = ()
    activation_beta: tuple[float, ...] = ()
    clip: float | None = None
    layout: int = 0
    runtime_inputs: tuple[str, ...] = ()
    linear_before_reset: bool = False  # GRU only
    input_forget: bool = False  # LSTM only

    @property
    def num_directions(self) -> int:
        return 2 if self.direction == "bidirectional" else 1

    def resolved_activations(self) -> tuple[tuple[str, float, float], ...]:
        """(name, alpha, beta) per function per direction."""
        return tuple(zip(self.activations, self.activation_alpha, self.activation_beta))

    def _check_params(self) -> None:
        if not isinstance(self.hidden_size, (int, np.integer)) or self.hidden_size < 1:
            _fail(f"hidden_size must be a positive integer, got {self.hidden_size!r}")
        if self.direction not in DIRECTIONS:
            _fail(f"direction '{self.direction}' is not one of {', '.join(DIRECTIONS)}")
        if self.layout not in (0, 1):
            _fail(f"layout must be 0 or 1, got {self.layout}")
        n = self.functions * self.num_directions
        if not (len(self.activations) == len(self.activation_alpha) == len(self.activation_beta) == n):
            _fail(f"{self.kind.value} {self.direction} needs {n} resolved activations with alpha and beta, got "
                  f"{len(self.activations)}/{len(self.activation_alpha)}/{len(self.activation_beta)}")
        for a in self.activations:
            if a not in ACTIVATION_DEFAULTS:
                _fail(f"recurrent activation '{a}' is not supported (known: {', '.join(ACTIVATION_DEFAULTS)})")
        if self.clip is not None and not self.clip > 0:
            _fail(f"clip must be > 0, got {self.clip}")
        if self.linear_before_reset and self.kind is not LayerKind.GRU:
            _fail("linear_before_reset applies to GRU only")
        if self.input_forget and self.kind is not LayerKind.LSTM:
            _fail("input_forget applies to LSTM only")
        allowed = RUNTIME_INPUT_ORDER if self.kind is LayerKind.LSTM else RUNTIME_INPUT_ORDER[:2]
        if list(self.runtime_inputs) != [r for r in allowed if r in self.runtime_inputs]:
            _fail(f"runtime_inputs {self.runtime_inputs} must be an ordered subset of {allowed}")

    def infer(self, inputs: list[TensorInfo], weights: dict[str, np.ndarray]) -> list[TensorInfo]:
        self._check_params()
        x = inputs[0]
        if not x.dtype.is_float:
            _fail(f"{self.kind.value} input X must be a float tensor, got {x.dtype.value}")
        if x.rank != 3:
            _fail(f"{self.kind.value} input X must be 3-D, got shape {x.shape}")
        if len(inputs) != 1 + len(self.runtime_inputs):
            _fail(f"{self.kind.value} takes X plus {list(self.runtime_inputs)} as inputs, got {len(inputs)} inputs")
        seq, batch = (x.shape[0], x.shape[1]) if self.layout == 0 else (x.shape[1], x.shape[0])
        d, h, g, i = self.num_directions, self.hidden_size, self.gates, x.shape[2]
        self._check_weights(weights, d, g, h, i)
        state = (d, batch, h) if self.layout == 0 else (batch, d, h)
        given = dict(zip(self.runtime_inputs, inputs[1:]))
        for name in RUNTIME_INPUT_ORDER:
            info = given.get(name)
            w = weights.get(name)
            if info is not None and w is not None:
                _fail(f"'{name}' is both an input and a weight")
            shape = info.shape if info is not None else (None if w is None else tuple(w.shape))
            if shape is None:
                continue
            if name == "initial_c" and self.kind is not LayerKind.LSTM:
                _fail("initial_c applies to LSTM only")
            if name == "sequence_lens":
                self._check_lengths(info, w, batch, seq)
            elif shape != state:
                _fail(f"{name} shape {shape} != {state}")
            elif info is not None and info.dtype != x.dtype:
                _fail(f"{name} dtype {info.dtype.value} != X dtype {x.dtype.value}")
        y = (seq, d, batch, h) if self.layout == 0 else (batch, seq, d, h)
        return [TensorInfo(y, x.dtype)] + [TensorInfo(state, x.dtype)] * self.state_outputs

    def _check_weights(self, weights: dict[str, np.ndarray], d: int, g: int, h: int, i: int) -> None:
        want = {"W": (d, g * h, i), "R": (d, g * h, h), "B": (d, 2 * g * h)}
        if self.kind is LayerKind.LSTM:
            want["P"] = (d, 3 * h)
        for name, shape in want.items():
            w = weights.get(name)
            if w is None:
                if name in ("W", "R"):
                    _fail(f"missing weights '{name}'")
                continue
            if w.dtype.kind != "f":
                _fail(f"weights '{name}' must be float, got {w.dtype}")
            if tuple(w.shape) != shape:
                _fail(f"weights '{name}' shape {tuple(w.shape)} != {shape}")
        extra = set(weights) - set(want) - set(RUNTIME_INPUT_ORDER)
        if extra:
            _fail(f"unknown weights {sorted(extra)}")

    @staticmethod
    def _check_lengths(info: TensorInfo | None, w: np.ndarray | None, batch: int, seq: int) -> None:
        shape = info.shape if info is not None else tuple(w.shape)
        if shape != (batch,):
            _fail(f"sequence_lens shape {shape} != ({batch},)")
        if info is not None and info.dtype not in (DataType.INT32, DataType.INT64):
            _fail(f"sequence_lens must be int32 or int64, got {info.dtype.value}")
        if w is not None:
            if w.dtype.kind not in "iu":
                _fail(f"sequence_lens must be integers, got {w.dtype}")
            if w.size and (w.min() < 1 or w.max() > seq):
                _fail(f"sequence_lens {w.tolist()} must lie in [1, {seq}]")


@dataclass(frozen=True)
class RNNParams(RecurrentParams):
    """Ht = f(Xt*W^T + Ht-1*R^T + Wb + Rb)."""

    kind: ClassVar[LayerKind] = LayerKind.RNN


@dataclass(frozen=True)
class GRUParams(RecurrentParams):
    """Gates z, r (function f) and candidate h (function g); ``linear_before_reset`` as in ONNX."""

    kind: ClassVar[LayerKind] = LayerKind.GRU
    gates: ClassVar[int] = 3
    functions: ClassVar[int] = 2
    default_activations: ClassVar[tuple[str, ...]] = ("Sigmoid", "Tanh")


@dataclass(frozen=True)
class LSTMParams(RecurrentParams):
    """Gates i, o, f (function f), cell candidate (g) and output (h); optional peepholes P."""

    kind: ClassVar[LayerKind] = LayerKind.LSTM
    max_inputs: ClassVar[int] = 4
    gates: ClassVar[int] = 4
    functions: ClassVar[int] = 3
    default_activations: ClassVar[tuple[str, ...]] = ("Sigmoid", "Tanh", "Tanh")
    state_outputs: ClassVar[int] = 2


RECURRENT_PARAMS: tuple[type[RecurrentParams], ...] = (RNNParams, GRUParams, LSTMParams)
PARAMS_BY_KIND.update({cls.kind: cls for cls in RECURRENT_PARAMS})
PARAMS_BY_NAME: dict[str, type[RecurrentParams]] = {"RNN": RNNParams, "GRU": GRUParams, "LSTM": LSTMParams}


def resolve_activations(cls: type[RecurrentParams], direction: str, names: list[str] | None = None,
                        alpha: list[float] | None = None, beta: list[float] | None = None
                        ) -> tuple[tuple[str, ...], tuple[float, ...], tuple[float, ...]]:
    """Fill in ONNX defaults: the activation names per direction and each one's alpha and beta.

    ``alpha``/``beta`` are consumed in order by the functions that read them (ONNX Runtime's rule).
    """
    dirs = 2 if direction == "bidirectional" else 1
    if not names:
        names = list(cls.default_activations) * dirs
    names = [canonical_activation(n) for n in names]
    if len(names) != cls.functions * dirs:
        _fail(f"{cls.kind.value} {direction} takes {cls.functions * dirs} activations, got {len(names)}")
    alphas, betas = list(alpha or []), list(beta or [])
    out_a, out_b = [], []
    for n in names:
        a, b = ACTIVATION_DEFAULTS[n]
        if n in USES_ALPHA and alphas:
            a = float(alphas.pop(0))
        if n in USES_BETA and betas:
            b = float(betas.pop(0))
        out_a.append(a)
        out_b.append(b)
    if alphas or betas:
        _fail(f"activation_alpha/activation_beta give more values than the activations {names} read")
    return tuple(names), tuple(out_a), tuple(out_b)


def make_params(kind: str, hidden_size: int, direction: str = "forward", activations: list[str] | None = None,
                activation_alpha: list[float] | None = None, activation_beta: list[float] | None = None,
                **fields) -> RecurrentParams:
    """A parameter record for ``kind`` ('RNN', 'LSTM' or 'GRU') with the activations resolved."""
    cls = PARAMS_BY_NAME.get(str(kind).upper())
    if cls is None:
        _fail(f"recurrent kind '{kind}' is not one of RNN, LSTM, GRU")
    if direction not in DIRECTIONS:
        _fail(f"direction '{direction}' is not one of {', '.join(DIRECTIONS)}")
    names, alpha, beta = resolve_activations(cls, direction, activations, activation_alpha, activation_beta)
    return cls(hidden_size=int(hidden_size), direction=direction, activations=names, activation_alpha=alpha,
               activation_beta=beta, **fields)


__all__ = ["ACTIVATION_DEFAULTS", "DIRECTIONS", "GRUParams", "LSTMParams", "RECURRENT_PARAMS", "RNNParams",
           "RecurrentParams", "make_params", "resolve_activations"]


def add_recurrent(network, kind: str, x, W: np.ndarray, R: np.ndarray, B: np.ndarray | None = None, *,
                  P: np.ndarray | None = None, sequence_lens=None, initial_h=None, initial_c=None,
                  hidden_size: int | None = None, direction: str = "forward", activations: list[str] | None = None,
                  activation_alpha: list[float] | None = None, activation_beta: list[float] | None = None,
                  clip: float | None = None, layout: int = 0, linear_before_reset: bool = False,
                  input_forget: bool = False, name: str | None = None) -> list:
    """Add an RNN/LSTM/GRU layer to ``network``; returns the output tensors (Y, Y_h[, Y_c]).

    ``sequence_lens``, ``initial_h`` and ``initial_c`` are numpy arrays (weights) or network tensors
    (inputs of the layer). Arrays follow the ONNX shapes of the module docstring.
    """
    weights = {"W": W, "R": R}
    for key, value in (("B", B), ("P", P)):
        if value is not None:
            weights[key] = value
    inputs, runtime = [x], []
    for key, value in (("sequence_lens", sequence_lens), ("initial_h", initial_h), ("initial_c", initial_c)):
        if value is None:
            continue
        if isinstance(value, np.ndarray):
            weights[key] = value
        else:
            inputs.append(value)
            runtime.append(key)
    if hidden_size is None:
        hidden_size = int(np.shape(R)[-1])
    fields = {"clip": clip, "layout": layout, "runtime_inputs": tuple(runtime)}
    if linear_before_reset:
        fields["linear_before_reset"] = True
    if input_forget:
        fields["input_forget"] = True
    params = make_params(kind, hidden_size, direction, activations, activation_alpha, activation_beta, **fields)
    layer = network.add_layer(params, inputs, weights, name=name)
    return [network.tensor(t) for t in layer.outputs]
