"""The DLA backend: compile IR partitions to dla_sim loadables, run them, and cost them.

* ``compile`` lowers a partition (``lowering``, through its ``DLA_LOWERINGS`` table), packs it into a
  ``dla_sim.loadable.Loadable`` and returns its bytes with the boundary tensors and their TensorRT DLA
  formats (kCHW16 for FP16, kCHW32 for INT8).
* ``execute`` parses the loadable, converts the inputs as the boundary reformat does (round to
  the hardware precision, pack to the I/O format), runs it functionally on dla_sim (``runner.py``)
  and times it with one timing-only simulation; outputs come back NCHW in the reference backend's
  dtype convention (float16 arrays for FP16).
* ``cost``/``layer_costs`` time fused hardware groups with dla_sim, cached (``costing.py``).
  ``cost`` of a group of layers equals the timing-only simulation of its compiled partition.
  ``layer_costs`` spreads each fused group's time and energy over the layers that emitted its ops,
  in proportion to each op's own busy cycles; a layer folded into another's op (an activation
  fused into a convolution's SDP) or realised by addressing (concat, slice) costs 0.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from dla_sim import conv_core, limits, simulator
from dla_sim.config import DlaConfig
from dla_sim.formats import IOFormat, pack_io, unpack_io
from dla_sim.limits import DlaLimitError
from dla_sim.loadable import Loadable
from dla_sim.ops import ConvOp, HwOp
from engine.ir.dtypes import Precision
from engine.ir.errors import ExecutionError, UnsupportedError
from engine.ir.int8_math import dequantize, quantize
from engine.ir.network import Network

from .costing import GroupCostCache
from .cubes import cube_shape, hw_precision
from .int8 import Rep
from .lower import lower
from .program import boundary_formats, build_loadable, io_format
from .runner import run
from .shuffle import lowering_units
from .support import supports


@dataclass(frozen=True)
class BoundaryTensor:
    """A tensor crossing the partition boundary: IR name and shape, and its DLA I/O format."""

    name: str
    shape: tuple[int, ...]
    format: IOFormat


@dataclass(frozen=True)
class DlaPartition:
    """A compiled DLA subgraph: the loadable's bytes (embeddable in a plan) and its boundary."""

    loadable: bytes
    inputs: tuple[BoundaryTensor, ...]
    outputs: tuple[BoundaryTensor, ...]
    precision: Precision
    config: str
    core: int
    layers: tuple[str, ...]


@dataclass(frozen=True)
class OpTrace:
    name: str
    unit: str
    layer: str
    start_cycles: float
    duration_cycles: float
    busy_cycles: float
    dram_bytes: int
    bound: str


@dataclass(frozen=True)
class DlaRunStats:
    """Simulated (dla_sim clock) cost of one execution of a partition."""

    cycles: float
    clock_mhz: float
    time_s: float
    energy_j: float
    dram_bytes: int
    sram_bytes: int
    macs: int
    trace: tuple[OpTrace, ...]


def boundary_reps(ld: Loadable, precision: Precision) -> dict[str, Rep]:
    """Each boundary tensor's representation: recorded per tensor for INT8 partitions, else the
    partition's precision."""
    rec = ld.meta.get("boundary") or {}
    hp = hw_precision(Precision(precision))
    names = [t for t, _ in ld.meta.get("inputs", [])] + [t for t, _ in ld.meta.get("outputs", [])]
    reps = {t: Rep(hp) for t in names}
    reps.update({t: Rep.from_json(r) for t, r in rec.items()})
    return reps


