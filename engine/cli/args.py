"""Argument types and option groups shared by the subcommands.

Every numeric flag is checked by its argparse ``type``, so a bad value ends the command before any
work starts, with one line naming the flag (``hetrt run: argument --iterations: must be >= 1``).
"""

from __future__ import annotations

import argparse
import sys

# ----------------------------------------------------------------------------- value types


def _number(kind: type, text: str) -> float | int:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not {'an integer' if kind is int else 'a number'}") from None


def int_at_least(low: int):
    def parse(text: str) -> int:
        v = _number(int, text)
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
        return v

    parse.__name__ = f"integer >= {low}"
    return parse


def int_between(low: int, high: int):
    def parse(text: str) -> int:
        v = _number(int, text)
        if not low <= v <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {v}")
        return v

    parse.__name__ = f"integer in [{low}, {high}]"
    return parse


def float_at_least(low: float, strict: bool = False):
    def parse(text: str) -> float:
        v = _number(float, text)
        if v != v or v in (float("inf"), float("-inf")) or v < low or (strict and v == low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low:g}, got {text}")
        return v

    parse.__name__ = f"number >= {low:g}"
    return parse


positive_int = int_at_least(1)
nonneg_int = int_at_least(0)
nonneg_float = float_at_least(0.0)
positive_float = float_at_least(0.0, strict=True)


