"""The ``hetrt`` command: build, run, inspect, compare, demo (trtexec and Polygraphy in spirit)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx

from engine.ir.dtypes import Precision
from engine.ir.errors import HetrtError, UnsupportedError
from engine.ir.logger import Logger, Severity

EPILOG_MODEL = ("MODEL is an .onnx file or the name of a bundled model "
                "(resnet18, resnet18_small, resnet50, mobilenet_v2; generated in code with seeded weights).")


# ----------------------------------------------------------------------------- helpers


def _parse_shapes(spec: str | None) -> dict[str, tuple[int, ...]]:
    """trtexec's --shapes syntax: name:1x3x224x224,other:1x10."""
    shapes: dict[str, tuple[int, ...]] = {}
    if not spec:
        return shapes
    for item in spec.split(","):
        name, sep, dims = item.rpartition(":")
        if not sep or not name:
            raise HetrtError(f"--shapes entry '{item}' must look like name:1x3x224x224")
        try:
            shapes[name] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise HetrtError(f"--shapes entry '{item}': dims must be integers separated by 'x'") from None
    return shapes


def _parse_profiles(args: argparse.Namespace) -> list:
    """--min-shapes/--opt-shapes/--max-shapes (trtexec's): the i-th of each makes optimization profile i;
    a missing --opt-shapes is the max, a missing --min-shapes or --max-shapes is the opt."""
    from engine.ir.profiles import OptimizationProfile

    mins, opts, maxs = (getattr(args, k, None) or [] for k in ("min_shapes", "opt_shapes", "max_shapes"))
    profiles = []
    for i in range(max(len(mins), len(opts), len(maxs))):
        lo, op, hi = (_parse_shapes(specs[i]) if i < len(specs) else {} for specs in (mins, opts, maxs))
        profile = OptimizationProfile()
        for name in dict.fromkeys([*lo, *op, *hi]):
            opt = op.get(name, hi.get(name, lo.get(name)))
            profile.set_shape(name, lo.get(name, opt), opt, hi.get(name, opt))
        profiles.append(profile)
    return profiles


def _parse_layer_precisions(items: list[str] | None) -> dict[str, Precision]:
    out: dict[str, Precision] = {}
    for item in items or []:
        name, sep, prec = item.rpartition(":")
        if not sep or not name:
            raise HetrtError(f"--layer-precision '{item}' must look like LAYER:fp16")
        try:
            out[name] = Precision(prec.lower())
        except ValueError:
            raise HetrtError(f"--layer-precision '{item}': precision must be fp32, fp16 or int8") from None
    return out


def _load_model(spec: str) -> onnx.ModelProto | str:
    """An .onnx path stays a path (external data resolves relative to it); a bundled name builds."""
    if spec.endswith(".prototxt"):
        raise HetrtError(f"'{spec}' is a Caffe model: build, run and place take it; compare and demo need an ONNX "
                         f"model (ONNX Runtime is their reference)")
    if os.path.exists(spec):
        return spec
    from engine.models import MODELS, build_model

    if spec in MODELS:
        return build_model(spec)
    raise HetrtError(f"model '{spec}' is neither a file nor a bundled model ({', '.join(sorted(MODELS))})")


def _config_from_args(args: argparse.Namespace):
    from engine.builder import BuilderConfig

    calib_dir, calib_cache = getattr(args, "calib", None), getattr(args, "calib_cache", None)
    calibrator = None
    if (calib_dir or calib_cache) and not args.int8:
        raise HetrtError("--calib and --calib-cache need --int8")
    if calib_dir:
        from engine.quantization import make_calibrator

        if not os.path.isdir(calib_dir):
            raise HetrtError(f"--calib '{calib_dir}' is not a directory of .npy files")
        calibrator = make_calibrator(getattr(args, "calibrator", "entropy"), calib_dir, calib_cache)
    profiles = _parse_profiles(args)  # with profiles, --shapes picks the shapes 'hetrt run' runs at
    return BuilderConfig(fp16=args.fp16, int8=args.int8, batch=args.batch, profiles=profiles,
                         input_shapes={} if profiles else _parse_shapes(args.shapes),
                         platform=args.platform, memory_limit=args.memory_limit,
                         layer_precisions=_parse_layer_precisions(getattr(args, "layer_precision", None)),
                         optimize=not getattr(args, "no_optimize", False), calibrator=calibrator,
                         calibration_cache=calib_cache, refittable=getattr(args, "refit", False),
                         **_placement_options(args))


