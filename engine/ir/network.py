"""The network definition: named tensors and typed layers in topological order.

In the spirit of TensorRT's INetworkDefinition: tensors carry a static shape and dtype, layers are
validated and their outputs shape-inferred when they are added, and outputs are marked explicitly.
Optimizer passes rewrite a network through the small set of mutators at the bottom.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.ir.dtypes import DataType, Precision
from engine.ir.errors import NetworkError
from engine.ir.layers import (
    ActivationParams,
    ActivationSpec,
    ActivationType,
    ConstantParams,
    ConvolutionParams,
    ElementWiseOp,
    ElementWiseParams,
    LayerKind,
    LayerParams,
    PoolingParams,
    PoolingType,
    TensorInfo,
)


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: DataType

    @property
    def info(self) -> TensorInfo:
        return TensorInfo(self.shape, self.dtype)

    @property
    def nbytes(self) -> int:
        return self.info.nbytes


@dataclass
class Layer:
    """One layer: parameters, input/output tensor names and its weights.

    ``precision`` pins the compute precision (None: the builder's choice); ``device`` pins the
    device ("gpu" or "dla"); ``origin`` names the source nodes/layers this layer stands for, so
    fusions can be reported and traced back to the model.
    """

    name: str
    params: LayerParams
    inputs: list[str]
    outputs: list[str]
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    precision: Precision | None = None
    device: str | None = None
    origin: list[str] = field(default_factory=list)

    @property
    def kind(self) -> LayerKind:
        return self.params.kind

    def describe(self) -> str:
        return f"{self.name} ({self.kind.value})"


class Network:
    """A static-shape DAG of layers. Layers are kept in a valid execution order."""

    def __init__(self, name: str = "network") -> None:
        self.name = name
        self.tensors: dict[str, Tensor] = {}
        self.layers: list[Layer] = []
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self._next_id = 0  # suffix for generated names

    # ----------------------------------------------------------------------- construction

    def add_input(self, name: str, shape: Sequence[int], dtype: DataType = DataType.FLOAT) -> Tensor:
        if name in self.tensors:
            raise NetworkError(f"tensor name '{name}' is already used")
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise NetworkError(f"input '{name}' has a negative dimension {shape}")
        t = Tensor(name, shape, DataType(dtype))
        self.tensors[name] = t
        self.inputs.append(name)
        return t

    def add_layer(self, params: LayerParams, inputs: Sequence[Tensor | str],
                  weights: dict[str, np.ndarray] | None = None, name: str | None = None,
                  output_names: Sequence[str] | None = None, origin: Iterable[str] = ()) -> Layer:
        """Validate ``params`` against the inputs, infer outputs and append the layer."""
        name = name or self.unique_name(params.kind.value)
        if any(layer.name == name for layer in self.layers):
            raise NetworkError(f"layer name '{name}' is already used")
        in_names = [t.name if isinstance(t, Tensor) else str(t) for t in inputs]
        for t in in_names:
            if t not in self.tensors:
                raise NetworkError(f"layer '{name}' ({params.kind.value}): input tensor '{t}' is not defined")
        if not params.min_inputs <= len(in_names) <= params.max_inputs:
            raise NetworkError(f"layer '{name}' ({params.kind.value}) takes {params.min_inputs}.."
                               f"{params.max_inputs} inputs, got {len(in_names)}")
        weights = dict(weights or {})
        for key, w in weights.items():
            if not isinstance(w, np.ndarray):
                raise NetworkError(f"layer '{name}': weights '{key}' must be a numpy array")
        infos = self._infer(name, params, in_names, weights)
        if output_names is None:
            output_names = [name if len(infos) == 1 else f"{name}:{i}" for i in range(len(infos))]
            output_names = [o if o not in self.tensors else self.unique_name(o) for o in output_names]
        if len(output_names) != len(infos):
            raise NetworkError(f"layer '{name}' produces {len(infos)} outputs, {len(output_names)} names given")
        for o in output_names:
            if o in self.tensors:
                raise NetworkError(f"layer '{name}': output tensor name '{o}' is already used")
        for o, info in zip(output_names, infos):
            self.tensors[o] = Tensor(o, info.shape, info.dtype)
        layer = Layer(name, params, in_names, list(output_names), weights, origin=list(origin) or [name])
        self.layers.append(layer)
        return layer

    def _infer(self, name: str, params: LayerParams, in_names: list[str],
               weights: dict[str, np.ndarray]) -> list[TensorInfo]:
        try:
            return params.infer([self.tensors[t].info for t in in_names], weights)
        except NetworkError as e:
            raise NetworkError(f"layer '{name}' ({params.kind.value}): {e}") from None

    def mark_output(self, tensor: Tensor | str) -> None:
        name = tensor.name if isinstance(tensor, Tensor) else tensor
        if name not in self.tensors:
            raise NetworkError(f"cannot mark '{name}' as output: no such tensor")
        if name not in self.outputs:
            self.outputs.append(name)

    def unique_name(self, base: str) -> str:
        used = {layer.name for layer in self.layers} | set(self.tensors)
        while True:
            candidate = f"{base}_{self._next_id}"
            self._next_id += 1
            if candidate not in used:
                return candidate

    # Convenience builders for the common layers (the generic ``add_layer`` covers all kinds).

    def add_constant(self, value: np.ndarray, name: str | None = None) -> Tensor:
        # np.array keeps 0-d values 0-d (np.ascontiguousarray would make them shape (1,))
        layer = self.add_layer(ConstantParams(), [], {"value": np.array(value, order="C")}, name=name)
        return self.tensor(layer.outputs[0])

    def add_convolution(self, x: Tensor | str, kernel: np.ndarray, bias: np.ndarray | None = None,
                        stride: Sequence[int] | None = None, padding: Sequence[int] | None = None,
                        dilation: Sequence[int] | None = None, groups: int = 1, name: str | None = None) -> Tensor:
        """Convolution with symmetric ``padding`` (use ``add_layer`` for asymmetric padding)."""
        sp = kernel.ndim - 2
        pad = tuple(padding or (0,) * sp)
        params = ConvolutionParams(num_output_maps=kernel.shape[0], kernel=tuple(kernel.shape[2:]),
                                   stride=tuple(stride or (1,) * sp), pre_padding=pad, post_padding=pad,
                                   dilation=tuple(dilation or (1,) * sp), groups=groups)
        weights = {"kernel": kernel} if bias is None else {"kernel": kernel, "bias": bias}
        return self.tensor(self.add_layer(params, [x], weights, name=name).outputs[0])

    def add_activation(self, x: Tensor | str, type: ActivationType | str, alpha: float = 0.0, beta: float = 0.0,
                       name: str | None = None) -> Tensor:
        params = ActivationParams(ActivationSpec(ActivationType(type), alpha, beta))
        return self.tensor(self.add_layer(params, [x], name=name).outputs[0])

    def add_elementwise(self, a: Tensor | str, b: Tensor | str, op: ElementWiseOp | str,
                        name: str | None = None) -> Tensor:
        return self.tensor(self.add_layer(ElementWiseParams(ElementWiseOp(op)), [a, b], name=name).outputs[0])

    def add_pooling(self, x: Tensor | str, type: PoolingType | str, window: Sequence[int],
                    stride: Sequence[int] | None = None, padding: Sequence[int] | None = None,
                    name: str | None = None) -> Tensor:
        pad = tuple(padding or (0,) * len(window))
        params = PoolingParams(PoolingType(type), window=tuple(window), stride=tuple(stride or window),
                               pre_padding=pad, post_padding=pad)
        return self.tensor(self.add_layer(params, [x], name=name).outputs[0])

    def add_recurrent(self, kind: str, x: Tensor | str, W: np.ndarray, R: np.ndarray, B: np.ndarray | None = None,
                      **options) -> list[Tensor]:
        """An ONNX-style RNN/LSTM/GRU layer (``kind``); see ``engine.ir.recurrent.add_recurrent``."""
        from engine.ir.recurrent import add_recurrent

        return add_recurrent(self, kind, x, W, R, B, **options)

    # ----------------------------------------------------------------------- queries

    def tensor(self, name: str) -> Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise NetworkError(f"no tensor named '{name}'") from None

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise NetworkError(f"no layer named '{name}'")

    def producer(self, tensor: str) -> Layer | None:
        for layer in self.layers:
            if tensor in layer.outputs:
                return layer
        return None

    def producers(self) -> dict[str, Layer]:
        return {t: layer for layer in self.layers for t in layer.outputs}

    def consumers(self) -> dict[str, list[Layer]]:
        out: dict[str, list[Layer]] = {t: [] for t in self.tensors}
        for layer in self.layers:
            for t in dict.fromkeys(layer.inputs):
                out.setdefault(t, []).append(layer)
        return out

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def count(self, kind: LayerKind) -> int:
        return sum(1 for layer in self.layers if layer.kind is kind)

    # ----------------------------------------------------------------------- validation

    def validate(self) -> None:
        """Check the DAG: every input defined before use, single producers, outputs reachable."""
        if not self.outputs:
            raise NetworkError(f"network '{self.name}' has no marked outputs")
        defined = set(self.inputs)
        for layer in self.layers:
            for t in layer.inputs:
                if t not in defined:
                    raise NetworkError(f"layer '{layer.name}' uses tensor '{t}' before it is produced")
            for t in layer.outputs:
                if t in defined:
                    raise NetworkError(f"tensor '{t}' is produced twice (again by '{layer.name}')")
                defined.add(t)
            infos = self._infer(layer.name, layer.params, layer.inputs, layer.weights)
            for t, info in zip(layer.outputs, infos):
                if self.tensors[t].info != info:
                    raise NetworkError(f"layer '{layer.name}': output '{t}' is {self.tensors[t].info}, "
                                       f"parameters give {info}")
        for t in self.outputs:
            if t not in defined:
                raise NetworkError(f"output '{t}' is never produced")

    # ----------------------------------------------------------------------- rewriting (optimizer)

    def copy(self) -> Network:
        """A deep copy of the structure; weight arrays are shared (passes replace, never mutate)."""
        other = Network(self.name)
        other.tensors = {k: copy.copy(v) for k, v in self.tensors.items()}
        other.layers = [Layer(la.name, la.params, list(la.inputs), list(la.outputs), dict(la.weights),
                              la.precision, la.device, list(la.origin)) for la in self.layers]
        other.inputs = list(self.inputs)
        other.outputs = list(self.outputs)
        other._next_id = self._next_id
        return other

    def remove_layer(self, layer: Layer) -> None:
        self.layers.remove(layer)
        for t in layer.outputs:
            if t not in self.outputs and not any(t in la.inputs for la in self.layers):
                self.tensors.pop(t, None)

    def replace_uses(self, old: str, new: str) -> None:
        """Make every consumer (and the output list) read ``new`` instead of ``old``."""
        for layer in self.layers:
            layer.inputs = [new if t == old else t for t in layer.inputs]
        self.outputs = [new if t == old else t for t in self.outputs]

    def replace_layer(self, old: Layer | Sequence[Layer], new: Layer) -> None:
        """Put ``new`` where the last of ``old`` stood (keeps topological order) and drop ``old``."""
        olds = [old] if isinstance(old, Layer) else list(old)
        idx = max(self.layers.index(o) for o in olds)
        self.layers[idx] = new
        for o in olds:
            if o is not new and o in self.layers:
                self.layers.remove(o)
        self.refresh_tensor(new)
        self.prune_tensors()

    def refresh_tensor(self, layer: Layer) -> None:
        """Re-infer ``layer``'s outputs and (re)register their tensors."""
        infos = self._infer(layer.name, layer.params, layer.inputs, layer.weights)
        for t, info in zip(layer.outputs, infos):
            self.tensors[t] = Tensor(t, info.shape, info.dtype)

    def prune_tensors(self) -> None:
        """Forget tensors that no layer produces or reads and that are not network I/O."""
        live = set(self.inputs) | set(self.outputs)
        for layer in self.layers:
            live.update(layer.inputs)
            live.update(layer.outputs)
        for t in list(self.tensors):
            if t not in live:
                del self.tensors[t]

    def sort(self) -> None:
        """Re-establish a topological order (stable: keeps the existing order where possible)."""
        produced_by = self.producers()
        order: list[Layer] = []
        state: dict[str, int] = {}

        def visit(layer: Layer) -> None:
            mark = state.get(layer.name, 0)
            if mark == 2:
                return
            if mark == 1:
                raise NetworkError(f"network has a cycle through layer '{layer.name}'")
            state[layer.name] = 1
            for t in layer.inputs:
                if t in produced_by:
                    visit(produced_by[t])
            state[layer.name] = 2
            order.append(layer)

        for layer in self.layers:
            visit(layer)
        self.layers = order

    def summary(self) -> str:
        lines = [f"Network '{self.name}': {len(self.layers)} layers, inputs {self.inputs}, outputs {self.outputs}"]
        for layer in self.layers:
            shapes = ", ".join(f"{t}{list(self.tensors[t].shape)}" for t in layer.outputs)
            lines.append(f"  {layer.name:40s} {layer.kind.value:16s} -> {shapes}")
        return "\n".join(lines)