class Parser(argparse.ArgumentParser):
    """argparse with hetrt's error line: ``[E] hetrt run: argument --iterations: must be >= 1``, exit 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        flag, sep, rest = message.partition(": ")
        if flag.startswith("argument ") and rest.startswith("must be"):
            message = f"{flag.removeprefix('argument ')} {rest}"  # "--frames must be >= 1, got 0"
        print(f"[E] {self.prog}: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(2)


# ----------------------------------------------------------------------------- option groups

BUILD_DEFAULTS = {"fp16": False, "int8": False, "best": False, "calib": None, "calib_cache": None,
                  "calibrator": "entropy", "batch": None, "shapes": None, "min_shapes": None,
                  "opt_shapes": None, "max_shapes": None, "platform": "host", "memory_limit": None,
                  "use_dla_core": None, "allow_gpu_fallback": False, "placement": None, "objective": "latency",
                  "power_mode": None, "layer_precision": None, "layer_device_types": None,
                  "precision_constraints": "none",
                  "no_optimize": False, "timing_cache": None, "builder_optimization_level": 3,
                  "tactic_sources": None, "no_precision_timing": False}


def add_build_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("build options (trtexec names in brackets)")
    g.add_argument("--fp16", action="store_true", help="allow FP16 layers (FP32 otherwise) [--fp16]")
    g.add_argument("--int8", action="store_true",
                   help="allow INT8 layers: scales from Q/DQ in the model, --calib-cache or --calib; with --fp16, "
                        "layers INT8 cannot run use FP16 [--int8]")
    g.add_argument("--best", action="store_true", help="allow every precision: --fp16 --int8 [--best]")
    g.add_argument("--calib", metavar="DIR", default=None,
                   help="calibration data: a directory of .npy batches (one sub-directory per input when there are "
                        "several)")
    g.add_argument("--calib-cache", metavar="FILE", default=None,
                   help="calibration cache: read when it exists, else written after calibrating with --calib [--calib]")
    g.add_argument("--calibrator", choices=("entropy", "minmax", "percentile"), default="entropy",
                   help="range calibration algorithm (default entropy, TensorRT's entropy calibration)")
    g.add_argument("--batch", type=positive_int, default=None,
                   help="batch size for inputs with a symbolic first dim (default 1); an error on a model whose "
                        "batch is fixed to another value")
    g.add_argument("--shapes", default=None, metavar="SPEC",
                   help="fixed input shapes, trtexec syntax: name:1x3x224x224[,name2:...]; with --min/--opt/"
                        "--max-shapes (or a plan built with them), the shapes 'hetrt run' runs at [--shapes]")
    for which, eg in (("min", "1x3x32x32"), ("opt", "4x3x64x64"), ("max", "8x3x128x128")):
        g.add_argument(f"--{which}-shapes", action="append", default=None, metavar="SPEC",
                       help=f"{which} shapes of an optimization profile, e.g. x:{eg}[,y:...]; repeat the three "
                            f"flags for more profiles (the i-th of each makes profile i) [--{which}Shapes]")
    g.add_argument("--platform", default="host",
                   help="target platform tag recorded in the plan (host, orin-agx-64gb, xavier-agx)")
    g.add_argument("--memory-limit", type=nonneg_int, default=None, metavar="BYTES",
                   help="fail the build if activation memory exceeds this many bytes [--memPoolSize]")
    g.add_argument("--use-dla-core", type=nonneg_int, default=None, metavar="N",
                   help="make DLA core N the default device; needs --fp16 or --int8 and a platform with DLA cores "
                        "(orin-agx-64gb, xavier-agx, or host with its two simulated cores) [--useDLACore]")
    g.add_argument("--allow-gpu-fallback", action="store_true",
                   help="with --use-dla-core: layers the DLA cannot run go to the GPU instead of failing the build "
                        "[--allowGPUFallback]")
    g.add_argument("--placement", choices=("gpu-only", "dla-first", "best-single-cut", "optimal", "pipeline"),
                   default=None, help="placement policy (default: dla-first with --use-dla-core, else gpu-only)")
    g.add_argument("--objective", choices=("latency", "energy", "edp"), default="latency",
                   help="what --placement optimal minimises on the simulated target (default latency)")
    g.add_argument("--power-mode", default=None, metavar="MODE",
                   help="power mode of the platform (e.g. 15W, 30W, 50W, MAXN; default: the platform's default)")
    g.add_argument("--layer-precision", "--layer-precisions", action="append", metavar="LAYER:PREC",
                   help="pin layers to fp32/fp16/int8; LAYER is a layer or ONNX node name and may contain * "
                        "wildcards; repeatable or comma-separated [--layerPrecisions]")
    g.add_argument("--layer-device-types", action="append", metavar="LAYER:DEV",
                   help="pin layers to gpu or dla; LAYER is a layer or ONNX node name and may contain * wildcards; "
                        "repeatable or comma-separated; dla needs --use-dla-core or a DLA --placement "
                        "[--layerDeviceTypes]")
    g.add_argument("--precision-constraints", choices=("none", "obey", "prefer"), default="none",
                   help="with --layer-precision: none (default) and obey fail the build when a pinned precision "
                        "cannot run; prefer warns and keeps the precision that runs [--precisionConstraints]")
    g.add_argument("--no-optimize", action="store_true", help="skip graph optimization (for debugging)")
    g.add_argument("--refit", action="store_true",
                   help="build a refittable plan (weights can be replaced later with engine.refit.Refitter) [--refit]")
    g.add_argument("--timing-cache", metavar="FILE", default=None,
                   help="GPU tactic timing cache: read when it exists, updated after the build [--timingCacheFile]")
    g.add_argument("--builder-optimization-level", type=int_between(0, 5), default=3, metavar="0-5",
                   help="how many GPU kernel tactics are timed: 0 none (heuristic choice), 1-2 fewer, 3 default, "
                        "4-5 all candidates [--builderOptimizationLevel]")
    g.add_argument("--tactic-sources", metavar="+LIB,-LIB", default=None,
                   help="libraries the GPU tactic timing may choose kernels from beside hetrt's own, edited from "
                        "the default (all installed: cublas, cublaslt, cudnn), e.g. --tactic-sources=-cudnn "
                        "[--tacticSources]")
    g.add_argument("--no-precision-timing", action="store_true",
                   help="with --int8 --fp16: keep every layer that has an INT8 kernel in INT8 instead of timing "
                        "each GPU convolution in both precisions and building the faster, conversions counted "
                        "(the default, as TensorRT's builder chooses)")
    add_plugin_option(g)
    add_verbosity(p)


def add_verbosity(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--verbose", "-v", action="store_true", help="log every fusion and removal, TensorRT-style")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def add_inference_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inference options")
    g.add_argument("--iterations", type=positive_int, default=10,
                   help="run at least N inferences (default 10) [--iterations]")
    g.add_argument("--warmup", type=nonneg_float, default=200.0, metavar="MS",
                   help="warm up for MS ms (default 200) [--warmUp]")
    g.add_argument("--duration", type=nonneg_float, default=3.0, metavar="S",
                   help="run for at least S seconds (default 3) [--duration]")
    g.add_argument("--avg-runs", type=positive_int, default=1, metavar="N",
                   help="report latencies averaged over N consecutive iterations (default 1) [--avgRuns]")
    g.add_argument("--seed", type=nonneg_int, default=0, help="seed of the random inputs (default 0)")
    g.add_argument("--load-inputs", action="append", metavar="NAME:FILE.npy|FILE.npz",
                   help="inputs from a .npy per input (NAME:FILE.npy) or an .npz of several [--loadInputs]")
    g.add_argument("--dump-profile", action="store_true",
                   help="print the per-layer profile: each GPU launch timed on the device on its own [--dumpProfile]")
    g.add_argument("--profile-iterations", type=positive_int, default=20,
                   help="iterations of the profiled run (default 20)")
    g.add_argument("--export-profile", metavar="FILE", help="write the per-layer profile as JSON [--exportProfile]")
    g.add_argument("--export-layer-info", metavar="FILE",
                   help="write layer information (engine inspector JSON) [--exportLayerInfo]")
    g.add_argument("--export-times", metavar="FILE",
                   help="write per-iteration times as JSON: enqueue, H2D, compute and D2H of each timed iteration, "
                        "ms [--exportTimes]")
    g.add_argument("--no-data-transfers", action="store_true",
                   help="GPU engines: stage the inputs on the device once and leave the host<->device copies out of "
                        "every iteration [--noDataTransfers]")
    g.add_argument("--profile", type=nonneg_int, default=0, metavar="N",
                   help="optimization profile to run with (plans built with --min/--opt/--max-shapes; default 0) "
                        "[--profile]")
    g.add_argument("--save-outputs", metavar="FILE.npz", help="write the outputs of one inference [--exportOutput]")


def build_flags_given(args: argparse.Namespace) -> list[str]:
    """Build options that differ from their defaults (for 'ignored when running a plan')."""
    return [f"--{k.replace('_', '-')}" for k, default in BUILD_DEFAULTS.items()
            if hasattr(args, k) and getattr(args, k) != default]


def add_plugin_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugins", action="append", metavar="FILE.py",
                   help="import this Python file first; it registers plugins with engine.plugin (repeatable) "
                        "[--plugins]")