def _placement_options(args: argparse.Namespace) -> dict:
    """trtexec's --useDLACore/--allowGPUFallback, plus hetrt's placement policy, objective, power mode."""
    core = getattr(args, "use_dla_core", None)
    options = {"power_mode": getattr(args, "power_mode", None), "objective": getattr(args, "objective", "latency"),
               "placement_policy": getattr(args, "placement", None)}
    if core is not None:
        options.update(default_device="dla", dla_core=core, gpu_fallback=getattr(args, "allow_gpu_fallback", False))
    elif getattr(args, "allow_gpu_fallback", False):
        raise HetrtError("--allow-gpu-fallback only applies with --use-dla-core N")
    return options


def _load_plugins(args: argparse.Namespace) -> None:
    """Import each ``--plugins FILE.py`` (trtexec's --plugins): the user asks for that code to run."""
    files = getattr(args, "plugins", None)
    if files:
        from engine.plugin import load_plugin_files

        load_plugin_files(files)


def _add_plugin_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugins", action="append", metavar="FILE.py",
                   help="import this Python file first; it registers plugins with engine.plugin (repeatable)")


def _logger(args: argparse.Namespace) -> Logger:
    return Logger(Severity.VERBOSE if getattr(args, "verbose", False) else Severity.INFO, stream=sys.stdout)


def _build_plan(model_spec: str, args: argparse.Namespace, logger: Logger) -> bytes:
    from engine.builder import build_from_onnx
    from engine.caffe_parser import cli as caffe_cli

    caffe_plan = caffe_cli.build_plan(model_spec, args, _config_from_args(args), logger)
    if caffe_plan is not None:
        return caffe_plan
    return build_from_onnx(_load_model(model_spec), _config_from_args(args), logger)


