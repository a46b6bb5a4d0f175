"""``hetrt place --policy pipeline`` and ``--policy concurrent``: stage and switch-point reports.

Pipeline (JEDI-style): one network, a stream of frames, contiguous stages on GPU + DLA cores
(``scheduler.placement.pipeline``); the table lists each stage's device, layers and time, and the
throughput against gpu-only (one frame at a time on the GPU) and against the best sequential
placement (``optimal`` for latency, also one frame at a time). Concurrent (HaX-CoNN's problem):
several networks started together, each with at most one device switch at group boundaries,
devices shared with the PCCS-style contention model (``scheduler.placement.concurrent``); the
report gives each network's switch point and latency, and the makespan against running the
networks one after another on the GPU and against the best naive concurrent baseline (each
network whole on one device, the best such assignment).

Clock: simulated target (the cost model's). Stage and segment times leave out the hand-offs
to and from the application's buffers (``CostGraph.without_pseudo``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.ir.errors import BuildError

from ..cost import CostModel
from ..costgraph import DEVICES, GPU
from ..objectives import evaluate
from ..placement import PlacementError, optimal
from ..placement.concurrent import ConcurrentPlan, ContentionModel, concurrent
from ..placement.pipeline import PipelinePlan, pipeline
from ..timeline import simulate_timeline


@dataclass(frozen=True)
class PipelineReport:
    model: CostModel
    plan: PipelinePlan
    gpu_only_ms: float  # one frame, GPU only
    sequential_ms: float  # one frame, latency-optimal sequential placement
    simulated_fps: float  # event simulation of the staged placement with DRAM contention
    names: tuple[str, ...]  # layer names of the stage graph (execution order)


def pipeline_devices(model: CostModel, frames: int) -> tuple[PipelinePlan, dict[str, str]]:
    """The best pipeline for ``frames`` frames and the device of every real layer."""
    g = model.graph.without_pseudo()
    try:
        plan = pipeline(g, DEVICES[: 1 + model.platform.dla_cores], frames)
    except (PlacementError, ValueError) as e:
        raise BuildError(f"pipeline placement failed: {e}") from None
    return plan, dict(zip((n.name for n in g.nodes), plan.devices(g)))


def pipeline_report(model: CostModel, frames: int) -> PipelineReport:
    if frames < 1:
        raise BuildError(f"--frames must be >= 1, got {frames}")
    plan, devices = pipeline_devices(model, frames)
    g = model.graph.without_pseudo()
    gpu_only = evaluate(g, [GPU] * len(g)).latency
    seq = optimal(g, "latency").latency
    tl = simulate_timeline(model, devices, frames=frames)
    return PipelineReport(model, plan, gpu_only, seq, tl.throughput_fps, tuple(n.name for n in g.nodes))


def format_pipeline(r: PipelineReport) -> str:
    m, p = r.model, r.plan
    lines = [f"Pipeline placement of '{m.graph.name}' on {m.platform.name} at {m.mode.name}, {m.precision.value}, "
             f"{p.frames} frames (exact over contiguous stages, {p.solve_time_s * 1e3:.0f} ms)",
             f"  clock: simulated target; GPU: {m.gpu_clock}; DLA: {m.dla_clock}",
             "",
             f"  {'stage':>5}  {'device':<6} {'layers':>6}  {'first layer':<28} {'last layer':<28} {'time ms':>9}"]
    for k, s in enumerate(p.stages):
        lines.append(f"  {k:>5}  {s.device:<6} {s.stop - s.first:>6}  {r.names[s.first]:<28.28} "
                     f"{r.names[s.stop - 1]:<28.28} {s.time:>9.4f}")
    gpu_fps, seq_fps = 1e3 / r.gpu_only_ms, 1e3 / r.sequential_ms
    lines += ["",
              f"  period (bottleneck stage) {p.period_ms:.4f} ms; one frame through all stages {p.latency_ms:.4f} ms; "
              f"{p.frames} frames in {p.makespan_ms:.3f} ms",
              f"  throughput {p.throughput_fps:.1f} fps vs gpu-only {gpu_fps:.1f} fps "
              f"(x{p.throughput_fps / gpu_fps:.2f}) and best sequential placement {seq_fps:.1f} fps "
              f"(x{p.throughput_fps / seq_fps:.2f})",
              f"  energy per frame {p.energy_per_frame_mj:.4f} mJ (dynamic + all rails' static power x period)",
              f"  event simulation with DRAM contention: {r.simulated_fps:.1f} fps over {p.frames} frames",
              "  (stage times exclude the hand-offs to and from the application's input/output buffers)"]
    return "\n".join(lines)


@dataclass(frozen=True)
class ConcurrentReport:
    models: tuple[CostModel, ...]
    plan: ConcurrentPlan
    gpu_serial_ms: float
    naive: ConcurrentPlan  # best assignment of whole networks to devices (no switch)
    contention: ContentionModel
    names: tuple[tuple[str, ...], ...]


def concurrent_report(models: Sequence[CostModel], objective: str = "makespan",
                      contention: ContentionModel | None = None) -> ConcurrentReport:
    if not 2 <= len(models) <= 3:
        raise BuildError(f"--policy concurrent places 2 or 3 networks at once, got {len(models)}")
    contention = contention or ContentionModel()
    graphs = [m.graph.without_pseudo() for m in models]
    try:
        plan = concurrent(graphs, contention, k=1, objective=objective)
        naive = concurrent(graphs, contention, k=0, objective=objective)
    except PlacementError as e:
        raise BuildError(f"concurrent placement failed: {e}") from None
    serial = sum(evaluate(g, [GPU] * len(g)).latency for g in graphs)
    names = tuple(tuple(n.name for n in g.nodes) for g in graphs)
    return ConcurrentReport(tuple(models), plan, serial, naive, contention, names)


def _switch(segs, names: Sequence[str]) -> str:
    if len(segs) == 1:
        return f"all on {segs[0].device}"
    a, b = segs
    return f"{a.device} -> {b.device} before layer {b.first} '{names[b.first]}'"


def format_concurrent(r: ConcurrentReport) -> str:
    m0, p = r.models[0], r.plan
    c = r.contention
    lines = [f"Concurrent placement of {len(r.models)} networks on {m0.platform.name} at {m0.mode.name}, "
             f"{m0.precision.value} (objective {p.objective}; exact over group-boundary switch points, at most one "
             f"switch per network; {p.combinations_evaluated} combinations simulated, {p.solve_time_s * 1e3:.0f} ms)",
             "  clock: simulated target; all networks start at t = 0",
             f"  contention model: while segments overlap, each runs 1/sigma as fast, sigma by the summed DRAM share "
             f"of the running segments: thresholds {list(c.thresholds)}, GPU sigma {list(c.gpu_slowdowns)}, "
             f"DLA sigma {list(c.dla_slowdowns)}",
             "",
             f"  {'network':<20} {'layers':>6}  {'placement (switch point)':<58} {'latency ms':>10}"]
    for i, (m, segs) in enumerate(zip(r.models, p.segments)):
        lines.append(f"  {m.graph.name:<20.20} {len(r.names[i]):>6}  {_switch(segs, r.names[i]):<58.58} "
                     f"{p.latencies[i]:>10.4f}")
    lines.append("")
    lines.append("  device order: " + "; ".join(
        f"{d}: " + ", ".join(f"{r.models[n].graph.name}[{s}]" for n, s in seq) for d, seq in p.order.items()))
    best_naive = r.naive.makespan
    naive_desc = ", ".join(f"{m.graph.name} on {segs[0].device}" for m, segs in zip(r.models, r.naive.segments))
    lines += [f"  makespan {p.makespan:.4f} ms vs gpu-only serial {r.gpu_serial_ms:.4f} ms "
              f"({100 * (1 - p.makespan / r.gpu_serial_ms):.1f} % lower) and best naive baseline {best_naive:.4f} ms "
              f"({naive_desc}; {100 * (1 - p.makespan / best_naive):.1f} % lower)",
              "  (segment times exclude the hand-offs to and from the application's input/output buffers)"]
    return "\n".join(lines)
