"""What several subcommands share: reading models and plans, building, inputs, writing outputs."""

from __future__ import annotations

import argparse
import fnmatch
import io
import os
import sys
from pathlib import Path

import numpy as np
import onnx

from engine.cli.args import build_flags_given
from engine.ir.dtypes import Precision
from engine.ir.errors import BuildError, ExecutionError, HetrtError, ParserError, PlanError
from engine.ir.fileio import atomic_write_bytes, check_writable
from engine.ir.logger import Logger, Severity

PLAN_MAGIC = b"HETRTPLN"  # engine.plan.MAGIC; repeated here so sniffing a file needs no plan import


# ----------------------------------------------------------------------------- logging


def make_logger(args: argparse.Namespace) -> Logger:
    logger = Logger(Severity.VERBOSE if getattr(args, "verbose", False) else Severity.INFO, stream=sys.stdout)
    if progress_enabled(args):
        logger.progress_factory = progress_bar
    return logger


def progress_enabled(args: argparse.Namespace) -> bool:
    """Progress bars go to stderr, only on a terminal and without --quiet."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def progress_bar(what: str, total: int | None = None):
    """A tqdm bar on stderr that disappears when done (calibration, long runs, profiling)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=what, leave=False, dynamic_ncols=True, file=sys.stderr)


# ----------------------------------------------------------------------------- files


