"""The bodies of ``hetrt place`` and ``hetrt sweep`` (``engine.cli.place`` and ``engine.cli.sweep`` parse the
arguments)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from engine.ir.dtypes import Precision
from engine.ir.errors import BuildError, OutputError
from engine.ir.fileio import atomic_write_bytes, atomic_write_text

STUDY_PLATFORMS = ("orin-agx-64gb", "xavier-agx")


def check_study_request(args) -> None:
    """Flags that would be ignored, and a platform whose clock is not simulated, are errors up front."""
    if args.platform == "host":
        raise BuildError("--platform host: place and sweep study a Jetson target on its simulated clock; the "
                         "host's GPU is measured, not modelled, and it has no DLA hardware. Use "
                         + " or ".join(STUDY_PLATFORMS))
    lam = getattr(args, "lam", None)
    if lam is not None and getattr(args, "objective", None) != "weighted":
        raise BuildError(f"--lambda {lam:g} applies only with --objective weighted (latency + lambda*energy)")
    lambdas = getattr(args, "lambdas", None)
    objectives = getattr(args, "objectives", None)
    if lambdas and objectives and "weighted" not in [o.strip() for o in objectives.split(",")]:
        raise BuildError("--lambdas applies only when --objectives includes weighted")


def _precision(args) -> Precision:
    if getattr(args, "int8", False):
        return Precision.INT8
    if getattr(args, "fp16", False):
        return Precision.FP16
    from scheduler.dla_source import FP32_ON_DLA

    raise BuildError(FP32_ON_DLA)


PLACE_POLICIES = ("optimal", "pipeline", "concurrent", "replicate")


def run_place(args) -> str:
    """The table of ``hetrt place`` for the chosen policy."""
    policy, report = place_policy_report(args)
    return place_formatter(policy)(report)


def place_policy_report(args) -> tuple[str, object]:
    """(policy, its report) for ``hetrt place``: ``optimal`` a PlaceReport, ``pipeline`` a PipelineReport,
    ``concurrent`` a ConcurrentReport, ``replicate`` a ReplicateReport."""
    from engine.model_loading import load_network
    from scheduler.cost import build_cost_model
    from scheduler.platforms import get_platform
    from scheduler.studies.place_report import make_constraints, place
    from scheduler.studies.throughput_report import concurrent_report, pipeline_report

    models = args.model if isinstance(args.model, list) else [args.model]
    policy = getattr(args, "policy", None) or "optimal"
    if policy not in PLACE_POLICIES:
        raise BuildError(f"unknown --policy '{policy}'; use {', '.join(PLACE_POLICIES)}")
    if policy == "concurrent" and not 2 <= len(models) <= 3:
        raise BuildError(f"--policy concurrent places 2 or 3 models at once, got {len(models)}")
    if policy != "concurrent" and len(models) != 1:
        raise BuildError(f"{len(models)} models given: several models need --policy concurrent")
    check_study_request(args)
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
        return policy, pipeline_report(model, frames)
    if policy == "concurrent":
        costed = [build_cost_model(load_network(m, batch), platform, args.power_mode, precision) for m in models]
        return policy, concurrent_report(costed)
    if policy == "replicate":
        from scheduler.studies.replicate import replicate_report

        model = build_cost_model(load_network(models[0], batch), platform, args.power_mode, precision)
        return policy, replicate_report(model, fallback=not getattr(args, "no_gpu_fallback", False))
    constraints = make_constraints(args.deadline, args.energy_budget, args.max_transitions)
    net = load_network(models[0], batch)
    return policy, place(net, platform.name, args.power_mode, precision, args.objective, args.lam, constraints)


def place_formatter(policy: str):
    """The table formatter of a policy's report."""
    from scheduler.studies.place_report import format_report
    from scheduler.studies.replicate import format_replicate
    from scheduler.studies.throughput_report import format_concurrent, format_pipeline

    return {"optimal": format_report, "pipeline": format_pipeline, "concurrent": format_concurrent,
            "replicate": format_replicate}[policy]


def place_json(policy: str, report) -> dict:
    """The JSON document of a policy's report (``hetrt place --json``)."""
    from scheduler.studies.place_json import report_json
    from scheduler.studies.replicate import replicate_json
    from scheduler.studies.throughput_json import concurrent_json, pipeline_json

    return {"optimal": report_json, "pipeline": pipeline_json, "concurrent": concurrent_json,
            "replicate": replicate_json}[policy](report)


