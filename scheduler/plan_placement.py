"""The builder's placement step: policy + cost model -> device per layer, partitions, loadables.

Called by ``engine.builder`` for every build that is not the plain host GPU build. It returns the
plan's ``placement`` record and the DLA loadables (``PlanContents.loadables``, referenced by index
from the DLA partitions). The record:

* ``platform``, ``power_mode``, ``precision``, ``policy``, ``objective``, ``dla`` ({config, version,
  cores}: the runtime refuses plans whose DLA does not match its platform's);
* ``devices``: layer -> gpu | dla0 | dla1;
* ``partitions`` in execution order: device, backend, core, layers, boundary ``inputs``/``outputs``
  and their ``formats``, and for DLA partitions the ``loadable`` index;
* ``objective_values``: the solver's latency (ms), energy (mJ), transitions and loadables per core,
  and the value of the objective; ``messages``: TensorRT-style fallback messages.
* ``stages`` (policy ``pipeline`` only): per stage its device, layers and stage time (ms). The
  partitions follow the stages, one lane per device, so the executor pipelines frames: frame f+1
  enters the first stage while frame f is in a later one.
"""

from __future__ import annotations

from engine.ir.dtypes import Precision
from engine.ir.errors import BuildError
from engine.ir.logger import Logger
from engine.ir.network import Network

from .cost import FP32_ON_DLA, build_cost_model, is_pseudo
from .device_pins import pin_devices, resolve_pins
from .dla_compile import compile_partition
from .dla_source import BackendDlaSource
from .host_cost import gpu_refusals
from .partitions import split_partitions
from .platforms import get_platform
from .policies import POLICIES, run_policy

#: The builder's policies: the single-inference ones plus ``pipeline`` (stages for a stream of frames).
BUILD_POLICIES = (*POLICIES, "pipeline")
#: Frames the pipeline policy optimises for when building a plan (the steady state dominates).
PIPELINE_FRAMES = 100


def build_precision(config) -> Precision:
    return Precision.INT8 if config.int8 else (Precision.FP16 if config.fp16 else Precision.FP32)


def resolve_policy(config) -> str:
    if config.placement_policy:
        return config.placement_policy
    return "dla-first" if config.default_device == "dla" or config.dla_core is not None else "gpu-only"


def check_request(config) -> None:
    """Validation of the placement part of a BuilderConfig (called by BuilderConfig.validate)."""
    policy = resolve_policy(config)
    if policy == "concurrent":
        raise BuildError("placement policy 'concurrent' places several networks at once and has no single plan; "
                         "use 'hetrt place MODEL_A MODEL_B --policy concurrent'")
    if policy not in BUILD_POLICIES:
        raise BuildError(f"unknown placement policy '{policy}'; known: {', '.join(BUILD_POLICIES)}")
    platform = get_platform(config.platform)
    platform.mode(config.power_mode)
    wants_dla = policy != "gpu-only" or config.default_device == "dla" or config.dla_core is not None
    if wants_dla and not (config.fp16 or config.int8):
        raise BuildError(FP32_ON_DLA)
    if config.dla_core is not None and config.dla_core >= platform.dla_cores:
        raise BuildError(f"DLA core {config.dla_core} does not exist: platform {platform.name} has "
                         f"{platform.dla_cores} DLA cores")


def _keep_channel_shuffles_whole(network: Network, devices: dict[str, str], logger: Logger) -> None:
    """A DLA runs a channel shuffle's two Shuffle layers only together (their rank-5 middle tensor
    lives inside one loadable, ``backends.dla.shuffle``); a placement that splits them puts both on
    the GPU."""
    try:
        from backends.dla.shuffle import channel_shuffle_pair
    except ImportError:  # pragma: no cover - the DLA backend is part of the project
        return
    for layer in network.layers:
        pair = channel_shuffle_pair(network, layer)
        if pair is None or layer is not pair[0]:
            continue
        a, b = pair[0].name, pair[1].name
        if devices.get(a) != devices.get(b):
            logger.warning(f"Layers '{a}' and '{b}' form one channel shuffle: the placement split them, both run "
                           f"on the GPU")
            devices[a] = devices[b] = "gpu"


def _check_fallback(config, policy: str, devices: dict[str, str], reasons) -> None:
    """TensorRT's rule: with the DLA as default device and GPU fallback off, every layer must run on
    the DLA; otherwise the build fails naming each layer that cannot and why."""
    if config.gpu_fallback or policy != "dla-first":
        return
    on_gpu = [name for name, d in devices.items() if d == "gpu"]
    if on_gpu:
        shown = "; ".join(f"'{n}': {reasons.get(n, 'placed on the GPU')}" for n in on_gpu[:8])
        more = f" (and {len(on_gpu) - 8} more)" if len(on_gpu) > 8 else ""
        raise BuildError(f"GPU fallback is disabled and {len(on_gpu)} layer(s) cannot run on the DLA: {shown}{more}; "
                         f"allow GPU fallback (--allow-gpu-fallback) or change those layers")