def check_outputs(args: argparse.Namespace, *flags: str) -> None:
    """Fail before any work when an output flag names a file that cannot be written."""
    for flag in flags:
        value = getattr(args, flag, None)
        if value:
            check_writable(value)


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def read_bytes(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except IsADirectoryError:
        raise HetrtError(f"cannot read {what} {path}: it is a directory") from None
    except OSError as e:
        raise HetrtError(f"cannot read {what} {path}: {e.strerror or e}") from None


def is_plan_file(path: str) -> bool:
    """A plan is recognised by its magic bytes, whatever its extension (.plan, .engine, ...)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(PLAN_MAGIC)) == PLAN_MAGIC
    except OSError:
        return False


def load_onnx(path: str, external_data: bool = True) -> onnx.ModelProto:
    """onnx.load with a one-line error naming the file (text files, truncated models, missing data)."""
    if not os.path.exists(path):
        raise ParserError(f"cannot read ONNX model {path}: no such file")
    if os.path.isdir(path):
        raise ParserError(f"cannot read ONNX model {path}: it is a directory")
    if is_plan_file(path):
        raise ParserError(f"{path} is a hetrt plan, not an ONNX model")
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as e:  # DecodeError, OSError, ...
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ParserError(f"{path} is not a readable ONNX model ({type(e).__name__}: {detail})") from None
    if not proto.HasField("graph"):  # an empty file (or another protobuf) decodes as an empty ModelProto
        raise ParserError(f"{path} is not an ONNX model (empty, or no graph)")
    if external_data:  # contained in the model's folder, sizes checked (engine/onnx_parser/external_data.py)
        from engine.onnx_parser.loader import load_external_data

        load_external_data(proto, Path(path))
    return proto


def model_proto(spec: str) -> onnx.ModelProto:
    """An .onnx path or a bundled model name, as a ModelProto."""
    if spec.endswith(".prototxt"):
        raise HetrtError(f"'{spec}' is a Caffe model: build, run and place take it; this command needs an ONNX "
                         f"model")
    if os.path.exists(spec):
        return load_onnx(spec)
    from engine.models import MODELS, build_model

    if spec in MODELS:
        return build_model(spec)
    raise HetrtError(f"model '{spec}' is neither a file nor a bundled model ({', '.join(sorted(MODELS))})")


def model_source(spec: str) -> onnx.ModelProto | str:
    """An .onnx path stays a path (external data resolves relative to it); a bundled name builds."""
    if spec.endswith(".prototxt"):
        raise HetrtError(f"'{spec}' is a Caffe model: build, run and place take it; compare and demo need an ONNX "
                         f"model (ONNX Runtime is their reference)")
    if os.path.exists(spec):
        if is_plan_file(spec):
            raise HetrtError(f"{spec} is a hetrt plan, and this command needs an ONNX model or a bundled model")
        load_onnx(spec, external_data=False)  # one clear line for text files and truncated models
        return spec
    return model_proto(spec)


# ----------------------------------------------------------------------------- build configuration


def parse_shapes(spec: str | None) -> dict[str, tuple[int, ...]]:
    """trtexec's --shapes syntax: name:1x3x224x224,other:1x10."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in (spec or "").split(","):
        if not item:
            continue
        name, sep, dims = item.rpartition(":")
        if not sep or not name:
            raise HetrtError(f"--shapes entry '{item}' must look like name:1x3x224x224")
        try:
            shapes[name] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise HetrtError(f"--shapes entry '{item}': dims must be integers separated by 'x'") from None
        if any(d < 1 for d in shapes[name]):
            raise HetrtError(f"--shapes entry '{item}': every dim must be >= 1")
    return shapes


def parse_layer_precisions(items: list[str] | None) -> dict[str, Precision]:
    """LAYER:PREC pairs (repeatable, comma-separated); LAYER may hold * wildcards."""
    out: dict[str, Precision] = {}
    for item in (x for entry in items or [] for x in entry.split(",") if x):
        name, sep, prec = item.rpartition(":")
        if not sep or not name:
            raise HetrtError(f"--layer-precision '{item}' must look like LAYER:fp16")
        try:
            out[name] = Precision(prec.lower())
        except ValueError:
            raise HetrtError(f"--layer-precision '{item}': precision must be fp32, fp16 or int8") from None
    return out


def parse_layer_devices(items: list[str] | None) -> dict[str, str]:
    """LAYER:gpu|dla pairs (repeatable, comma-separated); LAYER may hold * wildcards."""
    out: dict[str, str] = {}
    for item in (x for entry in items or [] for x in entry.split(",") if x):
        name, sep, device = item.rpartition(":")
        if not sep or not name or device.lower() not in ("gpu", "dla"):
            raise HetrtError(f"--layer-device-types '{item}' must look like LAYER:gpu or LAYER:dla")
        out[name] = device.lower()
    return out


def parse_tactic_sources(spec: str | None) -> tuple[str, ...] | None:
    """trtexec's --tacticSources: comma-separated +LIB / -LIB edits of the default (every library:
    cublas, cublaslt, cudnn; CUBLAS_LT is cublaslt); None without the flag."""
    from backends.gpu.tactics import LIBRARY_SOURCES

    if spec is None:
        return None
    chosen = list(LIBRARY_SOURCES)
    for item in (x.strip() for x in spec.split(",") if x.strip()):
        sign, lib = item[0], item[1:].lower().replace("_", "")
        if sign not in "+-" or lib not in LIBRARY_SOURCES:
            raise HetrtError(f"--tactic-sources '{item}' must be +LIB or -LIB with LIB one of "
                             f"{', '.join(LIBRARY_SOURCES)}")
        if sign == "-" and lib in chosen:
            chosen.remove(lib)
        elif sign == "+" and lib not in chosen:
            chosen.append(lib)
    return tuple(chosen)


def expand_wildcards(pins: dict, names: list[str], flag: str = "--layer-precision") -> dict:
    """Replace LAYER patterns with the layer/node names they match; a pattern matching nothing is an error."""
    out: dict[str, Precision] = {}
    for pattern, value in pins.items():
        if not any(c in pattern for c in "*?["):
            out[pattern] = value
            continue
        hits = fnmatch.filter(names, pattern)
        if not hits:
            raise BuildError(f"{flag} pattern '{pattern}' matches no node of the model")
        out.update(dict.fromkeys(hits, value))
    return out


def check_batch(proto: onnx.ModelProto, batch: int | None, shapes: dict) -> None:
    """--batch applies to inputs with a symbolic first dim; on a fixed-batch model it is an error."""
    if batch is None:
        return
    inits = {i.name for i in proto.graph.initializer}
    inputs = [vi for vi in proto.graph.input if vi.name not in inits and vi.name not in shapes]
    dims = {vi.name: vi.type.tensor_type.shape.dim for vi in inputs if vi.type.HasField("tensor_type")}
    symbolic = [n for n, d in dims.items() if d and not d[0].HasField("dim_value")]
    if symbolic or not dims:
        return
    fixed = {n: d[0].dim_value for n, d in dims.items() if d}
    if all(v == batch for v in fixed.values()):
        return
    desc = ", ".join(f"{n}: batch {v}" for n, v in fixed.items())
    raise BuildError(f"--batch {batch}: the model fixes its batch ({desc}); --batch only sets symbolic batch "
                     f"dims. Use --shapes or export the model with a dynamic batch")


def parse_profiles(args: argparse.Namespace) -> list:
    """--min-shapes/--opt-shapes/--max-shapes (trtexec's): the i-th of each makes optimization profile i;
    a missing --opt-shapes is the max, a missing --min-shapes or --max-shapes is the opt."""
    from engine.ir.profiles import OptimizationProfile

    mins, opts, maxs = (getattr(args, k, None) or [] for k in ("min_shapes", "opt_shapes", "max_shapes"))
    profiles = []
    for i in range(max(len(mins), len(opts), len(maxs))):
        lo, op, hi = (parse_shapes(specs[i]) if i < len(specs) else {} for specs in (mins, opts, maxs))
        profile = OptimizationProfile()
        for name in dict.fromkeys([*lo, *op, *hi]):
            opt = op.get(name, hi.get(name, lo.get(name)))
            profile.set_shape(name, lo.get(name, opt), opt, hi.get(name, opt))
        profiles.append(profile)
    return profiles


def config_from_args(args: argparse.Namespace, proto: onnx.ModelProto | None = None):
    """A BuilderConfig from the build flags (every value checked before parsing or building)."""
    from engine.builder import BuilderConfig

    if getattr(args, "best", False):
        args.fp16 = args.int8 = True
    calib_dir, calib_cache = getattr(args, "calib", None), getattr(args, "calib_cache", None)
    calibrator = None
    if (calib_dir or calib_cache) and not args.int8:
        raise HetrtError("--calib and --calib-cache need --int8")
    if calib_dir:
        from engine.quantization import make_calibrator

        if not os.path.isdir(calib_dir):
            raise HetrtError(f"--calib '{calib_dir}' is not a directory of .npy files")
        if calib_cache and not os.path.exists(calib_cache):
            check_writable(calib_cache)
        calibrator = make_calibrator(getattr(args, "calibrator", "entropy"), calib_dir, calib_cache)
    timing_cache = getattr(args, "timing_cache", None)
    if timing_cache and not os.path.exists(timing_cache):
        check_writable(timing_cache)
    profiles = parse_profiles(args)  # with profiles, --shapes picks the shapes 'hetrt run' runs at
    shapes = {} if profiles else parse_shapes(args.shapes)
    if proto is not None and not profiles:
        check_batch(proto, args.batch, shapes)
    pins = resolve_pins(args, proto)  # INT8 pins too: the builder keeps them INT8 (precision by timing)
    devices = parse_layer_devices(getattr(args, "layer_device_types", None))
    if proto is not None:
        devices = expand_wildcards(devices, [n.name for n in proto.graph.node if n.name], "--layer-device-types")
    if "dla" in devices.values() and getattr(args, "use_dla_core", None) is None and \
            getattr(args, "placement", None) in (None, "gpu-only"):
        raise BuildError("--layer-device-types ...:dla needs --use-dla-core N (or a --placement that uses the DLA)")
    return BuilderConfig(layer_devices=devices, fp16=args.fp16, int8=args.int8, batch=args.batch, input_shapes=shapes,
                         profiles=profiles,
                         platform=args.platform, memory_limit=args.memory_limit, layer_precisions=pins,
                         optimize=not getattr(args, "no_optimize", False), calibrator=calibrator,
                         calibration_cache=calib_cache, timing_cache=timing_cache,
                         refittable=getattr(args, "refit", False),
                         optimization_level=getattr(args, "builder_optimization_level", 3),
                         tactic_sources=parse_tactic_sources(getattr(args, "tactic_sources", None)),
                         precision_by_timing=not getattr(args, "no_precision_timing", False),
                         **placement_options(args))


def resolve_pins(args: argparse.Namespace, proto: onnx.ModelProto | None) -> dict[str, Precision]:
    """--layer-precision with wildcards expanded over the model's node names."""
    pins = parse_layer_precisions(getattr(args, "layer_precision", None))
    if proto is not None:
        pins = expand_wildcards(pins, [n.name for n in proto.graph.node if n.name])
    if any(p is Precision.INT8 for p in pins.values()) and not args.int8:
        bad = next(k for k, p in pins.items() if p is Precision.INT8)
        raise BuildError(f"--layer-precision {bad}:int8 needs --int8 (INT8 layers need scales from calibration "
                         f"or Q/DQ)")
    return pins


def placement_options(args: argparse.Namespace) -> dict:
    """trtexec's --useDLACore/--allowGPUFallback, plus hetrt's placement policy, objective, power mode."""
    core = getattr(args, "use_dla_core", None)
    options = {"power_mode": getattr(args, "power_mode", None), "objective": getattr(args, "objective", "latency"),
               "placement_policy": getattr(args, "placement", None)}
    if core is not None:
        options.update(default_device="dla", dla_core=core, gpu_fallback=getattr(args, "allow_gpu_fallback", False))
    elif getattr(args, "allow_gpu_fallback", False):
        raise HetrtError("--allow-gpu-fallback only applies with --use-dla-core N")
    return options


def build_plan(model_spec: str, args: argparse.Namespace, logger: Logger) -> bytes:
    """Parse and build; then hold the plan to what --layer-precision asked (--precision-constraints)."""
    from engine.builder import build_from_onnx
    from engine.caffe_parser import cli as caffe_cli

    caffe_plan = caffe_cli.build_plan(model_spec, args, config_from_args(args), logger)
    if caffe_plan is not None:
        return caffe_plan
    source = model_source(model_spec)
    proto = source if isinstance(source, onnx.ModelProto) else load_onnx(source, external_data=False)
    config = config_from_args(args, proto)
    data = build_from_onnx(source, config, logger)
    # An INT8 pin asks for what an --int8 build does anyway where the layer has an INT8 kernel and scales
    # (the builder only keeps it from precision by timing): whether the plan honours it is checked here.
    check_pinned_precisions(data, resolve_pins(args, proto), getattr(args, "precision_constraints", "none"),
                            logger)
    return data


def check_pinned_precisions(data: bytes, pins: dict[str, Precision], mode: str, logger: Logger) -> None:
    """A pinned precision the plan does not honour: a warning with --precision-constraints prefer, else an
    error (a pin is a request the user made on purpose; silently ignoring it builds the wrong plan)."""
    if not pins:
        return
    from engine import plan as plan_format

    network = plan_format.deserialize(data).network
    known = {n for layer in network.layers for n in (layer.name, *layer.origin)}
    unknown = [k for k in pins if k not in known]
    if unknown:
        raise BuildError(f"--layer-precision names '{unknown[0]}', which is not a layer or node of the network")
    for layer in network.layers:
        keys = [layer.name, *layer.origin]
        want = next((pins[k] for k in keys if k in pins), None)
        if want is None or layer.precision is None or Precision(layer.precision) is want:
            continue
        why = next((m.split(": ", 1)[1] for m in logger.messages() if m.startswith(f"  {layer.name}: ")), "")
        msg = (f"--layer-precision {next(k for k in keys if k in pins)}:{want.value}: layer '{layer.name}' "
               f"({layer.kind.value}) cannot run in {want.value} and was built in {Precision(layer.precision).value}"
               + (f" ({why})" if why else ""))
        if mode != "prefer":
            raise BuildError(msg + "; --precision-constraints prefer accepts the fallback")
        logger.warning(msg)


# ----------------------------------------------------------------------------- inputs


def random_inputs(io_specs, seed: int) -> dict[str, np.ndarray]:
    """Seeded random feeds for (name, shape, numpy dtype) triples: floats in [-1, 1], ints in [0, 10)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, shape, dtype in io_specs:
        dtype = np.dtype(dtype)
        if dtype.kind == "f":
            feeds[name] = rng.uniform(-1.0, 1.0, shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            feeds[name] = rng.integers(0, 10, shape).astype(dtype)
    return feeds


def engine_inputs(engine) -> list[tuple[str, tuple[int, ...], np.dtype]]:
    return [(t.name, tuple(t.shape), np.dtype(t.dtype.numpy if hasattr(t.dtype, "numpy") else t.dtype))
            for t in engine.io_tensors if t.mode == "input"]


def load_inputs(spec: list[str] | None, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """--load-inputs NAME:FILE.npy (one input) or FILE.npz (several, by name); shapes and dtypes checked."""
    for item in spec or []:
        name, sep, path = item.partition(":")
        if not sep and item.endswith(".npz"):
            arrays = read_npz(item, "--load-inputs")
            unknown = sorted(set(arrays) - set(feeds))
            if unknown:
                raise ExecutionError(f"--load-inputs {item}: {unknown} are not inputs (inputs: {', '.join(feeds)})")
            loaded = arrays
        elif not sep:
            raise HetrtError(f"--load-inputs '{item}' must look like name:file.npy or file.npz")
        else:
            if name not in feeds:
                raise ExecutionError(f"--load-inputs names '{name}', which is not an input "
                                     f"(inputs: {', '.join(feeds)})")
            try:
                value = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                raise HetrtError(f"cannot load input '{name}' from {path}: {getattr(e, 'strerror', None) or e}") \
                    from None
            if not isinstance(value, np.ndarray):  # an .npz archive given as NAME:FILE
                arrays = read_npz(path, "--load-inputs")
                if name not in arrays:
                    raise ExecutionError(f"--load-inputs {item}: the archive has no array '{name}' "
                                         f"(it has: {', '.join(arrays) or 'nothing'})")
                value = arrays[name]
            loaded = {name: value}
        for k, v in loaded.items():
            if v.shape != feeds[k].shape:
                raise ExecutionError(f"--load-inputs: input '{k}' has shape {v.shape}, the model needs "
                                     f"{feeds[k].shape}")
            try:
                feeds[k] = v.astype(feeds[k].dtype, copy=False)
            except (TypeError, ValueError):
                raise ExecutionError(f"--load-inputs: input '{k}' has dtype {v.dtype}, which does not convert to "
                                     f"the model's {feeds[k].dtype}") from None
    return feeds


def read_npz(path: str, flag: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise HetrtError(f"{flag} {path}: not a readable .npz file ({getattr(e, 'strerror', None) or e})") from None


def load_engine(path_or_spec: str, args: argparse.Namespace, logger: Logger):
    """A plan (recognised by its magic bytes, any extension) is loaded; anything else is built."""
    from engine.runtime import Runtime

    if is_plan_file(path_or_spec) or path_or_spec.endswith((".plan", ".engine", ".trt")):
        data = read_bytes(path_or_spec, "plan")
        if not data.startswith(PLAN_MAGIC):
            raise PlanError(f"{path_or_spec} is not a hetrt plan (no HETRTPLN magic at offset 0)")
        ignored = [f for f in build_flags_given(args) if f != "--shapes"]  # --shapes: run shapes of a dynamic plan
        if ignored:
            logger.warning(f"{path_or_spec} is an already built plan: build options {', '.join(ignored)} are "
                           f"ignored")
        logger.info(f"Loaded plan {path_or_spec} ({len(data) / 2**20:.2f} MiB)")
    else:
        data = build_plan(path_or_spec, args, logger)
    return Runtime(logger).deserialize(data)