def _random_inputs(engine, seed: int, shapes: dict | None = None) -> dict[str, np.ndarray]:
    """Seeded random inputs at the engine's shapes, or at ``shapes`` (an input name -> shape)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for t in engine.io_tensors:
        if t.mode != "input":
            continue
        dtype = np.dtype(t.dtype.numpy if hasattr(t.dtype, "numpy") else t.dtype)
        shape = (shapes or {}).get(t.name, t.shape)
        if dtype.kind == "f":
            feeds[t.name] = rng.uniform(-1.0, 1.0, shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[t.name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            feeds[t.name] = rng.integers(0, 10, shape).astype(dtype)
    return feeds


def _load_inputs(spec: list[str] | None, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for item in spec or []:
        name, sep, path = item.partition(":")
        if not sep:
            raise HetrtError(f"--load-inputs '{item}' must look like name:file.npy")
        if name not in feeds:
            raise HetrtError(f"--load-inputs names '{name}', which is not an input (inputs: {', '.join(feeds)})")
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise HetrtError(f"cannot load input '{name}' from {path}: {e}") from None
    return feeds


# ----------------------------------------------------------------------------- subcommands


def cmd_build(args: argparse.Namespace) -> int:
    logger = _logger(args)
    t0 = time.perf_counter()
    data = _build_plan(args.model, args, logger)
    out = args.output or (Path(args.model).stem + ".plan")
    Path(out).write_bytes(data)
    logger.info(f"Wrote plan {out} ({len(data) / 2**20:.2f} MiB) in {time.perf_counter() - t0:.2f} s")
    if args.export_layer_info:
        from engine.runtime import Runtime

        engine = Runtime(logger).deserialize(data)
        Path(args.export_layer_info).write_text(engine.layer_information("json"))
        logger.info(f"Wrote layer information to {args.export_layer_info}")
    return 0


def _engine_from(args: argparse.Namespace, logger: Logger):
    from engine.runtime import Runtime

    if args.model.endswith(".plan"):
        try:
            data = Path(args.model).read_bytes()
        except OSError as e:
            raise HetrtError(f"cannot read plan {args.model}: {e.strerror}") from None
        logger.info(f"Loaded plan {args.model} ({len(data) / 2**20:.2f} MiB)")
    else:
        data = _build_plan(args.model, args, logger)
    return Runtime(logger).deserialize(data)


def cmd_run(args: argparse.Namespace) -> int:
    from engine.perf import IterationTimer, measure
    from engine.profiler import Profiler

    logger = _logger(args)
    engine = _engine_from(args, logger)
    context = engine.create_execution_context()
    if engine.is_dynamic:  # --profile selects the profile, --shapes the shapes inside it (default: its opt)
        context.set_optimization_profile(getattr(args, "profile", 0))
        for name, shape in _parse_shapes(getattr(args, "shapes", None)).items():
            context.set_input_shape(name, shape)
        at = ", ".join(f"{n}:{'x'.join(map(str, context.get_tensor_shape(n)))}" for n in engine.input_names)
        logger.info(f"Running at {at} (optimization profile {context.optimization_profile})")
    shapes = {n: context.get_tensor_shape(n) for n in engine.input_names}
    feeds = _load_inputs(args.load_inputs, _random_inputs(engine, args.seed, shapes))
    timer = IterationTimer(context, feeds, getattr(args, "no_data_transfers", False))
    if timer.no_data_transfers and not timer.device:
        logger.info("--no-data-transfers: this engine runs on the host; there are no transfers to leave out")
    batch = next((s[0] for s in shapes.values() if s), 1)
    # Which backends executed: the host clock times them (for DLA partitions, dla_sim's functional
    # simulation on this CPU; the DLA's own time is the simulated target clock printed below).
    backend = "+".join(sorted({"dla_sim" if p.backend == "dla" else p.backend for p in engine.partitions}))
    logger.info(f"Running: warm-up {args.warmup} ms, at least {args.iterations} iterations and {args.duration} s")
    result = measure(timer, warmup_ms=args.warmup, iterations=args.iterations, duration_s=args.duration)
    for line in result.summary(backend, batch).splitlines():
        logger.info(line)
    for line in _simulated_target_lines(engine):
        logger.info(line)
    if args.dump_profile or args.export_profile:
        profiler = Profiler()
        context.profiler = profiler
        runs = max(1, min(result.stats.count, args.profile_iterations))
        for _ in range(runs):
            context.execute(feeds)
        context.profiler = None
        if args.dump_profile:
            for line in profiler.report().splitlines():
                logger.info(line)
        if args.export_profile:
            # trtexec's --exportProfile layout: a count record, then one record per layer
            Path(args.export_profile).write_text(json.dumps([{"count": runs}, *profiler.to_dict()], indent=2))
            logger.info(f"Wrote per-layer profile to {args.export_profile}")
    if args.export_layer_info:
        Path(args.export_layer_info).write_text(engine.layer_information("json"))
        logger.info(f"Wrote layer information to {args.export_layer_info}")
    if args.export_times:  # trtexec's --exportTimes: one record per timed iteration (after the warm-up)
        Path(args.export_times).write_text(json.dumps(timer.records[result.warmup_iterations:], indent=2))
    if args.save_outputs:
        outputs = context.execute(feeds)
        np.savez(args.save_outputs, **outputs)
        logger.info(f"Wrote outputs to {args.save_outputs}")
    return 0


def _simulated_target_lines(engine) -> list[str]:
    """The second clock: what the placement costs on the target SoC, as the builder's solver priced it."""
    placement = engine.placement if isinstance(engine.placement, dict) else {}
    values = placement.get("objective_values") or {}
    if "latency_ms" not in values:
        return []
    lines = [f"Simulated target ({placement.get('platform')} {placement.get('power_mode')}, "
             f"{placement.get('precision')}, placement {placement.get('policy')}): "
             f"latency {values['latency_ms']:.5g} ms per inference"]
    if "energy_mj" in values:
        watts = values["energy_mj"] / values["latency_ms"] if values["latency_ms"] else float("nan")
        lines[0] += f", energy {values['energy_mj']:.5g} mJ, average power {watts:.3g} W"
    if "transitions" in values:
        lines.append(f"  {values['transitions']} GPU<->DLA transitions, DLA loadables per core "
                     f"{values.get('loadables', {})} (simulated clock: dla_sim for the DLA, the platform's GPU model)")
    return lines


