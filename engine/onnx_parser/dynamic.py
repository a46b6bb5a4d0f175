"""Dynamic input dims of an ONNX model, checked against optimization profiles and traced through the network.

The parser folds shapes, so one parsed network is specialised to one set of input shapes. This
module says what a profile changes: ``check_profile`` compares a profile with the dims the model
declares (-1 / named dims must have a range, fixed dims must not change, inputs sharing a named
dim must share its range); ``analyze_profile`` parses the model at the profile's min, opt and max
shapes and compares the three networks layer by layer. The result carries, per network tensor,
the dims that vary inside the profile (symbolic dims, found by evaluation rather than by algebra),
the layers whose parameters or folded weights depend on the input shapes (they must be
re-specialised per shape), and whether the layer structure itself changes with the shape.
``ShapeSpecialiser`` parses the model per concrete shape inside a profile, lazily, with a cache.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from engine.ir.errors import BuildError, ExecutionError
from engine.ir.network import Network
from engine.ir.profiles import OptimizationProfile, Shape
from engine.onnx_parser.loader import load_model

Dim = int | str  # a fixed size, or the name of a symbolic dim ('?' when the model gives none)


def model_input_dims(model: onnx.ModelProto | str | Path) -> dict[str, tuple[Dim, ...]]:
    """The declared dims of every run-time graph input (initializer-backed inputs excluded)."""
    proto, _ = load_model(model)
    inits = {i.name for i in proto.graph.initializer}
    out: dict[str, tuple[Dim, ...]] = {}
    for vi in proto.graph.input:
        if vi.name in inits or not vi.type.HasField("tensor_type"):
            continue
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else (d.dim_param or "?")
                             for d in dims)
    return out


def check_profile(model: onnx.ModelProto | str | Path, profile: OptimizationProfile) -> None:
    """Raise ``BuildError`` naming input and dim where ``profile`` does not fit the model's declared dims."""
    profile.validate()
    declared = model_input_dims(model)
    unknown = sorted(set(profile.shapes) - set(declared))
    if unknown:
        raise BuildError(f"the optimization profile names {unknown}, which are not inputs of the model "
                         f"(inputs: {sorted(declared)})")
    named: dict[str, tuple[str, int, tuple[int, int, int]]] = {}
    for name, dims in declared.items():
        symbolic = [i for i, d in enumerate(dims) if isinstance(d, str)]
        if name not in profile.shapes:
            if symbolic:
                raise BuildError(f"input '{name}' has dynamic dim {symbolic[0]} ('{dims[symbolic[0]]}') but the "
                                 f"optimization profile gives it no min/opt/max shapes")
            continue
        rng = profile.shapes[name]
        if len(rng.min) != len(dims):
            raise BuildError(f"the optimization profile gives input '{name}' rank {len(rng.min)}, the model "
                             f"declares rank {len(dims)} {dims}")
        for i, d in enumerate(dims):
            triple = (rng.min[i], rng.opt[i], rng.max[i])
            if isinstance(d, int) and triple != (d, d, d):
                raise BuildError(f"input '{name}' dim {i} is fixed to {d} by the model; the profile gives "
                                 f"min/opt/max {triple}")
            if isinstance(d, str) and d != "?":
                seen = named.setdefault(d, (name, i, triple))
                if seen[2] != triple:
                    raise BuildError(f"dim '{d}' is shared by input '{seen[0]}' dim {seen[1]} (min/opt/max "
                                     f"{seen[2]}) and input '{name}' dim {i} ({triple}); give both the same range")


@dataclass
class ProfileAnalysis:
    """How the parsed network changes across one optimization profile (see the module doc)."""

    shapes: dict[str, dict[str, Shape]]  # 'min' / 'opt' / 'max' → network tensor → shape
    dynamic: dict[str, tuple[int, ...]] = field(default_factory=dict)  # tensor → dims that vary
    specialised: dict[str, str] = field(default_factory=dict)  # layer → why it depends on the shapes
    structure_changes: list[str] = field(default_factory=list)  # differences in the layer sequence

    @property
    def same_structure(self) -> bool:
        return not self.structure_changes

    def dynamic_reason(self, tensor: str) -> str | None:
        """The DLA fallback reason for a tensor with a dynamic dim (None when its shape is static)."""
        dims = self.dynamic.get(tensor)
        if not dims:
            return None
        return (f"dynamic dimension {dims[0]} of tensor '{tensor}'; give min = opt = max to keep it on the DLA")