def to_cube(a: np.ndarray, rep: Rep, name: str) -> np.ndarray:
    """Host value -> DLA cube, as the boundary reformat does: int8 ``quantize(x, scale)`` (what the
    reference INT8 kernels do with their input; exact for the q·scale values INT8 layers hand on),
    fp16 rounding otherwise; packed to and unpacked from the I/O format."""
    cube = cube_shape(a.shape)
    if rep.is_int8:
        if rep.scale is None:
            raise ExecutionError(f"input '{name}': int8 boundary without a scale (a partition compiled for costing)")
        x = quantize(a, np.float32(rep.scale)).reshape(cube)
    else:
        with np.errstate(over="ignore"):
            x = a.astype(np.float16).reshape(cube)
    fmt = io_format(rep.precision)
    return unpack_io(pack_io(x, fmt), fmt, cube, rep.precision.dtype)


def from_cube(y: np.ndarray, rep: Rep, shape: tuple[int, ...], name: str) -> np.ndarray:
    """DLA cube -> host value: int8 cubes as float32 ``q·scale`` (the reference's INT8 hand-off),
    fp16 cubes as float16 arrays."""
    cube = cube_shape(shape)
    fmt = io_format(rep.precision)
    y = unpack_io(pack_io(np.ascontiguousarray(y), fmt), fmt, cube, rep.precision.dtype).reshape(shape)
    if rep.is_int8:
        if rep.scale is None:
            raise ExecutionError(f"output '{name}': int8 boundary without a scale")
        return dequantize(y, np.float32(rep.scale))
    return y


def check_limits(ops: list[HwOp], cfg: DlaConfig) -> None:
    """Raise ``DlaLimitError`` naming every hardware limit any op violates (never run out of limits)."""
    reasons = []
    for op in ops:
        found = conv_core.check(op, cfg) if isinstance(op, ConvOp) else limits.check(op, cfg)
        reasons += [f"{op.name}: {r}" for r in found]
    if reasons:
        raise DlaLimitError("; ".join(reasons))


