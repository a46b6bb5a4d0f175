"""Optimization profiles: the range of shapes an engine accepts per input (TensorRT's IOptimizationProfile).

A profile gives every input with a dynamic dimension (-1 or a named dim in the model) a
``ShapeRange`` of min/opt/max shapes: tactics are chosen at opt, activation memory is sized for
max, and a shape outside [min, max] is refused with an error naming the input, the dimension, the
value and the range. Profiles are plain data: they serialize to JSON objects for the plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from engine.ir.errors import BuildError, ExecutionError

Shape = tuple[int, ...]


def _shape(values: Sequence[int], what: str) -> Shape:
    try:
        shape = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise BuildError(f"{what} must be a sequence of integers, got {values!r}") from None
    if any(d < 0 for d in shape):
        raise BuildError(f"{what} {shape} has a negative dimension")
    return shape


@dataclass(frozen=True)
class ShapeRange:
    """min <= opt <= max, dimension by dimension, all of one rank."""

    min: Shape
    opt: Shape
    max: Shape

    def validate(self, name: str) -> None:
        if not len(self.min) == len(self.opt) == len(self.max):
            raise BuildError(f"profile for input '{name}': min {self.min}, opt {self.opt} and max {self.max} "
                             f"differ in rank")
        for d, (lo, op, hi) in enumerate(zip(self.min, self.opt, self.max)):
            if not lo <= op <= hi:
                raise BuildError(f"profile for input '{name}' dim {d}: need min <= opt <= max, got "
                                 f"{lo}, {op}, {hi}")

    @property
    def dynamic_dims(self) -> tuple[int, ...]:
        """The dimensions whose min and max differ."""
        return tuple(d for d, (lo, hi) in enumerate(zip(self.min, self.max)) if lo != hi)

    def check(self, name: str, shape: Sequence[int]) -> None:
        """Raise ``ExecutionError`` unless ``shape`` lies inside the range."""
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(self.min):
            raise ExecutionError(f"input '{name}': shape {shape} has rank {len(shape)}, the profile's is "
                                 f"{len(self.min)} (min {self.min}, max {self.max})")
        for d, (v, lo, hi) in enumerate(zip(shape, self.min, self.max)):
            if not lo <= v <= hi:
                raise ExecutionError(f"input '{name}' dim {d} = {v} is outside the optimization profile's range "
                                     f"[{lo}, {hi}] (min {self.min}, max {self.max})")


@dataclass
class OptimizationProfile:
    """Shape ranges by input name. ``set_shape`` mirrors TensorRT's ``IOptimizationProfile.setDimensions``."""

    shapes: dict[str, ShapeRange] = field(default_factory=dict)

    def set_shape(self, name: str, min: Sequence[int], opt: Sequence[int], max: Sequence[int]) -> OptimizationProfile:
        rng = ShapeRange(_shape(min, f"min shape of '{name}'"), _shape(opt, f"opt shape of '{name}'"),
                         _shape(max, f"max shape of '{name}'"))
        rng.validate(name)
        self.shapes[name] = rng
        return self

    def get_shape(self, name: str) -> ShapeRange:
        if name not in self.shapes:
            raise BuildError(f"the optimization profile has no shapes for input '{name}' "
                             f"(it has: {sorted(self.shapes)})")
        return self.shapes[name]

    def validate(self) -> None:
        if not self.shapes:
            raise BuildError("an optimization profile needs the shapes of at least one input")
        for name, rng in self.shapes.items():
            rng.validate(name)

    def at(self, which: str) -> dict[str, Shape]:
        """The 'min', 'opt' or 'max' shape of every input."""
        if which not in ("min", "opt", "max"):
            raise ValueError(f"which must be 'min', 'opt' or 'max', got {which!r}")
        return {name: getattr(rng, which) for name, rng in self.shapes.items()}

    @property
    def is_static(self) -> bool:
        """min = opt = max for every input (what the DLA needs)."""
        return all(rng.min == rng.opt == rng.max for rng in self.shapes.values())

    def check(self, shapes: Mapping[str, Sequence[int]]) -> None:
        """Raise ``ExecutionError`` naming the first input, dim and value outside the profile."""
        for name, shape in shapes.items():
            if name not in self.shapes:
                raise ExecutionError(f"input '{name}' is not in the optimization profile "
                                     f"(inputs: {sorted(self.shapes)})")
            self.shapes[name].check(name, shape)

    def to_dict(self) -> dict:
        return {name: {"min": list(r.min), "opt": list(r.opt), "max": list(r.max)} for name, r in self.shapes.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Sequence[int]]]) -> OptimizationProfile:
        profile = cls()
        for name, r in data.items():
            missing = {"min", "opt", "max"} - set(r)
            if missing:
                raise BuildError(f"profile for input '{name}' lacks {sorted(missing)}")
            profile.set_shape(name, r["min"], r["opt"], r["max"])
        return profile