def analyze_profile(model: onnx.ModelProto | str | Path, profile: OptimizationProfile,
                    constant_inputs: Mapping[str, np.ndarray] | None = None) -> ProfileAnalysis:
    """Parse at min, opt and max and compare the networks (tensors by name, layers in order)."""
    from engine.onnx_parser import parse  # deferred: this module is imported by the package itself

    check_profile(model, profile)
    nets: dict[str, Network] = {which: parse(model, input_shapes=profile.at(which), constant_inputs=constant_inputs)
                                for which in ("min", "opt", "max")}
    result = ProfileAnalysis({w: {t: n.tensors[t].shape for t in n.tensors} for w, n in nets.items()})
    lo, mid, hi = nets["min"], nets["opt"], nets["max"]
    for which, other in (("min", lo), ("max", hi)):
        a = [(layer.name, layer.kind.value) for layer in mid.layers]
        b = [(layer.name, layer.kind.value) for layer in other.layers]
        if a != b:
            diff = sorted(set(a) ^ set(b))[:5]
            result.structure_changes.append(f"at {which} shapes the layers differ from those at opt: {diff}")
    for name, tensor in mid.tensors.items():
        shapes = [n.tensors[name].shape for n in (lo, mid, hi) if name in n.tensors]
        if len(shapes) == 3 and len(set(len(s) for s in shapes)) == 1:
            dims = tuple(d for d in range(len(tensor.shape)) if len({s[d] for s in shapes}) > 1)
            if dims:
                result.dynamic[name] = dims
    if result.same_structure:
        for a, b, c in zip(lo.layers, mid.layers, hi.layers):
            if not a.params == b.params == c.params:
                result.specialised[b.name] = "its parameters depend on the input shapes"
            elif any(not _same_array(a.weights.get(k), w) or not _same_array(c.weights.get(k), w)
                     for k, w in b.weights.items()):
                result.specialised[b.name] = "its folded weights depend on the input shapes"
    return result


def _same_array(a: np.ndarray | None, b: np.ndarray) -> bool:
    return a is not None and a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


@dataclass
class SpecialisationRecord:
    """One specialisation: the shapes it is for and what it cost (never hidden from a profiler)."""

    shapes: dict[str, Shape]
    parse_seconds: float
    hits: int = 0


class ShapeSpecialiser:
    """Networks of one model specialised per concrete input shapes inside its profiles, built lazily and cached.

    This is the parser's half of ``set_input_shape``: the shapes are checked against the selected
    profile (an ``ExecutionError`` names input, dim, value and range), the model is parsed for
    them on first use (its shape arithmetic folds for exactly those shapes) and the network is
    reused for every later request of the same shapes. ``records`` tells each specialisation's cost.
    """

    def __init__(self, model: onnx.ModelProto | str | Path, profiles: list[OptimizationProfile],
                 constant_inputs: Mapping[str, np.ndarray] | None = None, max_cached: int = 16) -> None:
        if not profiles:
            raise BuildError("a shape specialiser needs at least one optimization profile")
        self.model, _ = load_model(model)
        for profile in profiles:
            check_profile(self.model, profile)
        self.profiles = list(profiles)
        self.constant_inputs = constant_inputs
        self.max_cached = max_cached
        self._cache: dict[tuple, Network] = {}
        self.records: dict[tuple, SpecialisationRecord] = {}

    def network_for(self, shapes: Mapping[str, Sequence[int]], profile: int = 0) -> Network:
        """The network for these input shapes (every input of the profile must be given)."""
        if not 0 <= profile < len(self.profiles):
            raise ExecutionError(f"optimization profile {profile} does not exist (the engine has "
                                 f"{len(self.profiles)})")
        chosen = self.profiles[profile]
        missing = sorted(set(chosen.shapes) - set(shapes))
        if missing:
            raise ExecutionError(f"no shape given for input(s) {missing} of optimization profile {profile}")
        chosen.check(shapes)
        key = tuple(sorted((name, tuple(int(d) for d in shape)) for name, shape in shapes.items()))
        if key in self._cache:
            self.records[key].hits += 1
            return self._cache[key]
        from engine.onnx_parser import parse  # deferred: this module is imported by the package itself

        start = time.perf_counter()
        network = parse(self.model, input_shapes=dict(key), constant_inputs=self.constant_inputs)
        if len(self._cache) >= self.max_cached:  # drop the oldest specialisation
            oldest = next(iter(self._cache))
            del self._cache[oldest]
        self._cache[key] = network
        self.records[key] = SpecialisationRecord(dict(key), time.perf_counter() - start)
        return network
