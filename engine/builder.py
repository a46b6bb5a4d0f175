"""The builder: network + configuration → serialized plan.

Steps, in TensorRT's order: validate the network, optimize it (fusions and removals, each logged
at VERBOSE), assign precisions, place layers on devices and pick the executing backend, plan
activation memory, and serialize everything into a plan. ``build_from_onnx`` adds parsing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx

from engine import int8_host_fallback, precision_timing
from engine import plan as plan_format
from engine.ir.dtypes import DataType, Precision
from engine.ir.errors import BuildError, UnsupportedError
from engine.ir.layers import SHAPE_ONLY, LayerKind
from engine.ir.logger import Logger, Severity
from engine.ir.memory import storage_dtype
from engine.ir.network import Network
from engine.ir.platforms import KNOWN_PLATFORMS
from engine.ir.profiles import OptimizationProfile

# Layer kinds that only move or reshape data; precision flags do not apply to them.


@dataclass
class BuilderConfig:
    """What to build: precisions, devices, memory limits, shapes (TensorRT's IBuilderConfig).

    ``fp16``/``int8`` allow those precisions (FP32 is always allowed); ``layer_precisions`` pins
    layers by name. ``input_shapes``/``batch`` fix the shapes of ONNX inputs with symbolic dims.
    ``memory_limit`` bounds the activation arena in bytes (None: no limit).

    INT8 (``int8``): a network with Q/DQ layers uses its own scales (explicit quantization);
    otherwise the ranges come from ``calibration_cache`` (a file, read when it exists) or from
    ``calibrator`` (an ``engine.quantization`` calibrator over calibration batches), whose result
    is written to the calibrator's cache and to ``calibration_cache`` when that names a file.
    Layers INT8 cannot run use FP16 when ``fp16`` is also set, FP32 otherwise; so does a layer of a
    GPU partition that has no GPU INT8 kernel (``engine.int8_host_fallback``), rather than run INT8 on
    the host. With both on, a GPU INT8 convolution whose FP16 form times faster, conversions
    counted, is built FP16 (``precision_by_timing``, ``engine.precision_timing``). An INT8 entry in
    ``layer_precisions`` keeps its layer INT8 wherever INT8 can run it.
    """

    fp16: bool = False
    int8: bool = False
    default_device: str = "gpu"
    dla_core: int | None = None
    gpu_fallback: bool = True
    memory_limit: int | None = None
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    batch: int | None = None
    platform: str = "host"
    optimize: bool = True
    layer_precisions: dict[str, Precision] = field(default_factory=dict)
    calibrator: Any = None
    calibration_cache: str | None = None
    # Placement (scheduler): power mode of the platform (None: its default), the objective of the
    # 'optimal' policy, and the policy (None: 'dla-first' when the DLA is requested, else 'gpu-only').
    power_mode: str | None = None
    objective: str = "latency"
    placement_policy: str | None = None
    # GPU tactic timing: a timing-cache file (JSON, keyed by layer signature, GPU model and hetrt
    # version) and an optimization level 0-5 bounding how many tactics are timed (0: none).
    timing_cache: str | None = None
    optimization_level: int = 3
    # Libraries whose kernels the GPU tactic timing may choose beside hetrt's own ('cublas',
    # 'cublaslt', 'cudnn'; TensorRT's tactic sources); None: every one installed.
    tactic_sources: tuple[str, ...] | None = None
    # Optimization profiles (min/opt/max shapes per dynamic input), checked against the model by
    # build_from_onnx, which specialises the network at the first profile's opt shapes.
    profiles: list[OptimizationProfile] = field(default_factory=list)
    # Refit (engine.refit): keep in the plan what replacing weights later needs.
    refittable: bool = False
    # Layer (or ONNX node) name -> 'gpu' | 'dla' (trtexec's --layerDeviceTypes; scheduler.device_pins)
    layer_devices: dict[str, str] = field(default_factory=dict)
    # With int8 and fp16 both on: time each GPU INT8 convolution against its FP16 form and build the
    # faster, conversions counted (engine.precision_timing); False keeps INT8 wherever it runs.
    precision_by_timing: bool = True

    def validate(self) -> None:
        if self.default_device not in ("gpu", "dla"):
            raise BuildError(f"default device must be 'gpu' or 'dla', got '{self.default_device}'")
        if self.platform not in KNOWN_PLATFORMS:
            raise BuildError(f"unknown platform '{self.platform}'; known: {', '.join(sorted(KNOWN_PLATFORMS))}")
        if self.batch is not None and self.batch < 1:
            raise BuildError(f"batch must be >= 1, got {self.batch}")
        if self.memory_limit is not None and self.memory_limit < 0:
            raise BuildError(f"memory limit must be >= 0 bytes, got {self.memory_limit}")
        if self.dla_core is not None and self.dla_core < 0:
            raise BuildError(f"DLA core must be >= 0, got {self.dla_core}")
        for profile in self.profiles:
            profile.validate()
        if self.tactic_sources is not None:
            from backends.gpu.tactics import LIBRARY_SOURCES

            if isinstance(self.tactic_sources, str):
                raise BuildError(f"tactic_sources must be a tuple of library names ({', '.join(LIBRARY_SOURCES)}), "
                                 f"got the string '{self.tactic_sources}'")
            unknown = sorted(set(self.tactic_sources) - set(LIBRARY_SOURCES))
            if unknown:
                raise BuildError(f"unknown tactic source(s) {', '.join(unknown)}; known: {', '.join(LIBRARY_SOURCES)}")
        if self.calibrator is not None:
            from engine.quantization.calibrator import Calibrator

            if not isinstance(self.calibrator, Calibrator):
                raise BuildError(f"calibrator {type(self.calibrator).__name__} does not implement the Calibrator "
                                 f"interface (get_batch_size, get_batch, read/write_calibration_cache, compute_amax)")
        if (self.calibrator is not None or self.calibration_cache) and not self.int8:
            raise BuildError("a calibrator or calibration cache is given but INT8 is not enabled (set int8)")
        from scheduler.plan_placement import check_request

        check_request(self)

    @property
    def precision(self) -> Precision:
        return Precision.FP16 if self.fp16 else Precision.FP32

    def summary(self) -> dict:
        d = asdict(replace(self, calibrator=None))
        d["calibrator"] = getattr(self.calibrator, "algorithm", None)
        d["layer_precisions"] = {k: Precision(v).value for k, v in self.layer_precisions.items()}
        d["input_shapes"] = {k: list(v) for k, v in self.input_shapes.items()}
        d["profiles"] = [p.to_dict() for p in self.profiles]
        return d


def _half_through_shape_only(network: Network) -> None:
    """Shape-only layers (reshape, transpose, slice, concat, ...) keep their inputs' precision: one
    whose float inputs are all stored in half precision is FP16, so its output stays half too
    (otherwise it would be stored as float32, doubling the bytes moved and turning an FP16 product
    such as Q·Kᵀ after a transpose into a mixed-precision one). Casts and pinned layers are kept."""
    half = {t for t in network.inputs if network.tensors[t].dtype is DataType.HALF}
    for layer in network.layers:
        if (layer.precision is None and layer.kind in SHAPE_ONLY
                and layer.kind not in (LayerKind.CONSTANT, LayerKind.CAST)):
            floats = [t for t in layer.inputs if network.tensors[t].dtype.is_float]
            if floats and all(t in half for t in floats):
                layer.precision = Precision.FP16
        half.update(t for t in layer.outputs if storage_dtype(layer, network.tensors[t].dtype) is DataType.HALF)


def _gpu_backend_status() -> tuple[bool, str]:
    try:
        from backends.gpu.availability import gpu_available
    except ImportError:
        return False, "the GPU backend is not installed"
    return gpu_available()


class Builder:
    """Creates networks and configs, and builds plans (TensorRT's IBuilder)."""

    def __init__(self, logger: Logger | None = None) -> None:
        self.logger = logger or Logger()

    def create_network(self, name: str = "network") -> Network:
        return Network(name)

    def create_builder_config(self) -> BuilderConfig:
        return BuilderConfig()

    def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes:
        return serialize(self.build(network, config))

    def build(self, network: Network, config: BuilderConfig, *,
              refit_onnx: onnx.ModelProto | None = None, built_shapes: dict | None = None,
              dla_refusals: dict[str, str] | None = None, int8_scales: dict | None = None
              ) -> plan_format.PlanContents:
        """``refit_onnx``: the ONNX model ``network`` was parsed from (recorded when refittable or
        built with optimization profiles: the runtime re-specialises from it), at ``built_shapes``.
        ``dla_refusals``: tensor -> why layers touching it stay off the DLA (dynamic dims).
        ``int8_scales``: calibrated activation scales to use instead of calibrating (a plan's own,
        when the runtime specialises it for another shape)."""
        log = self.logger
        config.validate()
        if config.profiles and refit_onnx is None:
            raise UnsupportedError("optimization profiles need the ONNX model the network is parsed from "
                                   "(build_from_onnx, hetrt build): a network defined through the API has fixed "
                                   "shapes")
        start = time.perf_counter()
        network.validate()
        log.info(f"Building '{network.name}': {len(network)} layers, precision "
                 f"{'int8+' if config.int8 else ''}{config.precision.value}, platform {config.platform}")
        qdq_scales = None
        if config.int8:
            from engine.quantization import builder_step

            network, qdq_scales = builder_step.prepare(network, config, log)
            if config.refittable and qdq_scales is not None:
                raise BuildError("refittable plans of explicitly quantized (Q/DQ) models are not supported: the "
                                 "refitter replays calibrated INT8 only; build without refittable")
        optimized = self._optimize(network, config)
        recorded, int8_scales = int8_scales, None
        if config.int8 and recorded is not None and qdq_scales is None:
            int8_scales = builder_step.ScaleTable(dict(recorded), True, "the plan's calibration")
        elif config.int8:
            int8_scales = builder_step.scales_for(optimized, config, qdq_scales, log)
        unassigned = optimized.copy() if config.int8 else None
        self._assign_precisions(optimized, config, int8_scales)
        placement, loadables = self._place(optimized, config, dla_refusals)
        int8_fallbacks: dict = {}
        if unassigned is not None:
            optimized, placement, loadables, config, int8_fallbacks = int8_host_fallback.float_on_gpu(
                self, unassigned, optimized, (placement, loadables), config, int8_scales, dla_refusals)
        if not precision_timing.wanted(config):
            unassigned = None
        cache = precision_timing.open_cache(config, placement)
        timed_precisions: dict = {}
        if unassigned is not None and cache is not None:
            optimized, placement, loadables, config, timed_precisions = precision_timing.retime(
                self, unassigned, optimized, (placement, loadables), config, int8_scales, dla_refusals, cache)
        memory_plan = self._plan_memory(optimized, config)
        contents = plan_format.PlanContents(
            network=optimized,
            platform=config.platform,
            build_config=config.summary(),
            placement=placement,
            tactics=self._select_tactics(optimized, placement, config, cache),
            loadables=loadables,
            memory_plan=memory_plan,
            metadata={"source_layers": len(network), "build_seconds": round(time.perf_counter() - start, 3)},
        )
        if dla_refusals:
            contents.metadata["dla_refusals"] = dict(dla_refusals)
        if timed_precisions:
            contents.metadata["precision_by_timing"] = timed_precisions
        if int8_fallbacks:
            contents.metadata["int8_float_on_gpu"] = int8_fallbacks
        if config.refittable or (config.profiles and refit_onnx is not None):
            from engine.refit.record import make_record

            contents.refit = make_record(network, config, refit_onnx,
                                         None if int8_scales is None else int8_scales.scales, built_shapes)
        log.info(f"Engine built in {time.perf_counter() - start:.2f} s: {len(optimized)} layers "
                 f"(from {len(network)}), activation memory {memory_plan['peak_bytes'] / 2**20:.2f} MiB")
        return contents

    # ------------------------------------------------------------------ steps

    def _optimize(self, network: Network, config: BuilderConfig) -> Network:
        if not config.optimize:
            return network.copy()
        from engine.optimizer import optimize

        t0 = time.perf_counter()
        report = optimize(network, log=self.logger.verbose, for_dla=wants_dla(config))
        self.logger.info(f"Graph optimization: {len(network)} → {len(report.network)} layers, "
                         f"{len(report.rewrites)} rewrites in {time.perf_counter() - t0:.2f} s")
        return report.network

    def _assign_precisions(self, network: Network, config: BuilderConfig, int8_scales: dict | None = None) -> None:
        names = {layer.name for layer in network}
        origins = {o: layer for layer in network for o in layer.origin}
        for name in config.layer_precisions:
            if name not in names and name not in origins:
                raise BuildError(f"layer precision given for '{name}', which is not a layer of the network")
        for layer in network:
            pinned = config.layer_precisions.get(layer.name)
            if pinned is None:
                pinned = next((config.layer_precisions[o] for o in layer.origin if o in config.layer_precisions),
                              None)
            pinned = None if pinned is None else Precision(pinned)
            if pinned is Precision.INT8 and not config.int8:
                raise BuildError(f"layer '{layer.name}' pinned to int8 but INT8 is not enabled (set int8: INT8 "
                                 f"layers need scales from calibration or Q/DQ)")
            if pinned is not None and pinned is not Precision.INT8:
                if pinned is Precision.FP16 and not config.fp16:
                    self.logger.warning(f"layer '{layer.name}' pinned to fp16 although the fp16 flag is off")
                layer.precision = pinned
            elif layer.kind not in SHAPE_ONLY:  # an INT8 pin too: the INT8 assignment gives it its scales
                layer.precision = config.precision
        if int8_scales is not None:
            from engine.quantization import builder_step

            builder_step.assign(network, config, int8_scales, self.logger)
        if any(layer.kind is LayerKind.PLUGIN for layer in network):
            from engine.plugin.precision import pin_plugin_precisions

            pin_plugin_precisions(network, config.fp16, self.logger)
        if config.fp16:
            from engine.fp16_range import fit_constants_to_fp16

            _half_through_shape_only(network)
            fit_constants_to_fp16(network, self.logger)
            # FP16 layers keep their weights in half precision: halves the plan and matches what runs.
            for layer in network:
                if layer.precision is Precision.FP16:
                    layer.weights = {k: (w.astype("float16") if w.dtype.kind == "f" and layer.kind is not
                                         LayerKind.CONSTANT else w) for k, w in layer.weights.items()}

    def _place(self, network: Network, config: BuilderConfig,
               dla_refusals: dict[str, str] | None = None) -> tuple[dict, list[bytes]]:
        available, reason = _gpu_backend_status()
        backend = "gpu" if available else "reference"
        if not available:
            self.logger.info(f"GPU backend unavailable ({reason}); GPU layers run on the reference backend")
        head = {"default_device": config.default_device, "gpu_backend": backend,
                "gpu_backend_reason": "" if available else reason}
        if (config.platform != "host" or config.placement_policy or config.default_device == "dla"
                or config.dla_core is not None or config.power_mode):
            from scheduler.plan_placement import place_network  # device per layer, partitions, loadables

            placement, loadables = place_network(network, config, self.logger, backend,
                                                 _layer_refusals(network, dla_refusals or {}))
            placement = {**head, **placement}
        else:
            for layer in network:
                layer.device = "gpu"
            placement = {**head, "partitions": [{"device": "gpu", "backend": backend,
                                                 "layers": [la.name for la in network]}]}
            loadables = []
        if available:  # layers without a GPU kernel: host partitions, decided here and written down
            from backends.gpu.backend import GpuBackend
            from engine.host_partitions import split_host_layers

            if split_host_layers(network, placement, GpuBackend(), self.logger):
                self._price_host_layers(network, placement, config)
        return placement, loadables

    def _price_host_layers(self, network: Network, placement: dict, config: BuilderConfig) -> None:
        """The cost model's price of each host layer (CPU time + hand-offs), kept in the plan."""
        from scheduler.host_cost import record_host_layers
        from scheduler.plan_placement import build_precision

        try:
            priced = record_host_layers(network, placement, config.platform, config.power_mode,
                                        build_precision(config))
        except Exception as e:  # the price is a report: a layer the measurement cannot feed never fails a build
            self.logger.warning(f"host layers not priced: {type(e).__name__}: {e}")
            placement.pop("host_layers", None)
            return
        for name, c in priced.items():
            self.logger.info(f"host layer '{name}': {c['clock']} {c['time_ms'] * 1e3:.1f} us on the CPU + "
                             f"{c['handoffs']} hand-off(s) {c['handoff_ms'] * 1e3:.1f} us "
                             f"({c['in_bytes']} B in, {c['out_bytes']} B out)")

    def _select_tactics(self, network: Network, placement: dict, config: BuilderConfig, cache: Any = None) -> dict:
        """Time GPU kernel candidates for the 'gpu' partitions (backends.gpu.tactics); {} elsewhere.
        ``cache``: the timing cache the build has open (precision by timing filled it), else the file's."""
        layers = precision_timing.gpu_layers(placement)
        if not layers:
            return {}
        try:
            from backends.gpu.tactics import select_tactics

            return select_tactics(network, layers, config.timing_cache, config.optimization_level, self.logger,
                                  sources=config.tactic_sources, cache=cache)
        except Exception as e:  # timing is an optimization: the runtime falls back to heuristic tactics
            self.logger.warning(f"GPU tactic timing failed ({type(e).__name__}: {e}); heuristic tactics are used")
            return {}

    def _plan_memory(self, network: Network, config: BuilderConfig) -> dict:
        from engine.ir.memory import plan_memory

        mem = plan_memory(network)
        peak = mem.peak_bytes
        if config.memory_limit is not None and peak > config.memory_limit:
            raise BuildError(f"activation memory needs {peak} bytes, above the memory limit of "
                             f"{config.memory_limit} bytes; lower the batch or raise the limit")
        return mem.to_dict()


def _layer_refusals(network: Network, tensor_reasons: dict[str, str]) -> dict[str, str]:
    """Layer -> the DLA refusal of the first dynamic tensor it reads or writes."""
    out = {}
    for layer in network:
        why = next((tensor_reasons[t] for t in (*layer.inputs, *layer.outputs) if t in tensor_reasons), None)
        if why is not None:
            out[layer.name] = why
    return out


def serialize(contents: plan_format.PlanContents) -> bytes:
    return plan_format.serialize(contents)


def build_serialized(network: Network, config: BuilderConfig | None = None, logger: Logger | None = None) -> bytes:
    """Build ``network`` into plan bytes (a one-call form of Builder.build_serialized_network)."""
    return Builder(logger).build_serialized_network(network, config or BuilderConfig())


def build_from_onnx(model: str | Path | onnx.ModelProto, config: BuilderConfig | None = None,
                    logger: Logger | None = None) -> bytes:
    """Parse an ONNX model with the config's shapes and build a serialized plan."""

    config = config or BuilderConfig()
    config.validate()  # before parsing, so a bad request fails fast and says so
    logger = logger or Logger()
    t0 = time.perf_counter()
    shapes = _shapes_to_build(model, config)
    network = parse_for_build(model, shapes, config, logger)
    logger.info(f"Parsed ONNX model in {time.perf_counter() - t0:.2f} s: {len(network)} layers")
    if config.profiles:
        return serialize(build_with_profiles(model, network, shapes, config, logger))
    if config.refittable:
        proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=True)
        return serialize(Builder(logger).build(network, config, refit_onnx=proto))
    return Builder(logger).build_serialized_network(network, config)


def parse_for_build(model: str | Path | onnx.ModelProto, shapes: dict | None, config: BuilderConfig,
                    logger: Logger) -> Network:
    """The network the builder starts from: parsed at ``shapes``, with Q/DQ weight scales for INT8."""
    from engine.onnx_parser import parse

    network = parse(model, input_shapes=shapes, batch=config.batch)
    if config.int8:
        from engine.quantization import qdq

        proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
        n = qdq.annotate_weight_scales(network, proto)
        if n:
            logger.info(f"Explicit quantization: {n} layers have Q/DQ weight scales")
    return network


def wants_dla(config: BuilderConfig) -> bool:
    """Whether the build may place layers on a DLA (what dynamic dimensions rule out)."""
    return (config.default_device == "dla" or config.dla_core is not None
            or config.placement_policy not in (None, "gpu-only"))


def build_with_profiles(model: str | Path | onnx.ModelProto, network: Network, shapes: dict,
                        config: BuilderConfig, logger: Logger) -> plan_format.PlanContents:
    """A plan for every shape inside ``config.profiles``: built at the first profile's opt shapes,
    keeping the source model (the refit record) that the runtime re-specialises per shape, the
    activation memory at each profile's max shapes, and -- when the DLA is requested -- why layers
    with a dynamic dimension stay off it (static profiles, min = opt = max, keep the DLA)."""
    from engine.ir.memory import plan_memory
    from engine.onnx_parser.dynamic import analyze_profile

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=True)
    builder = Builder(logger)
    refusals: dict[str, str] = {}
    if wants_dla(config):
        for profile in config.profiles:
            if not profile.is_static:
                analysis = analyze_profile(proto, profile)
                for tensor in analysis.dynamic:
                    refusals.setdefault(tensor, analysis.dynamic_reason(tensor))
    peaks = []
    for i, profile in enumerate(config.profiles):
        at_max = builder._optimize(parse_for_build(proto, profile.at("max"), config, logger), config)
        peaks.append(plan_memory(at_max).peak_bytes)
        if config.memory_limit is not None and peaks[-1] > config.memory_limit:
            raise BuildError(f"activation memory at the max shapes of optimization profile {i} needs {peaks[-1]} "
                             f"bytes, above the memory limit of {config.memory_limit} bytes")
    contents = builder.build(network, config, refit_onnx=proto, built_shapes=shapes, dla_refusals=refusals)
    contents.metadata["profile_max_memory"] = peaks
    return contents


def _shapes_to_build(model: str | Path | onnx.ModelProto, config: BuilderConfig) -> dict | None:
    """``input_shapes``, or with profiles the first profile's opt shapes (explicit shapes must lie inside it)."""
    if not config.profiles:
        return config.input_shapes or None
    from engine.ir.errors import ExecutionError
    from engine.onnx_parser.dynamic import check_profile

    for profile in config.profiles:
        check_profile(model, profile)
    shapes = {**config.profiles[0].at("opt"), **config.input_shapes}
    try:
        config.profiles[0].check(config.input_shapes)
    except ExecutionError as e:
        raise BuildError(f"input_shapes are outside optimization profile 0: {e}") from None
    return shapes


__all__ = ["Builder", "BuilderConfig", "Logger", "Severity", "build_from_onnx", "build_serialized", "serialize"]
