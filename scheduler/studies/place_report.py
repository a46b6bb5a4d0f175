"""``hetrt place``: the chosen placement per layer against gpu-only, dla-first and best-single-cut.

All numbers are on the simulated target clock (platform model for the GPU, dla_sim for the DLA)
except on ``host``, where GPU times are measured (the report's header says which).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.ir.dtypes import Precision
from engine.ir.errors import BuildError
from engine.ir.network import Network

from ..cost import CostModel, build_cost_model
from ..costgraph import DEVICES, DLA0, DLA1, GPU
from ..objectives import Constraints, evaluate
from ..placement.result import Placement, only_device_reason
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


def _flip_reasons(r: PlaceReport) -> dict[str, str]:
    """Why each layer sits where it does: its DLA refusal, or what moving it alone would cost.

    The optimum is global, so the honest per-layer answer is the marginal one: the change of the
    objective (and of layer time and hand-off time) if only this layer ran on its best other device,
    every other layer kept; a positive change means the move would be worse."""
    g = r.model.graph
    obj = parse_objective(r.objective)
    base = [r.chosen.devices[n.name] for n in g.nodes]
    m0 = evaluate(g, base)
    v0 = obj.value(m0.latency, m0.energy)
    out = {}
    for i, node in enumerate(g.nodes):
        if node.pseudo:
            continue
        d = base[i]
        others = [x for x in DEVICES if x != d and node.supports(x) and (x != DLA1 or DLA0 not in node.allowed
                                                                        or d == DLA0)]
        if not others:
            out[node.name] = only_device_reason(node, d)
            continue
        best = None
        for x in others:
            flip = list(base)
            flip[i] = x
            m = evaluate(g, flip)
            delta = obj.value(m.latency, m.energy) - v0
            if best is None or delta < best[0]:
                best = (delta, x, m)
        delta, x, m = best
        layer_dt = (node.time[x] - node.time[d]) * 1e3
        hand_dt = (m.latency - m0.latency) * 1e3 - layer_dt
        refusal = ""
        if d == GPU and not node.supports(DLA0):
            refusal = f"DLA: {node.why_not(DLA0)}; "
        out[node.name] = (f"{refusal}on {x} alone: {obj} {'+' if delta >= 0 else ''}{_fmt(delta)} "
                          f"(layer {layer_dt:+.1f} us, hand-offs {hand_dt:+.1f} us)")
    return out


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _row(name: str, p: Placement, g) -> str:
    n_dla = sum(1 for n in g.nodes if not n.pseudo and p.devices[n.name] != GPU)
    power = p.energy / p.latency if p.latency > 0 else 0.0
    lo = "/".join(str(p.loadables.get(c, 0)) for c in (DLA0, DLA1))
    return (f"  {name:<34} {p.latency * 1e3:>10.1f} {p.energy * 1e3:>10.1f} {p.latency * p.energy:>11.4g} "
            f"{power:>7.2f} {p.transitions:>11} {lo:>9} {n_dla:>6}")


def format_report(r: PlaceReport) -> str:
    m = r.model
    g = m.graph
    c = r.chosen
    rails = ", ".join(f"{k} {v:.2f} W" for k, v in g.static_power_w.items())
    lines = [f"hetrt place: '{g.name}' on {m.platform.name} at {m.mode.name}, {m.precision.value}, "
             f"objective {r.objective}",
             f"  solver {c.solver} in {c.solve_time_s * 1e3:.1f} ms (exact for the sequential model); cost model built "
             f"in {m.build_s * 1e3:.0f} ms",
             "  clock: every number is on the simulated target clock",
             f"    GPU: {m.gpu_clock}",
             f"    DLA: {m.dla_clock}",
             f"  static rails (paid for the whole inference): {rails}"]
    k = r.constraints
    limits = [f"{k.max_loadables_per_core} DLA loadables per core" if k.max_loadables_per_core is not None
              else "no loadable cap"]
    limits += [f"{label} {v:g}{unit}" for label, v, unit in (("deadline", k.deadline_ms, " ms"),
               ("energy budget", k.energy_budget_mj, " mJ"), ("max transitions", k.max_transitions, ""))
               if v is not None]
    lines.append("  limits: " + ", ".join(limits))
    for note in m.notes:
        lines.append(f"  note: {note}")
    reasons = _flip_reasons(r)
    rows = list(m.layers)
    w = max([len(row.name) for row in rows] + [5])
    lines += ["", f"{'layer':<{w}}  {'kind':<15} {'device':<6} {'time us':>9} {'energy uJ':>10}  reason"]
    for row in rows:
        d = c.devices[row.name]
        node = g.nodes[g.index[row.name]]
        shown = row.device_label if d == GPU else d
        why = reasons[row.name]
        if d == GPU and row.host is not None:
            h = row.host
            why = (f"no GPU kernel ({h.reason}): CPU {h.time_s * 1e6:.1f} us + {h.handoffs} hand-off(s) "
                   f"{h.handoff_s * 1e6:.1f} us ({h.in_bytes} B in, {h.out_bytes} B out); {why}")
        lines.append(f"{row.name:<{w}}  {row.kind:<15} {shown:<6} {node.time[d] * 1e3:>9.2f} "
                     f"{node.energy[d] * 1e3:>10.2f}  {why}")
    lines += ["", "Totals per inference (sequential model: layers + hand-offs; energy includes all rails' static "
              "power)",
              f"  {'policy':<34} {'latency us':>10} {'energy uJ':>10} {'EDP mJ*ms':>11} {'avg W':>7} "
              f"{'transitions':>11} {'loadables':>9} {'DLA':>6}",
              "  " + " " * 34 + " " * 53 + "dla0/dla1 layers"]
    lines.append(_row(f"chosen ({c.solver})", c, g))
    for name, p in r.baselines.items():
        lines.append(_row(name, p, g))
    for name, p in r.baselines.items():
        lines.append(f"  chosen vs {name}: latency x{c.latency / p.latency:.3f}, energy x{c.energy / p.energy:.3f}, "
                     f"EDP x{(c.latency * c.energy) / (p.latency * p.energy):.3f}")
    tl = r.timeline.summary()
    lines.append(f"  simulated timeline of the chosen placement (lanes overlap where the DAG allows, DRAM contention): "
                 f"{tl['latency_ms'] * 1e3:.1f} us, {tl['energy_per_inference_mj'] * 1e3:.1f} uJ, "
                 f"{tl['average_power_w']:.2f} W average")
    msgs = list(r.baselines["dla-first"].messages)
    if msgs:
        lines.append("")
        lines.append("dla-first (TensorRT default) messages:")
        lines.extend(f"  {x}" for x in msgs[:8])
        if len(msgs) > 8:
            lines.append(f"  ... and {len(msgs) - 8} more")
    return "\n".join(lines)