def cmd_inspect(args: argparse.Namespace) -> int:
    from engine.runtime import Runtime

    try:
        data = Path(args.plan).read_bytes()
    except OSError as e:
        raise HetrtError(f"cannot read plan {args.plan}: {e.strerror}") from None
    engine = Runtime(Logger(Severity.WARNING)).deserialize(data)
    if args.format == "json":
        print(json.dumps({"engine": json.loads(engine.engine_information()),
                          "layers": json.loads(engine.layer_information("json"))}, indent=2))
        return 0
    if args.format == "summary":
        print(_inspect_summary(engine))
    print(engine.layer_information("oneline"))
    return 0


def _inspect_summary(engine) -> str:
    """A few lines a person can read: what the plan is, its I/O, memory, devices and precisions."""
    from collections import Counter

    info = json.loads(engine.engine_information())
    lines = [f"Engine '{info['Name']}': platform {info['Platform']}, plan format {info['PlanFormat']}, "
             f"built by {info['Producer']}, {info['NumLayers']} layers"]
    for b in info["Bindings"]:
        dims = "x".join(str(d) for d in b["Dimensions"])
        lines.append(f"  {b['Mode']:6s} {b['Name']}: {dims} {b['Datatype']}")
    for i, profile in enumerate(info.get("OptimizationProfiles", [])):
        lines.append(f"  optimization profile {i}: " + "; ".join(
            f"{n} min {'x'.join(map(str, r['min']))} opt {'x'.join(map(str, r['opt']))} max "
            f"{'x'.join(map(str, r['max']))}" for n, r in profile.items()))
    lines.append(f"  activation memory {info['DeviceMemorySize'] / 2**20:.2f} MiB "
                 f"(without reuse {info['ActivationBytesWithoutReuse'] / 2**20:.2f} MiB)")
    for p in info.get("Partitions", []):
        why = f" (host: {p['Reason']})" if p.get("Reason") else ""
        lines.append(f"  partition {p['Name']}: {p['Device']} on the {p['Backend']} backend, {p['NumLayers']} "
                     f"layers{why}")
    precisions = Counter(str(la.precision.value if la.precision else "none") for la in engine.network.layers)
    lines.append("  precisions: " + ", ".join(f"{n} {k}" for k, n in sorted(precisions.items())))
    return "\n".join(lines) + "\n"


