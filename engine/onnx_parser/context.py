"""Parse state: what each ONNX tensor stands for, layer naming, and build-time constant folding.

Every ONNX tensor name maps to a ``Ref``: either a value known at build time (initializers,
Constant nodes, shapes of static tensors and anything computed only from those) or a tensor of
the network under construction. Converters work on ``Ref``s through a ``NodeContext`` and never
decide themselves whether to fold: ``NodeContext.add`` evaluates a layer with the reference
kernels when all its inputs are known, and adds it to the network otherwise. That single rule is
what folds PyTorch's Shape→Gather→Unsqueeze→Concat→Reshape chains and ConstantOfShape weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from engine.ir.dtypes import DataType
from engine.ir.errors import NetworkError, ParserError, UnsupportedError
from engine.ir.layers import ConstantParams, LayerParams, TensorInfo
from engine.ir.network import Layer, Network


class NonConstantError(ParserError):
    """A parameter input (Reshape shape, Pad pads, …) is not known at build time.

    ``tensor`` names the ONNX tensor; ``graph_input`` is true when that tensor is a graph input,
    so a caller may bind its value at build time (as TensorRT binds shape-tensor inputs).
    """

    def __init__(self, message: str, tensor: str, graph_input: bool) -> None:
        super().__init__(message)
        self.tensor = tensor
        self.graph_input = graph_input


@dataclass(frozen=True)
class Ref:
    """One value: a build-time constant (``const``) or a network tensor (``tensor``)."""

    const: np.ndarray | None = None
    tensor: str | None = None

    @property
    def is_const(self) -> bool:
        return self.const is not None


def contiguous(a: np.ndarray) -> np.ndarray:
    """A C-contiguous array of the same shape (``np.ascontiguousarray`` turns 0-d into 1-d)."""
    a = np.asarray(a)
    return a if a.flags.c_contiguous else np.array(a, order="C")


def numpy_dtype_of(elem_type: int) -> np.dtype | None:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        return None


def elem_type_name(elem_type: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return str(elem_type)


def hetrt_dtype(dtype: np.dtype) -> DataType | None:
    try:
        return DataType.from_numpy(dtype)
    except ValueError:
        return None


class ParseContext:
    """The network being built and the ONNX-name → ``Ref`` map."""

    def __init__(self, network: Network, opset: int, graph_inputs: set[str], reserved: set[str]) -> None:
        self.network = network
        self.opset = opset
        self.source_opset = opset  # the model's own opset before any version conversion
        self.values: dict[str, Ref] = {}
        self.graph_inputs = graph_inputs  # names of runtime graph inputs
        self.producers: dict[str, str] = {}  # ONNX tensor → node name that produces it
        self.consumed: set[str] = set()  # ONNX tensors read by a node or a graph output
        self._reserved = set(reserved)  # every ONNX tensor name: intermediate names avoid them
        self.opsets: dict[str, int] = {"": opset}  # domain → opset version (default domain: "")
        self.functions: list[onnx.FunctionProto] = []  # model-local functions, for folding
        self.model: onnx.ModelProto | None = None  # the model being parsed (for shape inference)
        self.unresolved: dict[str, str] = {}  # ONNX tensor → unsupported node it depends on
        self.inferred_cache: dict[str, tuple[int, ...]] | None = None  # onnx shape inference, once
        self._materialized: dict[int, str] = {}  # id(const array) → Constant layer tensor
        self._keep: list[np.ndarray] = []  # keeps materialized arrays alive so ids stay unique

    # ------------------------------------------------------------------ names

    def fresh_tensor_name(self, base: str) -> str:
        name, i = base, 0
        while name in self._reserved or name in self.network.tensors:
            i += 1
            name = f"{base}_{i}"
        self._reserved.add(name)
        return name

    def fresh_layer_name(self, base: str) -> str:
        used = {layer.name for layer in self.network.layers}
        name, i = base, 0
        while name in used:
            i += 1
            name = f"{base}_{i}"
        return name

    # ------------------------------------------------------------------ values

    def info(self, ref: Ref) -> TensorInfo | None:
        """Shape and hetrt dtype of a ref (None dtype for constants hetrt cannot hold)."""
        if ref.is_const:
            dt = hetrt_dtype(ref.const.dtype)
            return TensorInfo(tuple(ref.const.shape), dt) if dt is not None else None
        return self.network.tensors[ref.tensor].info

    def shape(self, ref: Ref) -> tuple[int, ...]:
        if ref.is_const:
            return tuple(int(d) for d in ref.const.shape)
        return self.network.tensors[ref.tensor].shape

    def np_dtype(self, ref: Ref) -> np.dtype:
        if ref.is_const:
            return ref.const.dtype
        return self.network.tensors[ref.tensor].dtype.numpy

    def materialize(self, ref: Ref, name_hint: str, origin: str, exact: bool = False) -> str:
        """The network tensor holding ``ref``; constants become Constant layers (once each).

        ``exact`` names the tensor ``name_hint`` itself (a graph output keeps its ONNX name).
        """
        if not ref.is_const:
            return ref.tensor
        key = id(ref.const)
        if key in self._materialized and not exact:
            return self._materialized[key]
        if hetrt_dtype(ref.const.dtype) is None:
            raise UnsupportedError(f"constant '{name_hint}' (used by node '{origin}') has element type "
                                   f"{ref.const.dtype}, which hetrt tensors cannot hold")
        out = name_hint if exact and name_hint not in self.network.tensors else self.fresh_tensor_name(name_hint)
        layer_name = self.fresh_layer_name(f"{name_hint}/const")
        self.network.add_layer(ConstantParams(), [], {"value": contiguous(ref.const)},
                               name=layer_name, output_names=[out], origin=[origin])
        self._materialized[key] = out
        self._keep.append(ref.const)
        return out


def fold_layer(params: LayerParams, arrays: Sequence[np.ndarray], weights: dict[str, np.ndarray],
               name: str) -> list[np.ndarray]:
    """Evaluate one layer on known inputs with the reference kernels (build-time folding)."""
    infos = []
    for a in arrays:
        dt = hetrt_dtype(a.dtype)
        if dt is None:
            raise UnsupportedError(f"cannot fold a {params.kind.value} layer over element type {a.dtype}")
        infos.append(TensorInfo(tuple(a.shape), dt))
    out_infos = params.infer(infos, weights)
    from backends.reference.kernels import run_layer  # deferred: the parser only needs it to fold

    layer = Layer(name, params, [f"in{i}" for i in range(len(arrays))],
                  [f"out{i}" for i in range(len(out_infos))], dict(weights), origin=[name])
    outs = run_layer(layer, [np.asarray(a) for a in arrays])
    result = []
    for o, info in zip(outs, out_infos):
        o = np.asarray(o)
        if o.dtype != info.dtype.numpy:
            o = o.astype(info.dtype.numpy)
        result.append(o.reshape(info.shape))
    return result


class NodeContext:
    """A converter's view of one ONNX node: inputs as refs, attributes, layer creation, errors."""

    def __init__(self, ctx: ParseContext, node: onnx.NodeProto, name: str) -> None:
        self.ctx = ctx
        self.node = node
        self.name = name
        self.op = node.op_type
        self.opset = ctx.opset
        self.attrs: dict[str, Any] = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        self._layer_count = 0

    # ------------------------------------------------------------------ errors

    @property
    def where(self) -> str:
        return f"node '{self.name}' (op {self.op}, opset {self.opset})"

    def error(self, message: str) -> ParserError:
        return ParserError(f"{self.where}: {message}")

    def unsupported(self, message: str) -> UnsupportedError:
        return UnsupportedError(f"{self.where}: {message}")

    # ------------------------------------------------------------------ attributes

    def attr(self, key: str, default: Any = None) -> Any:
        v = self.attrs.get(key, default)
        if isinstance(v, bytes):
            return v.decode()
        if isinstance(v, onnx.TensorProto):
            return numpy_helper.to_array(v)
        return v

    def ints(self, key: str, default: Sequence[int] | None = None) -> tuple[int, ...] | None:
        v = self.attrs.get(key)
        if v is None:
            return None if default is None else tuple(default)
        return tuple(int(x) for x in v)

    # ------------------------------------------------------------------ inputs

    @property
    def num_inputs(self) -> int:
        return len(self.node.input)

    def has_input(self, i: int) -> bool:
        return i < len(self.node.input) and self.node.input[i] != ""

    def input_name(self, i: int) -> str:
        return self.node.input[i]

    def input(self, i: int) -> Ref:
        if not self.has_input(i):
            raise self.error(f"input {i} is required but missing")
        return self.ctx.values[self.node.input[i]]

    def inputs(self) -> list[Ref]:
        return [self.input(i) for i in range(self.num_inputs) if self.has_input(i)]

    def is_const(self, i: int) -> bool:
        return self.has_input(i) and self.input(i).is_const

    def const(self, i: int, what: str) -> np.ndarray:
        """Input ``i`` as a build-time value; a clear error when it is only known at run time."""
        ref = self.input(i)
        if ref.is_const:
            return ref.const
        tname = self.node.input[i]
        if tname in self.ctx.graph_inputs:
            why = "it is a graph input with no initializer"
        else:
            why = f"it is computed at run time by node '{self.ctx.producers.get(tname, '?')}'"
        raise NonConstantError(f"{self.where}: input {i} '{tname}' ({what}) must be known at build time "
                               f"(an initializer or a constant expression); {why}", tname,
                               tname in self.ctx.graph_inputs)

    def const_or(self, i: int, what: str, default: np.ndarray | None) -> np.ndarray | None:
        return self.const(i, what) if self.has_input(i) else default

    def shape(self, i: int | Ref) -> tuple[int, ...]:
        return self.ctx.shape(self.input(i) if isinstance(i, int) else i)

    def rank(self, i: int | Ref) -> int:
        return len(self.shape(i))

    def np_dtype(self, i: int | Ref) -> np.dtype:
        return self.ctx.np_dtype(self.input(i) if isinstance(i, int) else i)

    def output_used(self, i: int) -> bool:
        """Whether output ``i`` exists and something reads it (a node or a graph output)."""
        return i < len(self.node.output) and self.node.output[i] in self.ctx.consumed

    # ------------------------------------------------------------------ layers

    def add(self, params: LayerParams, inputs: Sequence[Ref], weights: dict[str, np.ndarray] | None = None,
            final: bool = True) -> list[Ref]:
        """Add a layer for this node, or fold it when every input is known.

        ``final`` layers produce the node's ONNX outputs (named as in the model); others produce
        intermediate tensors with derived names.
        """
        weights = {k: contiguous(v) for k, v in (weights or {}).items()}
        self._layer_count += 1
        if inputs and all(r.is_const for r in inputs):
            try:
                arrays = fold_layer(params, [r.const for r in inputs], weights, self.name)
            except (NetworkError, ValueError) as e:
                raise self.error(f"cannot evaluate at build time: {e}") from None
            return [Ref(const=a) for a in arrays]
        names = [self.ctx.materialize(r, f"{self.name}/input{k}", self.name) for k, r in enumerate(inputs)]
        layer_name = self.ctx.fresh_layer_name(self.name if final else f"{self.name}/{params.kind.value}")
        try:
            infos = params.infer([self.ctx.network.tensors[n].info for n in names], weights)
        except NetworkError as e:
            raise self.error(str(e)) from None
        if final and len(self.node.output) >= len(infos):
            outs = [o if o and o not in self.ctx.network.tensors else self.ctx.fresh_tensor_name(f"{self.name}:{k}")
                    for k, o in enumerate(self.node.output[:len(infos)])]
        else:
            outs = [self.ctx.fresh_tensor_name(layer_name if len(infos) == 1 else f"{layer_name}:{k}")
                    for k in range(len(infos))]
        try:
            layer = self.ctx.network.add_layer(params, names, weights, name=layer_name, output_names=outs,
                                               origin=[self.node.name or self.name])
        except NetworkError as e:
            raise self.error(str(e)) from None
        return [Ref(tensor=t) for t in layer.outputs]

    def add1(self, params: LayerParams, inputs: Sequence[Ref], weights: dict[str, np.ndarray] | None = None,
             final: bool = True) -> Ref:
        return self.add(params, inputs, weights, final)[0]