class _RefusingDla:
    """A DLA cost source that refuses given layers with a given reason (dynamic shapes: the DLA
    runs static shapes only) and otherwise answers as ``inner``."""

    def __init__(self, inner, refusals: dict[str, str]) -> None:
        self.inner = inner
        self.refusals = refusals
        self.refused: set[str] = set()  # DLA-capable layers refused for a dynamic dimension

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def supports(self, layer, network: Network, precision: Precision) -> tuple[bool, str]:
        ok, why = self.inner.supports(layer, network, precision)
        if ok and layer.name in self.refusals:
            self.refused.add(layer.name)
            return False, self.refusals[layer.name]
        return ok, why

    def layer_costs(self, network: Network, precision: Precision, core: int) -> dict:
        costs = self.inner.layer_costs(network, precision, core)
        return {k: v for k, v in costs.items() if k not in self.refusals}


def place_network(network: Network, config, logger: Logger, gpu_backend: str,
                  dla_refusals: dict[str, str] | None = None) -> tuple[dict, list[bytes]]:
    """``dla_refusals``: layer -> why it may not run on the DLA (a dynamic dimension); it becomes
    that layer's fallback reason wherever the DLA could otherwise run it."""
    platform = get_platform(config.platform)
    mode = platform.mode(config.power_mode)
    precision = build_precision(config)
    policy = resolve_policy(config)
    dla = None
    # layers the GPU backend refuses run on the host CPU, where the builder cuts them out (a GPU here)
    host = gpu_refusals(network, precision) if gpu_backend == "gpu" else {}
    if dla_refusals and precision is not Precision.FP32 and platform.dla_cores > 0:
        dla = _RefusingDla(BackendDlaSource(platform, mode), dla_refusals)
    stages: list[dict] = []
    pins = resolve_pins(network, getattr(config, "layer_devices", None) or {})
    if policy == "gpu-only" and "dla" in pins.values():
        raise BuildError("a layer is pinned to the DLA but the placement is gpu-only: add --use-dla-core N "
                         "(or a --placement policy that uses the DLA)")
    if policy == "gpu-only":
        devices = {layer.name: "gpu" for layer in network}
        values: dict = {}
        messages: list[str] = []
    elif policy == "pipeline":
        from .studies.throughput_report import pipeline_devices

        model = pin_devices(build_cost_model(network, platform, mode.name, precision, dla=dla, host_layers=host), pins)
        plan, devices = pipeline_devices(model, PIPELINE_FRAMES)
        names = list(devices)
        stages = [{"device": st.device, "layers": names[st.first:st.stop], "time_ms": st.time} for st in plan.stages]
        values = {"period_ms": plan.period_ms, "latency_ms": plan.latency_ms, "throughput_fps": plan.throughput_fps,
                  "energy_per_frame_mj": plan.energy_per_frame_mj, "frames": plan.frames, "solver": plan.solver}
        messages = []
    else:
        model = pin_devices(build_cost_model(network, platform, mode.name, precision, dla=dla, host_layers=host), pins)
        result = run_policy(policy, model, config.objective, core=config.dla_core or 0)
        devices = {k: v for k, v in result.devices.items() if not is_pseudo(k)}
        values = {"latency_ms": result.latency, "energy_mj": result.energy, "transitions": result.transitions,
                  "loadables": dict(result.loadables), "objective": result.objective,
                  "objective_value": result.objective_value, "solver": result.solver}
        messages = list(result.messages)  # pseudo I/O nodes log nothing (Node.pseudo)
        for m in messages:
            logger.warning(m)
        # a layer pinned to the GPU is there on purpose (TensorRT's setDeviceType), not a fallback
        _check_fallback(config, policy, {k: v for k, v in devices.items() if pins.get(k) != "gpu"}, result.reasons)
    _keep_channel_shuffles_whole(network, devices, logger)
    for layer in network:
        layer.device = "dla" if devices[layer.name].startswith("dla") else "gpu"
    parts = split_partitions(network, devices, precision)
    loadables: list[bytes] = []
    records = []
    for spec in parts:
        rec = spec.to_dict()
        if spec.device == "dla":
            blob, bounds = compile_partition(network, spec, platform, mode, precision)
            loadables.append(blob)
            rec.update(backend="dla", loadable=len(loadables) - 1, **bounds)
        else:
            rec.update(backend=gpu_backend)
        records.append(rec)
    n_dla = sum(1 for d in devices.values() if d != "gpu")
    logger.info(f"Placement ({policy}, {platform.name} {mode.name}, {precision.value}): {n_dla} of {len(devices)} "
                f"layers on the DLA, {len(parts)} partitions, {len(loadables)} DLA loadables")
    placement = {
        "platform": platform.name, "power_mode": mode.name, "precision": precision.value, "policy": policy,
        "objective": config.objective,
        "dla": {"config": platform.dla_config, "version": platform.dla_version, "cores": platform.dla_cores},
        "devices": devices, "partitions": records, "objective_values": values, "messages": messages,
    }
    if stages:
        placement["stages"] = stages
    if dla is not None:  # which DLA-capable layers a dynamic dimension kept on the GPU, and why
        placement["fallback_reasons"] = {n: dla_refusals[n] for n in sorted(dla.refused)
                                         if devices.get(n) == "gpu"}
    return placement, loadables