def cmd_compare(args: argparse.Namespace) -> int:
    from engine.builder import build_from_onnx
    from engine.compare import DEFAULT_RTOL, compare_arrays, onnxruntime_outputs
    from engine.runtime import Runtime

    logger = _logger(args)
    model = _load_model(args.model)
    proto = onnx.load(model) if isinstance(model, str) else model
    config = _config_from_args(args)
    data = build_from_onnx(model, config, logger)
    engine = Runtime(logger).deserialize(data)
    feeds = _load_inputs(args.load_inputs, _random_inputs(engine, args.seed))
    ours = engine.create_execution_context().execute(feeds)
    custom = sorted({n.domain for n in proto.graph.node if n.domain not in ("", "ai.onnx")})
    if custom:
        raise UnsupportedError(f"compare needs ONNX Runtime to run every node, and nodes of domain(s) "
                               f"{', '.join(custom)} run as hetrt plugins only; check their outputs against your "
                               f"own reference (hetrt run --save-outputs)")
    ref = onnxruntime_outputs(proto.SerializeToString(), feeds)
    if getattr(args, "per_layer", False):
        return _compare_per_layer(args, model, config, data, feeds, logger)
    rtol = args.rtol if args.rtol is not None else (INT8_RTOL if args.int8 else
                                                    DEFAULT_RTOL["fp16" if args.fp16 else "fp32"])
    all_ok = True
    for name, value in ours.items():
        if name not in ref:
            raise HetrtError(f"output '{name}' is missing from ONNX Runtime's outputs")
        cmp = compare_arrays(name, value, ref[name], rtol, args.atol)
        all_ok &= cmp.passed
        for line in cmp.report().splitlines():
            logger.info(line)
    logger.info(("PASSED | All outputs matched" if all_ok else "FAILED | Some outputs differ")
                + f" | Outputs: {list(ours)}")
    return 0 if all_ok else 1


INT8_RTOL = 0.1  # int8 outputs: a tenth of the output's magnitude (atol = rtol * max|ref|)


def _compare_per_layer(args, model, config, data: bytes, feeds, logger: Logger) -> int:
    """Every tensor of the built plan against the same network in FP32 (Polygraphy-style
    --validate per layer): SQNR and max error per layer, in execution order, so the layers where
    error enters can be pinned with --layer-precision NAME:fp16."""
    from dataclasses import replace as dc_replace

    from engine import plan as plan_format
    from engine.builder import build_from_onnx
    from engine.quantization.per_layer import compare_networks, format_rows

    fp32_cfg = dc_replace(config, fp16=False, int8=False, calibrator=None, calibration_cache=None,
                          layer_precisions={})
    quiet = Logger(Severity.WARNING)
    ref_net = plan_format.deserialize(build_from_onnx(model, fp32_cfg, quiet)).network
    net = plan_format.deserialize(data).network
    rows = compare_networks(ref_net, net, feeds)
    for line in format_rows(rows, args.sqnr_threshold).splitlines():
        logger.info(line)
    bad = [r for r in rows if r.sqnr_db < args.sqnr_threshold]
    logger.info(("PASSED" if not bad else "FAILED") + f" | {len(rows) - len(bad)}/{len(rows)} layers at SQNR >= "
                f"{args.sqnr_threshold:g} dB")
    return 0 if not bad else 1


def cmd_demo(args: argparse.Namespace) -> int:
    """Build the bundled default model, run it trtexec-style, and compare it with ONNX Runtime."""
    from engine.models.zoo import DEFAULT_MODEL

    args.model = args.model or DEFAULT_MODEL
    logger = _logger(args)
    logger.info(f"hetrt demo: bundled model '{args.model}' (build → plan → load → run → compare)")
    plan_path = Path(args.output or f"{args.model}.plan")
    build_args = argparse.Namespace(**{**vars(args), "output": str(plan_path), "export_layer_info": None})
    cmd_build(build_args)
    run_args = argparse.Namespace(**{**vars(args), "model": str(plan_path), "load_inputs": None,
                                     "export_layer_info": None, "export_times": None, "save_outputs": None})
    cmd_run(run_args)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        logger.info("ONNX Runtime not installed: skipping the comparison (pip install 'hetrt[test]')")
        return 0
    return cmd_compare(argparse.Namespace(**{**vars(args), "load_inputs": None, "rtol": None, "atol": None}))


