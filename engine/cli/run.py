"""``hetrt run``: load a plan (or build a model) and measure inference trtexec-style."""

from __future__ import annotations

import argparse
import json
import time

from engine.caffe_parser.cli import add_cli_options as caffe_options
from engine.cli.args import add_build_options, add_inference_options
from engine.cli.build import EPILOG_MODEL
from engine.cli.common import (
    check_outputs,
    engine_inputs,
    load_engine,
    load_inputs,
    make_logger,
    parse_shapes,
    progress_bar,
    progress_enabled,
    random_inputs,
    write_npz,
)
from engine.ir.fileio import atomic_write_text
from engine.ir.logger import Logger

NAME = "run"
OUTPUT_FLAGS = ("export_profile", "export_layer_info", "export_times", "save_outputs")

EXPLANATIONS = [
    "Explanations of the performance metrics:",
    "  Throughput: timed inferences divided by Total Host Walltime.",
    "  Latency: wall-clock time of one synchronous execute() call (inputs in, outputs out).",
    "  Compute Time: the same call, labelled with the backends that executed it and the clock used.",
    "  Total Host Walltime: from the first timed inference to the end of the last one (warm-up excluded).",
    "  Total Compute Time: the sum of all timed latencies.",
    "  With --avg-runs N every latency is the mean of N consecutive inferences.",
    "  Simulated target: the placement's latency and energy on the target SoC's model (dla_sim for DLA "
    "layers, the platform's GPU model), not a measurement on this machine.",
]


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("run", help="run a plan (or build and run a model) and report performance",
                       epilog=EPILOG_MODEL + " A plan is recognised by its content (any extension, e.g. .plan or "
                       ".engine) and loaded as built; build options then do not apply (a warning says so). "
                       "Plans with DLA partitions compute their outputs once on dla_sim and report the "
                       "simulated target time per iteration (--simulate-every-iteration runs each one).",
                       description="Measure inference trtexec-style: throughput, latency percentiles, profile.")
    p.add_argument("model", metavar="PLAN|MODEL")
    add_build_options(p)
    caffe_options(p)
    add_inference_options(p)
    p.add_argument("--simulate-every-iteration", action="store_true",
                   help="DLA plans: run dla_sim's functional simulation on every iteration (slow; times the host)")
    return p


def run(args: argparse.Namespace) -> int:
    return run_engine(args)[0]


def run_engine(args: argparse.Namespace):
    """``hetrt run``'s work; returns (exit status, the engine it loaded or built once), so that
    reports on the same plan (``--dla-layers``) neither rebuild nor re-read it."""
    logger = make_logger(args)
    check_outputs(args, *OUTPUT_FLAGS)
    engine = load_engine(args.model, args, logger)
    context = engine.create_execution_context()
    specs = _run_shapes(args, engine, context, logger)
    feeds = load_inputs(args.load_inputs, random_inputs(specs, args.seed))
    batch = next((shape[0] for _, shape, _ in specs if shape), 1)
    simulated = _simulated_latency_ms(engine)
    has_dla = any(p.device == "dla" for p in engine.partitions)
    if has_dla and simulated is not None and not args.simulate_every_iteration:
        outputs = _run_dla_once(args, engine, context, feeds, batch, simulated, logger)
    else:
        outputs = None
        _measure_host(args, engine, context, feeds, batch, logger)
    for line in simulated_target_lines(engine):
        logger.info(line)
    if args.verbose:
        for line in EXPLANATIONS:
            logger.info(line)
    if args.dump_profile or args.export_profile:
        _profile(args, context, feeds, 1 if outputs is not None else args.profile_iterations, logger)
    if args.export_layer_info:
        atomic_write_text(args.export_layer_info, engine.layer_information("json"))
        logger.info(f"Wrote layer information to {args.export_layer_info}")
    if args.save_outputs:
        write_npz(args.save_outputs, outputs if outputs is not None else context.execute(feeds))
        logger.info(f"Wrote outputs to {args.save_outputs}")
    return 0, engine


def _run_shapes(args, engine, context, logger: Logger) -> list:
    """The inputs' (name, shape, dtype): a plan with optimization profiles runs in --profile N at
    --shapes (each inside the profile; default: the profile's opt shapes)."""
    if engine.is_dynamic:
        context.set_optimization_profile(args.profile)
        for name, shape in parse_shapes(args.shapes).items():
            context.set_input_shape(name, shape)
        at = ", ".join(f"{n}:{'x'.join(map(str, context.get_tensor_shape(n)))}" for n in engine.input_names)
        logger.info(f"Running at {at} (optimization profile {args.profile})")
    return [(name, context.get_tensor_shape(name), dtype) for name, _, dtype in engine_inputs(engine)]


