"""``hetrt place``: the chosen placement per layer against gpu-only, dla-first and best-single-cut.

All numbers are on the simulated target clock (platform model for the GPU, dla_sim for the DLA)
except on ``host``, where GPU times are measured (the report's header says which).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.dtypes import Precision
from engine.errors import BuildError
from engine.network import Network

from ..cost import CostModel, build_cost_model, is_pseudo
from ..costgraph import GPU
from ..objectives import Constraints
from ..placement.result import Placement
from ..policies import parse_objective, run_policy
from ..timeline import Timeline, simulate_timeline


@dataclass(frozen=True)
class PlaceReport:
    model: CostModel
    objective: str
    chosen: Placement
    baselines: dict[str, Placement]
    timeline: Timeline
    constraints: Constraints


def make_constraints(deadline_ms: float | None = None, energy_budget_mj: float | None = None,
                     max_transitions: int | None = None) -> Constraints:
    try:
        return Constraints(deadline_ms=deadline_ms, energy_budget_mj=energy_budget_mj,
                           max_transitions=max_transitions)
    except ValueError as e:
        raise BuildError(f"bad constraint: {e}") from None


def place(network: Network, platform: str, power_mode: str | None, precision: Precision | str,
          objective: str = "latency", lam: float | None = None, constraints: Constraints | None = None,
          dla=None) -> PlaceReport:
    precision = Precision(precision)
    if precision is Precision.FP32:
        from ..dla_source import FP32_ON_DLA

        raise BuildError(FP32_ON_DLA)
    model = build_cost_model(network, platform, power_mode, precision, dla=dla)
    obj = parse_objective(objective, lam)
    chosen = run_policy("optimal", model, obj, constraints)
    baselines = {"gpu-only": run_policy("gpu-only", model, obj), "dla-first": run_policy("dla-first", model, obj),
                 "best-single-cut": run_policy("best-single-cut", model, obj)}
    timeline = simulate_timeline(model, chosen.devices, frames=1)
    return PlaceReport(model, str(obj), chosen, baselines, timeline, constraints or Constraints())


def _reason(model: CostModel, name: str, device: str) -> str:
    node = model.graph.nodes[model.graph.index[name]]
    if device == GPU:
        if not node.supports("dla0"):
            return "DLA: " + node.why_not("dla0")
        return f"dla {node.time['dla0']:.4f} ms/{node.energy['dla0']:.4f} mJ there"
    return f"gpu {node.time[GPU]:.4f} ms/{node.energy[GPU]:.4f} mJ there"


def format_report(r: PlaceReport) -> str:
    m = r.model
    lines = [f"Placement of '{m.graph.name}' on {m.platform.name} at {m.mode.name}, {m.precision.value}, "
             f"objective {r.objective}",
             f"  GPU clock: {m.gpu_clock}; DLA clock: {m.dla_clock}; cost model built in {m.build_s * 1e3:.0f} ms"]
    for note in m.notes:
        lines.append(f"  note: {note}")
    w = max([len(row.name) for row in m.layers] + [5])
    lines.append("")
    lines.append(f"{'layer':<{w}}  {'kind':<15} {'device':<6} {'time ms':>9} {'energy mJ':>10}  reason")
    for row in m.layers:
        d = r.chosen.devices[row.name]
        node = m.graph.nodes[m.graph.index[row.name]]
        lines.append(f"{row.name:<{w}}  {row.kind:<15} {d:<6} {node.time[d]:>9.4f} {node.energy[d]:>10.4f}  "
                     f"{_reason(m, row.name, d)}")
    lines.append("")
    lines.append("Totals (sequential model: layers + hand-offs; energy includes static power x latency)")
    lines.append(f"  {'policy':<28} {'latency ms':>10} {'energy mJ':>10} {'EDP mJ*ms':>10} {'transitions':>11} "
                 f"{'loadables':>9} {'DLA layers':>10}")
    rows = [(f"optimal ({r.chosen.solver})", r.chosen)] + list(r.baselines.items())
    for name, p in rows:
        n_dla = sum(1 for k, v in p.devices.items() if v != GPU and not is_pseudo(k))
        lines.append(f"  {name:<28} {p.latency:>10.4f} {p.energy:>10.4f} {p.latency * p.energy:>10.4f} "
                     f"{p.transitions:>11} {sum(p.loadables.values()):>9} {n_dla:>10}")
    g = r.baselines["gpu-only"]
    lines.append(f"  optimal vs gpu-only: latency x{r.chosen.latency / g.latency:.3f}, energy "
                 f"x{r.chosen.energy / g.energy:.3f}")
    tl = r.timeline.summary()
    lines.append(f"  simulated timeline (lanes overlap where the DAG allows): {tl['latency_ms']:.4f} ms, "
                 f"{tl['energy_per_inference_mj']:.4f} mJ/inference, {tl['average_power_w']:.2f} W average")
    msgs = [x for x in r.baselines["dla-first"].messages if "'<in:" not in x and "'<out:" not in x]
    if msgs:
        lines.append("")
        lines.append("dla-first (TensorRT default) messages:")
        lines.extend(f"  {x}" for x in msgs[:8])
        if len(msgs) > 8:
            lines.append(f"  ... and {len(msgs) - 8} more")
    return "\n".join(lines)
