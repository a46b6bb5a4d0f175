"""The bodies of ``hetrt place`` and ``hetrt sweep`` (``engine.cli`` parses the arguments)."""

from __future__ import annotations

import json
from pathlib import Path

from engine.ir.dtypes import Precision
from engine.ir.errors import BuildError


def _precision(args) -> Precision:
    if getattr(args, "int8", False):
        return Precision.INT8
    if getattr(args, "fp16", False):
        return Precision.FP16
    from scheduler.dla_source import FP32_ON_DLA

    raise BuildError(FP32_ON_DLA)


PLACE_POLICIES = ("optimal", "pipeline", "concurrent")


def run_place(args) -> str:
    from engine.model_loading import load_network
    from scheduler.cost import build_cost_model
    from scheduler.platforms import get_platform
    from scheduler.studies.place_report import format_report, make_constraints, place
    from scheduler.studies.throughput_report import (
        concurrent_report,
        format_concurrent,
        format_pipeline,
        pipeline_report,
    )

    models = args.model if isinstance(args.model, list) else [args.model]
    policy = getattr(args, "policy", None) or "optimal"
    if policy not in PLACE_POLICIES:
        raise BuildError(f"unknown --policy '{policy}'; use {', '.join(PLACE_POLICIES)}")
    if policy == "concurrent" and not 2 <= len(models) <= 3:
        raise BuildError(f"--policy concurrent places 2 or 3 models at once, got {len(models)}")
    if policy != "concurrent" and len(models) != 1:
        raise BuildError(f"{len(models)} models given: several models need --policy concurrent")
    precision = _precision(args)
    platform = get_platform(args.platform)
    platform.mode(args.power_mode)
    batch = getattr(args, "batch", None)
    if policy == "pipeline":
        frames = getattr(args, "frames", None)
        frames = 100 if frames is None else frames
        if frames < 1:
            raise BuildError(f"--frames must be >= 1, got {frames}")
        model = build_cost_model(load_network(models[0], batch), platform, args.power_mode, precision)
        return format_pipeline(pipeline_report(model, frames))
    if policy == "concurrent":
        costed = [build_cost_model(load_network(m, batch), platform, args.power_mode, precision) for m in models]
        return format_concurrent(concurrent_report(costed))
    constraints = make_constraints(args.deadline, args.energy_budget, args.max_transitions)
    net = load_network(models[0], batch)
    report = place(net, platform.name, args.power_mode, precision, args.objective, args.lam, constraints)
    return format_report(report)


def run_sweep_cmd(args) -> str:
    from engine.model_loading import load_network
    from scheduler.cost import build_cost_model
    from scheduler.platforms import get_platform
    from scheduler.policies import run_policy
    from scheduler.studies import plots
    from scheduler.studies.sweep import run_sweep
    from scheduler.timeline import simulate_timeline

    precision = _precision(args)
    platform = get_platform(args.platform)
    if args.power_modes in ("all", None):
        modes = list(platform.modes)
    else:
        modes = [platform.mode(m.strip()).name for m in args.power_modes.split(",")]
    objectives = [o.strip() for o in args.objectives.split(",")]
    for o in objectives:
        if o not in ("latency", "energy", "edp", "weighted"):
            raise BuildError(f"unknown objective '{o}' in --objectives; use latency, energy, edp, weighted")
    lambdas = [float(x) for x in args.lambdas.split(",")] if args.lambdas else [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    map_tasks = None
    if getattr(args, "cluster", None):
        from engine.evaluation.ray_cluster import ray_map

        map_tasks = ray_map(args.cluster, args.workers or 2)
    res = run_sweep(load_network, args.model, platform.name, modes, precision.value, objectives, lambdas,
                    args.workers, map_tasks)
    points, front = res.pop("_points"), res.pop("_front")
    (out / "sweep.json").write_text(json.dumps(res, indent=1))
    title = f"{args.model} {precision.value} on {platform.name}"
    plots.pareto_plot(points, front, str(out / "pareto.png"), title + ": latency-energy (Pareto front dashed)")
    # the chosen placement: EDP-optimal at the first requested mode (or the front's EDP minimum)
    best = min(front, key=lambda p: p.latency_ms * p.energy_mj)
    net = load_network(args.model)
    model = build_cost_model(net, platform.name, best.power_mode, precision)
    layers = [layer.name for layer in net.layers]
    rows = {"gpu-only": run_policy("gpu-only", model).devices, "dla-first": run_policy("dla-first", model).devices}
    for obj in ("latency", "energy", "edp"):
        rows[f"optimal {obj}"] = run_policy("optimal", model, obj).devices
    plots.placement_strip(layers, rows, str(out / "placement.png"), f"{title} at {best.power_mode}: placements")
    tl = simulate_timeline(model, best.devices, frames=args.frames)
    plots.gantt(tl, str(out / "gantt.png"), f"{title} at {best.power_mode}: min-EDP placement, {args.frames} frames")
    tl.write_chrome_trace(out / "trace.json")
    lines = [f"Sweep of {args.model} ({precision.value}) on {platform.name}: {len(points)} points over modes "
             f"{', '.join(modes)}; clock: simulated target",
             f"{'mode':<6} {'policy':<16} {'objective':<22} {'latency ms':>10} {'energy mJ':>10} {'DLA layers':>10}"]
    for p in front:
        lines.append(f"{p.power_mode:<6} {p.policy:<16} {p.objective:<22} {p.latency_ms:>10.4f} {p.energy_mj:>10.4f} "
                     f"{p.dla_layers:>10}")
    lines.append(f"min-EDP point: {best.power_mode} {best.objective}; timeline of {args.frames} frames: "
                 f"{tl.summary()['throughput_fps']:.0f} fps, {tl.summary()['average_power_w']:.2f} W")
    lines.append(f"wrote {out}/sweep.json, pareto.png, placement.png, gantt.png, trace.json")
    return "\n".join(lines)