def _measure_host(args, engine, context, feeds, batch: int, logger: Logger) -> None:
    from engine.perf import IterationTimer, LatencyStats, measure

    backend = "+".join(sorted({"dla_sim" if p.backend == "dla" else p.backend for p in engine.partitions}))
    logger.info(f"Running: warm-up {args.warmup:g} ms, at least {args.iterations} iterations and "
                f"{args.duration:g} s")
    timer = IterationTimer(context, feeds, args.no_data_transfers)
    if timer.no_data_transfers and not timer.device:
        logger.info("--no-data-transfers: this engine runs on the host; there are no transfers to leave out")
    bar = _bar(args, "inferences", None)
    step = (lambda: (timer(), bar.update(1))) if bar is not None else timer
    try:
        result = measure(step, warmup_ms=args.warmup, iterations=args.iterations * args.avg_runs,
                         duration_s=args.duration)
    finally:
        if bar is not None:
            bar.close()
    if args.avg_runs > 1:
        n = args.avg_runs
        lat = result.latencies_ms[: len(result.latencies_ms) // n * n]
        result.stats = LatencyStats.from_ms([sum(lat[i:i + n]) / n for i in range(0, len(lat), n)])
    for line in result.summary(backend, batch).splitlines():
        logger.info(line)
    if args.avg_runs > 1:
        logger.info(f"Latencies are means of {args.avg_runs} consecutive inferences (--avg-runs)")
    if args.export_times:  # trtexec's --exportTimes: one record per timed iteration (after the warm-up)
        atomic_write_text(args.export_times, json.dumps(timer.records[result.warmup_iterations:], indent=2))


def _run_dla_once(args, engine, context, feeds, batch: int, latency_ms: float, logger: Logger) -> dict:
    """DLA partitions: one functional simulation for the outputs; per-iteration time from the simulator."""
    logger.info("Running: the plan has DLA partitions; computing the outputs once with dla_sim's functional "
                f"simulation (per-iteration time comes from the {_clock(engine)})")
    t0 = time.perf_counter()
    outputs = context.execute(feeds)
    host_s = time.perf_counter() - t0
    n = args.iterations
    logger.info(f"=== Performance summary ({_clock(engine)}) ===")
    logger.info(f"Throughput: {1e3 / latency_ms:.5g} qps ({1e3 * batch / latency_ms:.5g} images/s at batch "
                f"{batch})")
    logger.info(f"Latency: min = max = mean = median = {latency_ms:.5g} ms per inference (deterministic "
                f"simulation, {n} iterations)")
    backend = "+".join(sorted({"dla_sim" if p.backend == "dla" else p.backend for p in engine.partitions}))
    logger.info(f"Compute Time ({backend} backend, host clock): {host_s * 1e3:.5g} ms for the one functional "
                f"simulation of this host (not a performance figure of the target)")
    if args.export_times:
        doc = {"clock": _clock(engine), "iterations": n, "throughput_qps": 1e3 / latency_ms,
               "latency_ms": {"min": latency_ms, "max": latency_ms, "mean": latency_ms, "median": latency_ms},
               "host_functional_simulation_s": host_s}
        atomic_write_text(args.export_times, json.dumps(doc, indent=2))
    return outputs


def _profile(args, context, feeds, runs: int, logger: Logger) -> None:
    from engine.profiler import Profiler

    profiler = Profiler()
    context.profiler = profiler
    bar = _bar(args, "profiled inferences", runs)
    try:
        for _ in range(runs):
            context.execute(feeds)
            if bar is not None:
                bar.update(1)
    finally:
        context.profiler = None
        if bar is not None:
            bar.close()
    if args.dump_profile:
        for line in profiler.report().splitlines():
            logger.info(line)
    if args.export_profile:
        # trtexec's --exportProfile layout: a count record, then one record per layer
        atomic_write_text(args.export_profile, json.dumps([{"count": runs}, *profiler.to_dict()], indent=2))
        logger.info(f"Wrote per-layer profile to {args.export_profile}")


def _bar(args, unit: str, total: int | None):
    return progress_bar(unit.capitalize(), total) if progress_enabled(args) else None


def _clock(engine) -> str:
    placement = engine.placement if isinstance(engine.placement, dict) else {}
    return "placement model clock" if placement.get("platform") == "host" else "simulated target clock"


def _clock_detail(placement: dict) -> str:
    if placement.get("platform") == "host":
        return "clock: DLA layers simulated by dla_sim, GPU layers measured on this machine"
    return "simulated clock: dla_sim for the DLA, the platform's GPU model"


def _simulated_latency_ms(engine) -> float | None:
    placement = engine.placement if isinstance(engine.placement, dict) else {}
    value = (placement.get("objective_values") or {}).get("latency_ms")
    return float(value) if value else None


def simulated_target_lines(engine) -> list[str]:
    """The second clock: what the placement costs on the target SoC, as the builder's solver priced it."""
    placement = engine.placement if isinstance(engine.placement, dict) else {}
    values = placement.get("objective_values") or {}
    if "latency_ms" not in values:
        return []
    head = "Placement model" if placement.get("platform") == "host" else "Simulated target"
    lines = [f"{head} ({placement.get('platform')} {placement.get('power_mode')}, "
             f"{placement.get('precision')}, placement {placement.get('policy')}): "
             f"latency {values['latency_ms']:.5g} ms per inference"]
    if "energy_mj" in values:
        watts = values["energy_mj"] / values["latency_ms"] if values["latency_ms"] else float("nan")
        lines[0] += f", energy {values['energy_mj']:.5g} mJ, average power {watts:.3g} W"
    if "transitions" in values:
        lines.append(f"  {values['transitions']} GPU<->DLA transitions, DLA loadables per core "
                     f"{values.get('loadables', {})} ({_clock_detail(placement)})")
    return lines
