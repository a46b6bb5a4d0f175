"""Objectives, constraints and the evaluation of one placement of one inference.

Sequential execution model ("one inference")
--------------------------------------------
Layers run one at a time in the CostGraph's fixed topological order; nothing overlaps inside one
inference. This is how TensorRT runs a single network split between GPU and DLA: each DLA
loadable and each GPU segment waits on the stream events of its inputs, so the segments are
serialized. For a placement ``x`` (layer -> device):

    latency(x) = sum_v time(v, x_v)
               + sum_{tensor t} sum_{d in D(t), d != x_p(t)} T_time(bytes(t), x_p(t), d)
    energy(x)  = sum_v energy(v, x_v) + sum_{same transfers} T_energy(...) + P_static * latency(x)

where ``x_p(t)`` is the device of t's producer, ``D(t)`` is the set of devices holding at least
one consumer of ``t`` (a tensor is moved once per destination device) and ``P_static`` is the
sum of all rails' static power (see ``scheduler.costgraph``). Both are linear in the placement's
indicator variables plus one indicator per (tensor, destination) pair, which is what makes
min-cut and MILP formulations exact.

Counted quantities
------------------
* transitions: the number of (tensor, destination device) transfers, i.e. the number of times a
  tensor crosses devices. On a chain this is the number of device switches.
* DLA loadables on a core: the number of maximal runs of consecutive layers (in the execution
  order) placed on that core. In the sequential model each run is one DLA submission, the set of
  layers is convex (a path that leaves the run and comes back would have to pass through a layer
  outside it, which the topological order forbids), so TensorRT can compile it as one loadable.
  Layers of one run that are connected only through earlier layers still form one submission.

Objectives: latency, energy, EDP (latency x energy) and ``latency + lam * energy``.
Constraints: max loadables per DLA core (TensorRT's 16 by default), max transitions, an energy
budget and a latency deadline. Constraint checks use a relative tolerance of ``FEAS_RTOL`` so
that solutions equal to a bound in exact arithmetic are not rejected by rounding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from scheduler.costgraph import DEVICE_INDEX, DEVICES, DLA_CORES, TRT_MAX_LOADABLES_PER_CORE, CostGraph

FEAS_RTOL = 1e-9


class Kind(StrEnum):
    LATENCY = "latency"
    ENERGY = "energy"
    EDP = "edp"
    WEIGHTED = "weighted"


@dataclass(frozen=True)
class Objective:
    """What to minimise. ``weighted`` is ``latency + lam * energy`` (ms + lam * mJ)."""

    kind: Kind = Kind.LATENCY
    lam: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", Kind(self.kind))
        if self.lam < 0:
            raise ValueError("lam must be >= 0")

    @staticmethod
    def parse(spec: str | Objective) -> Objective:
        """``"latency"``, ``"energy"``, ``"edp"`` or ``"latency+0.5*energy"``."""
        if isinstance(spec, Objective):
            return spec
        s = spec.replace(" ", "").lower()
        if s.startswith("latency+") and s.endswith("*energy"):
            return Objective(Kind.WEIGHTED, float(s[len("latency+") : -len("*energy")]))
        return Objective(Kind(s))

    def linear_weights(self) -> tuple[float, float] | None:
        """(a, b) such that the objective is a*latency + b*energy, or None for EDP."""
        if self.kind is Kind.LATENCY:
            return 1.0, 0.0
        if self.kind is Kind.ENERGY:
            return 0.0, 1.0
        if self.kind is Kind.WEIGHTED:
            return 1.0, self.lam
        return None

    def value(self, latency, energy):
        """Objective value (works on scalars and numpy arrays)."""
        if self.kind is Kind.LATENCY:
            return latency
        if self.kind is Kind.ENERGY:
            return energy
        if self.kind is Kind.EDP:
            return latency * energy
        return latency + self.lam * energy

    def __str__(self) -> str:
        return f"latency+{self.lam:g}*energy" if self.kind is Kind.WEIGHTED else self.kind.value


@dataclass(frozen=True)
class Constraints:
    """Limits a placement must respect. ``None`` means unlimited."""

    max_loadables_per_core: int | None = TRT_MAX_LOADABLES_PER_CORE
    max_transitions: int | None = None
    energy_budget_mj: float | None = None
    deadline_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_loadables_per_core", "max_transitions"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        for name in ("energy_budget_mj", "deadline_ms"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be > 0, got {v}")

    def only_loadable_cap(self) -> bool:
        return self.max_transitions is None and self.energy_budget_mj is None and self.deadline_ms is None


@dataclass(frozen=True)
class Metrics:
    latency: float
    energy: float
    dynamic_energy: float
    transitions: int
    loadables: Mapping[str, int]

    def satisfies(self, c: Constraints) -> bool:
        return violations(self, c) == []


def violations(m: Metrics, c: Constraints) -> list[str]:
    """Human-readable list of the constraints ``m`` breaks (empty when feasible)."""
    out = []
    if c.max_loadables_per_core is not None:
        for core, k in m.loadables.items():
            if k > c.max_loadables_per_core:
                out.append(f"{k} loadables on {core} > {c.max_loadables_per_core}")
    if c.max_transitions is not None and m.transitions > c.max_transitions:
        out.append(f"{m.transitions} transitions > {c.max_transitions}")
    if c.energy_budget_mj is not None and m.energy > c.energy_budget_mj * (1 + FEAS_RTOL):
        out.append(f"energy {m.energy:.6g} mJ > budget {c.energy_budget_mj:.6g} mJ")
    if c.deadline_ms is not None and m.latency > c.deadline_ms * (1 + FEAS_RTOL):
        out.append(f"latency {m.latency:.6g} ms > deadline {c.deadline_ms:.6g} ms")
    return out


def _as_indices(g: CostGraph, assignment: Sequence[str] | Mapping[str, str]) -> list[int]:
    if isinstance(assignment, Mapping):
        return [DEVICE_INDEX[assignment[n.name]] for n in g.nodes]
    if len(assignment) != len(g):
        raise ValueError(f"assignment has {len(assignment)} entries for {len(g)} layers")
    return [DEVICE_INDEX[d] for d in assignment]


def evaluate(g: CostGraph, assignment: Sequence[str] | Mapping[str, str]) -> Metrics:
    """Latency, energy, transitions and loadables of one placement under the sequential model.

    Raises ValueError when a layer is put on a device that cannot run it."""
    idx = _as_indices(g, assignment)
    lat = 0.0
    dyn = 0.0
    for n, i in zip(g.nodes, idx):
        d = DEVICES[i]
        if not n.supports(d):
            raise ValueError(f"layer {n.name!r} cannot run on {d}: {n.why_not(d)}")
        lat += n.time[d]
        dyn += n.energy[d]
    transitions = 0
    for t in g.tensors:
        src = DEVICES[idx[g.index[t.producer]]]
        dests = {DEVICES[idx[g.index[c]]] for c in t.consumers}
        for d in sorted(dests):
            if d != src:
                tt, te = g.tensor_transfer(t, src, d)
                lat += tt
                dyn += te
                transitions += 1
    loadables = {core: count_runs(idx, DEVICE_INDEX[core]) for core in DLA_CORES}
    return Metrics(lat, dyn + g.static_power * lat, dyn, transitions, loadables)


def count_runs(idx: Sequence[int], device: int) -> int:
    """Number of maximal runs of consecutive entries equal to ``device``."""
    runs = 0
    prev = False
    for i in idx:
        on = i == device
        runs += on and not prev
        prev = on
    return runs


@dataclass(frozen=True)
class BatchMetrics:
    """Metrics of many placements at once (rows of an assignment matrix)."""

    latency: np.ndarray
    energy: np.ndarray
    transitions: np.ndarray
    loadables: np.ndarray  # (N, 2): dla0, dla1
    valid: np.ndarray  # every layer on a device that supports it

    def feasible(self, c: Constraints) -> np.ndarray:
        ok = self.valid.copy()
        if c.max_loadables_per_core is not None:
            ok &= (self.loadables <= c.max_loadables_per_core).all(axis=1)
        if c.max_transitions is not None:
            ok &= self.transitions <= c.max_transitions
        if c.energy_budget_mj is not None:
            ok &= self.energy <= c.energy_budget_mj * (1 + FEAS_RTOL)
        if c.deadline_ms is not None:
            ok &= self.latency <= c.deadline_ms * (1 + FEAS_RTOL)
        return ok


def cost_tables(g: CostGraph) -> tuple[np.ndarray, np.ndarray]:
    """(time, energy) as (n_layers, 3) arrays with inf where a device cannot run the layer."""
    n = len(g)
    time = np.full((n, len(DEVICES)), np.inf)
    energy = np.full((n, len(DEVICES)), np.inf)
    for i, node in enumerate(g.nodes):
        for j, d in enumerate(DEVICES):
            if node.supports(d):
                time[i, j] = node.time[d]
                energy[i, j] = node.energy[d]
    return time, energy


def evaluate_many(g: CostGraph, assign: np.ndarray) -> BatchMetrics:
    """Vectorised ``evaluate`` over the rows of ``assign`` (N, n_layers) of device indices.

    Same model and same summation terms as ``evaluate``; layers on unsupported devices make a row
    invalid (its latency and energy are inf) instead of raising."""
    assign = np.asarray(assign)
    N, n = assign.shape
    time, energy = cost_tables(g)
    cols = np.arange(n)
    lat = time[cols, assign].sum(axis=1) if n else np.zeros(N)
    dyn = energy[cols, assign].sum(axis=1) if n else np.zeros(N)
    valid = np.isfinite(lat)
    lat = np.where(valid, lat, np.inf)
    dyn = np.where(valid, dyn, np.inf)
    transitions = np.zeros(N, dtype=np.int64)
    nd = len(DEVICES)
    for t in g.tensors:
        src = assign[:, g.index[t.producer]]
        cons = assign[:, [g.index[c] for c in t.consumers]]
        tt = np.zeros((nd, nd))
        te = np.zeros((nd, nd))
        for a in range(nd):
            for b in range(nd):
                tt[a, b], te[a, b] = g.tensor_transfer(t, DEVICES[a], DEVICES[b])
        for d in range(nd):
            need = (cons == d).any(axis=1) & (src != d)
            lat = lat + np.where(need, tt[src, d], 0.0)
            dyn = dyn + np.where(need, te[src, d], 0.0)
            transitions += need
    loadables = np.zeros((N, len(DLA_CORES)), dtype=np.int64)
    for k, core in enumerate(DLA_CORES):
        on = assign == DEVICE_INDEX[core]
        starts = on.copy()
        starts[:, 1:] &= ~on[:, :-1]
        loadables[:, k] = starts.sum(axis=1)
    return BatchMetrics(lat, dyn + g.static_power * lat, transitions, loadables, valid)