def sweep_output_dir(path: str) -> Path:
    """The sweep's folder: created when missing; an existing file there is an error, before any work."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputError(f"-o {out}: a file of that name exists; sweep writes a folder of results")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"-o {out}: cannot create the folder ({e.strerror or e})") from None
    return out


def _sweep_points(args, platform: str, modes: list[str], precision: str, objectives, lambdas):
    """One task per power mode (worker processes with --workers > 1, Ray tasks with --cluster), with
    a progress bar over modes."""
    from engine.model_loading import load_network
    from scheduler.studies.sweep import run_sweep

    bar = None
    if not getattr(args, "quiet", False) and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(modes), unit=" power modes", leave=False, dynamic_ncols=True)
    map_tasks = None
    if getattr(args, "cluster", None):  # every power mode as a Ray task (hetrt[cluster])
        from engine.evaluation.ray_cluster import ray_map

        map_tasks = ray_map(args.cluster, args.workers or 2)
    try:
        res = run_sweep(load_network, args.model, platform, modes, precision, objectives, lambdas, args.workers,
                        map_tasks, bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    return res["_points"], res["_front"]


def _plot(out: Path, name: str, draw) -> None:
    """Draw into a temporary file of the same folder, then publish it atomically."""
    with tempfile.TemporaryDirectory(dir=out, prefix=".plot-") as tmp:
        path = Path(tmp) / name
        draw(str(path))
        atomic_write_bytes(out / name, path.read_bytes())


def _contrast_gantts(args, out: Path, net, platform: str, precision, front, edp_model, title: str) -> list[str]:
    """Gantt charts of the placements worth comparing with the min-EDP one: the fastest and the most frugal
    points of the front, and TensorRT's default (dla-first) at the min-EDP point's power mode."""
    from scheduler.cost import build_cost_model
    from scheduler.policies import run_policy
    from scheduler.studies import plots
    from scheduler.timeline import simulate_timeline

    fastest = min(front, key=lambda p: p.latency_ms)
    frugal = min(front, key=lambda p: p.energy_mj)
    models = {}

    def model_at(mode: str):
        if mode not in models:
            models[mode] = build_cost_model(net, platform, mode, precision)
        return models[mode]

    charts = {"gantt_fastest.png": (fastest.power_mode, fastest.devices, f"fastest ({fastest.objective}, "
                                    f"{fastest.latency_ms:.3g} ms, {fastest.energy_mj:.3g} mJ)"),
              "gantt_lowest_energy.png": (frugal.power_mode, frugal.devices, f"lowest energy ({frugal.objective}, "
                                          f"{frugal.latency_ms:.3g} ms, {frugal.energy_mj:.3g} mJ)"),
              "gantt_dla_first.png": (None, run_policy("dla-first", edp_model).devices, "dla-first (TensorRT's "
                                      "default)")}
    for name, (mode, devices, what) in charts.items():
        model = edp_model if mode is None else model_at(mode)
        tl = simulate_timeline(model, devices, frames=args.frames)
        label = f"{title} at {mode or model.mode.name}: {what}, {args.frames} frames"
        _plot(out, name, lambda f, tl=tl, label=label: plots.gantt(tl, f, label))
    return list(charts)


def run_sweep_cmd(args) -> str:
    from engine.model_loading import load_network
    from scheduler.cost import build_cost_model
    from scheduler.platforms import get_platform
    from scheduler.policies import run_policy
    from scheduler.studies import plots
    from scheduler.timeline import simulate_timeline

    check_study_request(args)
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
    try:
        lambdas = [float(x) for x in args.lambdas.split(",")] if args.lambdas else [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]
    except ValueError:
        raise BuildError(f"--lambdas '{args.lambdas}' must be comma-separated numbers") from None
    if any(not lam >= 0 for lam in lambdas):
        raise BuildError(f"--lambdas '{args.lambdas}': every lambda must be >= 0")
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        from engine.ir.errors import UnsupportedError

        raise UnsupportedError("sweep draws its plots with matplotlib, which is not installed: "
                               "pip install 'hetrt[plots]'")
    out = sweep_output_dir(args.output)
    points, front = _sweep_points(args, platform.name, modes, precision.value, objectives, lambdas)
    res = {"model": args.model, "platform": platform.name, "precision": precision.value, "power_modes": modes,
           "objectives": objectives, "lambdas": lambdas, "clock": "simulated target",
           "points": [p.to_dict() for p in points], "front": [p.to_dict() for p in front]}
    atomic_write_text(out / "sweep.json", json.dumps(res, indent=1))
    title = f"{args.model} {precision.value} on {platform.name}"
    _plot(out, "pareto.png", lambda f: plots.pareto_plot(points, front, f,
                                                         title + ": latency-energy (Pareto front dashed)"))
    # the chosen placement: the front's EDP minimum
    best = min(front, key=lambda p: p.latency_ms * p.energy_mj)
    net = load_network(args.model)
    model = build_cost_model(net, platform.name, best.power_mode, precision)
    layers = [layer.name for layer in net.layers]
    rows = {"gpu-only": run_policy("gpu-only", model).devices, "dla-first": run_policy("dla-first", model).devices}
    for obj in ("latency", "energy", "edp"):
        rows[f"optimal {obj}"] = run_policy("optimal", model, obj).devices
    _plot(out, "placement.png", lambda f: plots.placement_strip(layers, rows, f,
                                                                f"{title} at {best.power_mode}: placements"))
    tl = simulate_timeline(model, best.devices, frames=args.frames)
    _plot(out, "gantt.png", lambda f: plots.gantt(tl, f, f"{title} at {best.power_mode}: min-EDP placement, "
                                                          f"{args.frames} frames"))
    atomic_write_text(out / "trace.json", json.dumps(tl.chrome_trace()))
    charts = _contrast_gantts(args, out, net, platform.name, precision, front, model, title)
    lines = [f"Sweep of {args.model} ({precision.value}) on {platform.name}: {len(points)} points over modes "
             f"{', '.join(modes)}; clock: simulated target",
             f"{'mode':<6} {'policy':<16} {'objective':<22} {'latency ms':>10} {'energy mJ':>10} {'DLA layers':>10}"]
    for p in front:
        lines.append(f"{p.power_mode:<6} {p.policy:<16} {p.objective:<22} {p.latency_ms:>10.4f} {p.energy_mj:>10.4f} "
                     f"{p.dla_layers:>10}")
    lines.append(f"min-EDP point: {best.power_mode} {best.objective}; timeline of {args.frames} frames: "
                 f"{tl.summary()['throughput_fps']:.0f} fps, {tl.summary()['average_power_w']:.2f} W")
    lines.append(f"wrote {out}/sweep.json, pareto.png, placement.png, gantt.png, {', '.join(charts)}, trace.json")
    return "\n".join(lines)
