"""The answer of every placement policy, and the error for requests no placement can meet."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from scheduler.costgraph import DEVICES, CostGraph
from scheduler.objectives import Constraints, Metrics, Objective, evaluate, violations


class PlacementError(ValueError):
    """A request that no placement can satisfy (the message says which limit and by how much)."""


@dataclass(frozen=True)
class Placement:
    """Device per layer plus the numbers that justify it.

    ``objective_value`` is recomputed by ``scheduler.objectives.evaluate`` from the device map, so
    it never carries a solver's rounding. ``reasons`` explains, per layer, why it sits where it is.
    """

    devices: Mapping[str, str]
    objective: str
    objective_value: float
    latency: float
    energy: float
    transitions: int
    loadables: Mapping[str, int]
    solver: str
    solve_time_s: float
    reasons: Mapping[str, str]
    messages: tuple[str, ...] = ()
    extra: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("devices", "loadables", "reasons", "extra"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    def device_list(self, g: CostGraph) -> list[str]:
        return [self.devices[n.name] for n in g.nodes]

    def metrics(self) -> Metrics:
        return Metrics(self.latency, self.energy, float("nan"), self.transitions, self.loadables)

    def summary(self) -> str:
        used = {d: sum(1 for v in self.devices.values() if v == d) for d in DEVICES}
        return (
            f"{self.solver}: {self.objective}={self.objective_value:.6g} latency={self.latency:.6g} ms "
            f"energy={self.energy:.6g} mJ transitions={self.transitions} loadables={dict(self.loadables)} "
            f"layers={used} ({self.solve_time_s * 1e3:.1f} ms)"
        )


def only_device_reason(node, device: str) -> str:
    """'only gpu can run it (dla0, dla1: why)': devices that refuse for the same reason are named together."""
    by_reason: dict[str, list[str]] = {}
    for d in DEVICES:
        if d != device and not node.supports(d):
            by_reason.setdefault(node.why_not(d), []).append(d)
    why = "; ".join(f"{', '.join(ds)}: {r}" for r, ds in by_reason.items())
    return f"only {device} can run it ({why})"


def default_reason(g: CostGraph, layer: int, device: str, solver: str, objective: Objective) -> str:
    node = g.nodes[layer]
    others = [d for d in DEVICES if d != device]
    if len(node.allowed) == 1:
        return only_device_reason(node, device)
    alts = ", ".join(f"{d} {node.time[d]:.4g} ms/{node.energy[d]:.4g} mJ" for d in others if node.supports(d))
    return (
        f"{solver} for {objective}: {device} {node.time[device]:.4g} ms/{node.energy[device]:.4g} mJ "
        f"(alternatives: {alts}; transfers included in the global optimum)"
    )


def make_placement(
    g: CostGraph,
    devices: Sequence[str],
    objective: Objective,
    solver: str,
    solve_time_s: float,
    reasons: Mapping[str, str] | None = None,
    messages: Sequence[str] = (),
    constraints: Constraints | None = None,
    extra: Mapping[str, float] | None = None,
) -> Placement:
    """Evaluate ``devices`` exactly and wrap it; optionally assert it meets ``constraints``."""
    m = evaluate(g, devices)
    if constraints is not None:
        bad = violations(m, constraints)
        if bad:
            raise AssertionError(f"{solver} returned a placement that breaks its constraints: {bad}")
    why = dict(reasons or {})
    for i, (node, d) in enumerate(zip(g.nodes, devices)):
        why.setdefault(node.name, default_reason(g, i, d, solver, objective))
    return Placement(
        devices={n.name: d for n, d in zip(g.nodes, devices)},
        objective=str(objective),
        objective_value=float(objective.value(m.latency, m.energy)),
        latency=m.latency,
        energy=m.energy,
        transitions=m.transitions,
        loadables=m.loadables,
        solver=solver,
        solve_time_s=solve_time_s,
        reasons=why,
        messages=tuple(messages),
        extra=extra or {},
    )
