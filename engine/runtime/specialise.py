"""Engines specialised per input shape, for plans built with optimization profiles.

Shape arithmetic is folded when a model is parsed, so one network holds for one set of input
shapes. A plan built with profiles keeps its source ONNX model (the refit record,
``engine.refit.record``) and its build configuration; ``Specialiser`` turns a request for concrete
shapes inside a profile into an engine: it checks the shapes against the profile (the error names
input, dim, value and range), re-parses the source at those shapes, builds it with the plan's own
``BuilderConfig`` (same precisions, placement request, timing cache and optimization level; layers
with a dynamic dimension stay off the DLA for the same reason) and loads the result. Engines are
built lazily on first use of a shape and kept in a bounded LRU cache shared by every context of
the engine; each build's cost is recorded (``records``) and reported to the profiler of the
context that triggered it, so a first run's cost is never hidden.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine.ir.dtypes import Precision
from engine.ir.errors import ExecutionError, HetrtError, PlanError
from engine.ir.logger import Logger, Severity
from engine.ir.profiles import OptimizationProfile, Shape

if TYPE_CHECKING:
    from .engine import Engine

ShapeKey = tuple[int, tuple[tuple[str, Shape], ...]]  # (profile, sorted (input, shape) pairs)


@dataclass
class SpecialisationRecord:
    """One specialised engine: for which profile and shapes, and what building it cost."""

    profile: int
    shapes: dict[str, Shape]
    build_seconds: float
    uses: int = 0

    @property
    def label(self) -> str:
        shapes = ",".join(f"{n}:{'x'.join(map(str, s))}" for n, s in self.shapes.items())
        return f"[specialise profile {self.profile} {shapes}]"


def profiles_of(build_config: Mapping) -> list[OptimizationProfile]:
    try:
        return [OptimizationProfile.from_dict(p) for p in build_config.get("profiles") or []]
    except HetrtError as e:
        raise PlanError(f"the plan's optimization profiles are invalid: {e}") from None


def builder_config(summary: Mapping):
    """The ``BuilderConfig`` of a plan's specialised builds, from the plan's recorded summary (no
    calibrator: calibrated INT8 builds reuse the plan's recorded activation scales)."""
    from dataclasses import fields

    from engine.builder import BuilderConfig

    names = {f.name for f in fields(BuilderConfig)}
    kwargs = {k: v for k, v in summary.items() if k in names and k != "calibrator"}
    kwargs["profiles"] = []  # a specialised engine is static: built at one shape of its parent's profiles
    kwargs["input_shapes"] = {}
    kwargs["layer_precisions"] = {k: Precision(v) for k, v in (summary.get("layer_precisions") or {}).items()}
    kwargs["refittable"] = False
    return BuilderConfig(**kwargs)


class Specialiser:
    """The specialised engines of one plan with profiles (see the module doc)."""

    def __init__(self, base: Engine, profiles: list[OptimizationProfile], source: bytes,
                 logger: Logger, max_cached: int = 8) -> None:
        import onnx

        self.base = base
        self.profiles = profiles
        self.model = onnx.ModelProto()
        self.model.ParseFromString(source)
        self.logger = logger
        self.max_cached = max_cached
        self.records: list[SpecialisationRecord] = []
        self._cache: OrderedDict[ShapeKey, Engine] = OrderedDict()
        self._lock = threading.Lock()
        self._base_shapes = {n: base.get_tensor_shape(n) for n in base.input_names}

    def check(self, shapes: Mapping[str, Sequence[int]], profile: int) -> dict[str, Shape]:
        """Every input's shape, checked against profile ``profile`` (fixed inputs keep their shape)."""
        if not 0 <= profile < len(self.profiles):
            raise ExecutionError(f"optimization profile {profile} does not exist; engine '{self.base.name}' has "
                                 f"{len(self.profiles)} (0..{len(self.profiles) - 1})")
        chosen = self.profiles[profile]
        out: dict[str, Shape] = {}
        for name, fixed in self._base_shapes.items():
            shape = tuple(int(d) for d in shapes.get(name, fixed))
            if name in chosen.shapes:
                chosen.shapes[name].check(name, shape)
            elif shape != fixed:
                raise ExecutionError(f"input '{name}' has the fixed shape {fixed}; got {shape}")
            out[name] = shape
        unknown = sorted(set(shapes) - set(out))
        if unknown:
            raise ExecutionError(f"{unknown} are not inputs of engine '{self.base.name}'; inputs: {sorted(out)}")
        return out

    def engine_for(self, shapes: Mapping[str, Sequence[int]], profile: int = 0
                   ) -> tuple[Engine, SpecialisationRecord | None]:
        """The engine for these shapes, and its record when this call built it (else None)."""
        checked = self.check(shapes, profile)
        if checked == self._base_shapes:
            return self.base, None  # the plan itself was built at these shapes
        key: ShapeKey = (profile, tuple(sorted(checked.items())))
        with self._lock:  # one build per shape, whichever context asks first
            engine = self._cache.get(key)
            if engine is not None:
                self._cache.move_to_end(key)
                for r in self.records:
                    if r.profile == profile and r.shapes == checked:
                        r.uses += 1
                return engine, None
            start = time.perf_counter()
            engine = self._build(checked)
            record = SpecialisationRecord(profile, checked, time.perf_counter() - start, uses=1)
            self.records.append(record)
            self._cache[key] = engine
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        self.logger.info(f"Specialised engine '{self.base.name}' for {record.label} in "
                         f"{record.build_seconds:.2f} s")
        return engine, record

    def _build(self, shapes: dict[str, Shape]) -> Engine:
        from engine import plan as plan_format
        from engine.builder import Builder, parse_for_build

        from .engine import Engine

        config = builder_config(self.base.build_config)
        quiet = Logger(Severity.ERROR)  # the specialised builds' own messages stay out of the caller's log
        try:
            network = parse_for_build(self.model, dict(shapes), config, quiet)
            refusals = self.base.metadata.get("dla_refusals") or {}
            scales = (self.base._contents.refit or {}).get("int8_scales")
            if scales is not None:
                scales = {k: np.float32(v) for k, v in scales.items()}
            contents = Builder(quiet).build(network, config, dla_refusals=refusals, int8_scales=scales)
        except HetrtError as e:
            raise ExecutionError(f"cannot specialise engine '{self.base.name}' for shapes {shapes}: {e}") from e
        header, contents = plan_format.deserialize_with_header(plan_format.serialize(contents), None)
        return Engine(header, contents, self.logger, specialised=True)