class DlaBackend:
    """One DLA core of configuration ``cfg`` (cores of a configuration are identical)."""

    name = "dla"

    def __init__(self, cfg: DlaConfig, core: int = 0) -> None:
        if not 0 <= core < cfg.cores:
            raise ValueError(f"{cfg.name} has {cfg.cores} DLA core(s); core {core} does not exist")
        self.cfg = cfg
        self.core = core
        self.costs = GroupCostCache(cfg)
        self._loaded: OrderedDict[bytes, tuple[Loadable, DlaRunStats]] = OrderedDict()

    # ------------------------------------------------------------------------------ compile

    def compile(self, network: Network, layer_names, precision: Precision) -> DlaPartition:
        precision = Precision(precision)
        names = [la.name for la in network.layers if la.name in set(layer_names)]
        lowered = lower(network, names, precision, self.cfg)
        check_limits(lowered.ops, self.cfg)
        ld = build_loadable(lowered, network, f"{network.name}.dla{self.core}", self.cfg.name)
        fmt = boundary_formats(lowered)
        return DlaPartition(
            loadable=ld.to_bytes(),
            inputs=tuple(BoundaryTensor(t, network.tensors[t].shape, fmt[t]) for t in lowered.inputs),
            outputs=tuple(BoundaryTensor(t, network.tensors[t].shape, fmt[t]) for t in lowered.outputs),
            precision=precision, config=self.cfg.name, core=self.core, layers=tuple(names),
        )

    # ------------------------------------------------------------------------------ execute

    def _load(self, partition: DlaPartition) -> tuple[Loadable, DlaRunStats]:
        if partition.config != self.cfg.name:
            raise ExecutionError(f"partition was compiled for DLA '{partition.config}', this backend is "
                                 f"'{self.cfg.name}'")
        hit = self._loaded.get(partition.loadable)
        if hit is not None:
            self._loaded.move_to_end(partition.loadable)
            return hit
        ld = Loadable.from_bytes(partition.loadable)
        res = simulator.simulate(ld, self.cfg, timing_only=True)
        owners = ld.meta.get("owners", [])
        trace = tuple(OpTrace(r.name, r.unit, owners[i] if i < len(owners) else "", r.start, r.duration, r.busy,
                              r.dram_bytes, r.bound) for i, r in enumerate(res.records))
        stats = DlaRunStats(res.cycles, res.clock_mhz, res.time_s, res.energy.total_j, res.bytes.dram,
                            res.bytes.sram, res.macs, trace)
        self._loaded[partition.loadable] = (ld, stats)
        if len(self._loaded) > 32:
            self._loaded.popitem(last=False)
        return ld, stats

    def execute(self, partition: DlaPartition, inputs: dict[str, np.ndarray], timing_only: bool = False
                ) -> tuple[dict[str, np.ndarray], DlaRunStats]:
        ld, stats = self._load(partition)
        if timing_only:
            return {}, stats
        reps = boundary_reps(ld, partition.precision)
        want = {b.name: b for b in partition.inputs}
        missing, unknown = sorted(set(want) - set(inputs)), sorted(set(inputs) - set(want))
        if missing or unknown:
            raise ExecutionError(f"DLA partition inputs: missing {missing}, unknown {unknown}; expects {sorted(want)}")
        feeds = {}
        for name, b in want.items():
            a = np.asarray(inputs[name])
            if tuple(a.shape) != b.shape:
                raise ExecutionError(f"input '{name}': expected shape {b.shape}, got {tuple(a.shape)}")
            if a.dtype.kind != "f":
                raise ExecutionError(f"input '{name}': expected a float array, got {a.dtype}")
            feeds[name] = to_cube(a, reps[name], name)
        env = run(ld, self.cfg, feeds)
        outs = {}
        for b in partition.outputs:
            outs[b.name] = from_cube(env[b.name], reps[b.name], b.shape, b.name)
        return outs, stats

    # ------------------------------------------------------------------------------ cost

    def cost(self, network: Network, layer_names, precision: Precision) -> tuple[float, float, dict]:
        """(seconds, joules, details) of running ``layer_names`` as one DLA partition."""
        lowered = lower(network, layer_names, Precision(precision), self.cfg, with_weights=False)
        groups = self.costs.program(lowered.ops)
        cycles = sum(c.cycles for _, c in groups)
        energy = sum(c.energy_j for _, c in groups)
        details = {
            "cycles": cycles,
            "clock_mhz": self.cfg.clock_mhz,
            "dram_bytes": sum(c.dram_bytes for _, c in groups),
            "groups": [{"ops": [op.name for op in g], "units": [op.unit for op in g], "cycles": c.cycles,
                        "energy_j": c.energy_j, "bound": c.bound} for g, c in groups],
            "fused": dict(lowered.fused),
        }
        return cycles / self.cfg.clock_hz, energy, details

    def layer_costs(self, network: Network, precision: Precision) -> dict[str, tuple[float, float]]:
        """(seconds, joules) of every DLA-supported layer in its fused context (see module doc).

        Layers the DLA does not support are absent from the result.
        """
        precision = Precision(precision)
        ok = [la.name for la in network.layers if supports(la, network, precision, self.cfg).ok]
        if not ok:
            return {}
        try:
            lowered_sets = [lower(network, ok, precision, self.cfg, with_weights=False)]
        except UnsupportedError:  # supported one by one, not all together: cost each alone
            lowered_sets = [lower(network, unit, precision, self.cfg, with_weights=False)
                            for unit in lowering_units(network, ok)]
        out = {n: (0.0, 0.0) for n in ok}
        hz = self.cfg.clock_hz
        for lowered in lowered_sets:
            i = 0
            for g, c in self.costs.program(lowered.ops):
                owners = lowered.owners[i:i + len(g)]
                i += len(g)
                total = sum(c.busy) or float(len(g))
                weights = c.busy if sum(c.busy) else (1.0,) * len(g)
                for owner, w in zip(owners, weights):
                    t, e = out[owner]
                    out[owner] = (t + c.cycles / hz * w / total, e + c.energy_j * w / total)
        return out