def cmd_place(args: argparse.Namespace) -> int:
    """Per-layer GPU/DLA placement on a Jetson platform model (scheduler.studies.place_report)."""
    from engine.cli_studies import run_place

    print(run_place(args))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Latency-energy Pareto sweep over objectives, lambda and power modes (scheduler.studies.sweep)."""
    from engine.cli_studies import run_sweep_cmd

    print(run_sweep_cmd(args))
    return 0


def _add_placement_options(p: argparse.ArgumentParser, several_models: bool = False) -> None:
    if several_models:
        p.add_argument("model", metavar="MODEL", nargs="+", help="one model; 2 or 3 with --policy concurrent")
    else:
        p.add_argument("model", metavar="MODEL")
    p.add_argument("--platform", default="orin-agx-64gb", help="orin-agx-64gb (default), xavier-agx or host")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--fp16", action="store_true", help="cost FP16 layers (the DLA runs FP16 and INT8 only)")
    prec.add_argument("--int8", action="store_true",
                      help="cost INT8 layers (timing needs shapes only, no calibration scales)")


# ----------------------------------------------------------------------------- argument parsing


def _add_build_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("build options")
    g.add_argument("--fp16", action="store_true", help="allow FP16 layers (FP32 otherwise)")
    g.add_argument("--int8", action="store_true",
                   help="allow INT8 layers: scales from Q/DQ in the model, --calib-cache or --calib; with --fp16, "
                        "layers INT8 cannot run use FP16")
    g.add_argument("--calib", metavar="DIR", default=None,
                   help="calibration data: a directory of .npy batches (one sub-directory per input when there are "
                        "several)")
    g.add_argument("--calib-cache", metavar="FILE", default=None,
                   help="calibration cache: read when it exists, else written after calibrating with --calib")
    g.add_argument("--calibrator", choices=("entropy", "minmax", "percentile"), default="entropy",
                   help="range calibration algorithm (default entropy, TensorRT's entropy calibration)")
    g.add_argument("--batch", type=int, default=None,
                   help="batch size for inputs with a symbolic first dim (default 1)")
    g.add_argument("--shapes", default=None, metavar="SPEC",
                   help="fixed input shapes, trtexec syntax: name:1x3x224x224[,name2:...]; with --min/--opt/"
                        "--max-shapes (or a plan built with them), the shapes 'hetrt run' runs at")
    for which in ("min", "opt", "max"):
        g.add_argument(f"--{which}-shapes", action="append", default=None, metavar="SPEC",
                       help=f"{which} shapes of an optimization profile (trtexec's --{which}Shapes), e.g. "
                            f"x:{ {'min': '1x3x32x32', 'opt': '4x3x64x64', 'max': '8x3x128x128'}[which]}[,y:...]; "
                            f"repeat the three flags for more profiles (the i-th of each makes profile i)")
    g.add_argument("--platform", default="host",
                   help="target platform tag recorded in the plan (host, orin-agx-64gb, xavier-agx)")
    g.add_argument("--memory-limit", type=int, default=None, metavar="BYTES",
                   help="fail the build if activation memory exceeds this many bytes")
    g.add_argument("--use-dla-core", type=int, default=None, metavar="N",
                   help="make DLA core N the default device (trtexec's --useDLACore); needs --fp16 or --int8 and a "
                        "platform with DLA cores (--platform orin-agx-64gb|xavier-agx|host)")
    g.add_argument("--allow-gpu-fallback", action="store_true",
                   help="with --use-dla-core: layers the DLA cannot run go to the GPU instead of failing the build")
    g.add_argument("--placement", choices=("gpu-only", "dla-first", "best-single-cut", "optimal", "pipeline"),
                   default=None, help="placement policy (default: dla-first with --use-dla-core, else gpu-only)")
    g.add_argument("--objective", choices=("latency", "energy", "edp"), default="latency",
                   help="what --placement optimal minimises on the simulated target (default latency)")
    g.add_argument("--power-mode", default=None, metavar="MODE",
                   help="power mode of the platform (e.g. 15W, 30W, 50W, MAXN; default: the platform's default)")
    g.add_argument("--layer-precision", action="append", metavar="LAYER:PREC",
                   help="pin a layer (by name or ONNX node name) to fp32/fp16; repeatable")
    g.add_argument("--no-optimize", action="store_true", help="skip graph optimization (for debugging)")
    g.add_argument("--refit", action="store_true",
                   help="build a refittable plan (weights can be replaced later with engine.refit.Refitter)")
    _add_plugin_option(p)
    g.add_argument("--verbose", "-v", action="store_true", help="log every fusion and removal, TensorRT-style")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inference options")
    g.add_argument("--iterations", type=int, default=10, help="run at least N inferences (default 10)")
    g.add_argument("--warmup", type=float, default=200.0, metavar="MS", help="warm up for MS ms (default 200)")
    g.add_argument("--duration", type=float, default=3.0, metavar="S", help="run for at least S seconds (default 3)")
    g.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    g.add_argument("--load-inputs", action="append", metavar="NAME:FILE.npy", help="use this .npy for an input")
    g.add_argument("--dump-profile", action="store_true", help="print the per-layer profile")
    g.add_argument("--profile-iterations", type=int, default=20, help="iterations of the profiled run (default 20)")
    g.add_argument("--export-profile", metavar="FILE", help="write the per-layer profile as JSON")
    g.add_argument("--export-layer-info", metavar="FILE", help="write layer information (engine inspector JSON)")
    g.add_argument("--export-times", metavar="FILE",
                   help="write per-iteration times as JSON (trtexec's: enqueue, H2D, compute and D2H of each "
                        "timed iteration, ms)")
    g.add_argument("--no-data-transfers", action="store_true",
                   help="GPU engines: stage the inputs on the device once and leave the host<->device copies out of "
                        "every iteration (trtexec's --noDataTransfers)")
    g.add_argument("--profile", type=int, default=0, metavar="N",
                   help="optimization profile to run with (plans built with --min/--opt/--max-shapes; default 0)")
    g.add_argument("--save-outputs", metavar="FILE.npz", help="write the outputs of one inference")


def make_parser() -> argparse.ArgumentParser:
    from engine.caffe_parser.cli import add_cli_options as caffe_options

    parser = argparse.ArgumentParser(
        prog="hetrt", description="hetrt: build, run and inspect inference plans (GPU + simulated DLA).",
        epilog="Run 'hetrt COMMAND --help' for the options of each command.")
    from engine import __version__

    parser.add_argument("--version", action="version", version=f"hetrt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("build", help="build a plan from an ONNX model", epilog=EPILOG_MODEL,
                       description="Parse MODEL, optimize it, and write a serialized plan.")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("-o", dest="output", metavar="PLAN", help="plan file to write (default MODEL.plan)")
    p.add_argument("--export-layer-info", metavar="FILE", help="write layer information (engine inspector JSON)")
    _add_build_options(p)
    caffe_options(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("run", help="run a plan (or build and run a model) and report performance",
                       epilog=EPILOG_MODEL + " A .plan file is loaded as built; build options then do not apply.",
                       description="Measure inference trtexec-style: throughput, latency percentiles, profile.")
    p.add_argument("model", metavar="MODEL.plan|MODEL")
    _add_build_options(p)
    caffe_options(p)
    _add_run_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("inspect", help="show a plan's I/O, layers, precisions and placement",
                       description="Print a plan's engine information and its layers (engine inspector).")
    p.add_argument("plan", metavar="MODEL.plan")
    _add_plugin_option(p)
    p.add_argument("--format", choices=("summary", "oneline", "json"), default="summary",
                   help="summary: engine info + one line per layer; oneline: layers only; json: everything")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("compare", help="compare hetrt's outputs with ONNX Runtime's", epilog=EPILOG_MODEL,
                       description="Build MODEL, run it and ONNX Runtime (CPU) on the same random inputs, and "
                                   "check |hetrt - ref| <= atol + rtol*|ref| per element (Polygraphy-style).")
    p.add_argument("model", metavar="MODEL")
    _add_build_options(p)
    p.add_argument("--rtol", type=float, default=None, help="relative tolerance (default 1e-5 fp32, 1e-2 fp16)")
    p.add_argument("--atol", type=float, default=None, help="absolute tolerance (default rtol * max|reference|)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--load-inputs", action="append", metavar="NAME:FILE.npy", help="use this .npy for an input")
    p.add_argument("--per-layer", action="store_true",
                   help="compare every layer's output with the FP32 network (SQNR per layer) to find where error "
                        "enters")
    p.add_argument("--sqnr-threshold", type=float, default=30.0, metavar="DB",
                   help="with --per-layer: flag layers below this SQNR (default 30 dB)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("demo", help="build, run and check the bundled default model (ResNet-18)",
                       description="The main job on a bundled model: build a plan, run it trtexec-style, "
                                   "and compare it with ONNX Runtime.", epilog=EPILOG_MODEL)
    p.add_argument("--model", default=None, help="bundled model or .onnx file (default resnet18)")
    p.add_argument("-o", "--output", metavar="PLAN", help="plan file to write (default MODEL.plan)")
    _add_build_options(p)
    _add_run_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("place", help="place layers on GPU/DLA for a platform and print the per-layer table",
                       epilog=EPILOG_MODEL, description="Cost every layer on the GPU and the DLA cores of a "
                       "platform model (simulated clock) and print the exact optimal placement for the objective, "
                       "against gpu-only, dla-first (TensorRT's default) and the best single-cut placement; "
                       "--policy pipeline: stages over GPU + DLA cores for a stream of frames; --policy concurrent: "
                       "2 or 3 models at once with the contention model.")
    _add_placement_options(p, several_models=True)
    p.add_argument("--policy", default="optimal", choices=("optimal", "pipeline", "concurrent"),
                   help="optimal (default, one inference), pipeline (stream of frames) or concurrent (several models)")
    p.add_argument("--frames", type=int, default=100, help="frames of the pipeline policy (default 100)")
    p.add_argument("--power-mode", default=None, help="nvpmodel mode, e.g. 15W, 30W, 50W, MAXN (default MAXN)")
    p.add_argument("--objective", default="latency", help="latency, energy, edp or weighted (latency + lambda*energy)")
    p.add_argument("--lambda", dest="lam", type=float, default=None, help="lambda of the weighted objective (ms/mJ)")
    p.add_argument("--deadline", type=float, default=None, metavar="MS", help="latency limit per inference")
    p.add_argument("--energy-budget", type=float, default=None, metavar="MJ", help="energy limit per inference")
    p.add_argument("--max-transitions", type=int, default=None, metavar="N", help="limit GPU<->DLA hand-offs")
    p.set_defaults(func=cmd_place)

    p = sub.add_parser("sweep", help="latency-energy Pareto front over objectives, lambda and power modes",
                       epilog=EPILOG_MODEL, description="Solve the exact placement for every objective and power "
                       "mode (in parallel over CPU cores) and write sweep.json, pareto.png, placement.png, "
                       "gantt.png and trace.json (Chrome/Perfetto) into DIR.")
    _add_placement_options(p)
    p.add_argument("--power-modes", default="all", help="comma-separated modes or 'all' (default)")
    p.add_argument("--objectives", default="latency,energy,edp,weighted", help="comma-separated objectives")
    p.add_argument("--lambdas", default=None, help="comma-separated lambdas of the weighted objective")
    p.add_argument("--frames", type=int, default=2, help="frames in the Gantt chart and trace (default 2)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: min(modes, CPU cores))")
    p.add_argument("--cluster", metavar="ADDRESS", help="run the power modes as Ray tasks: 'local-ray' or ray://HOST:PORT")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    p.set_defaults(func=cmd_sweep)
    from engine.cli_eval import add_parsers as add_eval_parsers

    add_eval_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        _load_plugins(args)
        return args.func(args)
    except HetrtError as e:
        print(f"[E] {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
