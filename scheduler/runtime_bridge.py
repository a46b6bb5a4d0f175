"""The runtime's path for plans with DLA partitions: check the plan's DLA, then execute through
``scheduler.executor`` (one worker per DLA core and one for the GPU, events on every hand-off).

GPU partitions run layer by layer on the engine's GPU backend (the reference backend where no GPU
exists); DLA partitions run their loadables on dla_sim through ``backends.dla``. Each execution
uses fresh per-frame tensors rather than the context's arena, so pipelined frames never share
buffers. ``last_events`` on the context holds the event log of its last execution (measured clock).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from engine.ir.dtypes import Precision
from engine.ir.errors import PlanError

from . import dla_exec
from .executor import PartitionExecutor, gpu_layer_runner
from .partitions import specs_from_records
from .platforms import PLATFORMS


def check_dla_platform(platform_tag: str, placement: dict) -> None:
    """Refuse a plan whose DLA partitions were built for another DLA than the platform's."""
    rec = placement.get("dla")
    plat = PLATFORMS.get(platform_tag)
    if plat is None:
        raise PlanError(f"plan targets platform '{platform_tag}', which has no SoC model to run DLA partitions on")
    if not isinstance(rec, dict):
        raise PlanError("plan placement has DLA partitions but no 'dla' record (version, cores); rebuild the plan")
    if rec.get("version") != plat.dla_version or rec.get("cores") != plat.dla_cores:
        raise PlanError(f"plan's DLA partitions were built for {rec.get('cores')} DLA v{rec.get('version')} "
                        f"core(s), but platform '{platform_tag}' has {plat.dla_cores} DLA v{plat.dla_version} "
                        f"core(s); rebuild the plan for this platform")
    for i, p in enumerate(placement.get("partitions", [])):
        if p.get("device") == "dla":
            core = p.get("core")
            if not isinstance(core, int) or not 0 <= core < plat.dla_cores:
                raise PlanError(f"plan partition {i} runs on DLA core {core!r}; platform '{platform_tag}' has "
                                f"cores 0..{plat.dla_cores - 1}")


class HeteroRunner:
    def __init__(self, platform_tag: str, contents, logger) -> None:
        placement = contents.placement
        check_dla_platform(platform_tag, placement)
        self.platform = PLATFORMS[platform_tag]
        self.mode = self.platform.mode(placement.get("power_mode"))
        network = contents.network
        self.network = network
        records = placement["partitions"]
        self.precision = Precision(placement.get("precision", "fp16"))
        self.specs = specs_from_records(network, records, self.precision)
        loadable_of = {}
        for r in records:
            if r.get("device") == "dla":
                idx = r.get("loadable")
                if not isinstance(idx, int) or not 0 <= idx < len(contents.loadables):
                    raise PlanError(f"plan DLA partition {r['layers'][:1]}... names loadable {idx!r}, the plan has "
                                    f"{len(contents.loadables)}")
                loadable_of[tuple(r["layers"])] = (idx, r)
        self._loadables = list(contents.loadables)
        self._loadable_of = loadable_of
        self._logger = logger
        self._runners = None
        self._tactics = contents.tactics if isinstance(contents.tactics, dict) else {}
        # GPU partitions the builder meant for the GPU backend (others were built for the reference)
        self._gpu_recorded = {tuple(r["layers"]) for r in records
                              if r.get("device", "gpu") == "gpu" and r.get("backend") == "gpu"}
        self._gpu_programs = None  # partition index -> compiled GPU partition (engine-level, shared)

    def gpu_programs(self) -> dict:
        """GPU partitions compiled for the GPU backend when it can run here ({} otherwise: the
        reference backend runs them). A partition that fails to compile runs on the reference."""
        if self._gpu_programs is None:
            from engine.runtime import _partition_factory

            factory = _partition_factory("gpu")
            programs = {}
            for spec in self.specs:
                if spec.device != "gpu" or factory is None or tuple(spec.layers) not in self._gpu_recorded:
                    continue
                try:
                    programs[spec.index] = factory(self.network, tuple(spec.layers), self._tactics, self._logger)
                except Exception as e:  # a device failure must not make the plan unusable
                    self._logger.warning(f"GPU partition {spec.index} could not be compiled ({type(e).__name__}: "
                                         f"{e}); it runs on the reference backend")
            self._gpu_programs = programs
        return self._gpu_programs

    def _context_runners(self, context) -> dict:
        """The engine's runners, with GPU partitions bound to this execution context's own GPU
        contexts (arena, stream and CUDA graph per execution context, as the runtime does)."""
        runners = dict(self._runners)
        for index, program in self.gpu_programs().items():
            key = ("hetero-gpu", index)
            ctx = context._group_contexts.get(key)
            if ctx is None:
                ctx = context._group_contexts[key] = program.create_context()

            def run(p, args, ctx=ctx, program=program):
                outs = ctx.execute({t: args[t] for t in program.inputs})
                return {t: outs[t] for t in p.outputs}

            runners[index] = run
        return runners

    def _build_runners(self) -> dict:
        from engine.runtime import EXECUTORS, FALLBACK_BACKEND

        gpu_backend = FALLBACK_BACKEND
        runners = {}
        for spec in self.specs:
            if spec.device == "gpu":
                runners[spec.index] = gpu_layer_runner(self.network, EXECUTORS[gpu_backend]())
            else:
                hit = self._loadable_of.get(tuple(spec.layers))
                if hit is None:
                    raise PlanError(f"plan DLA partition with layers {list(spec.layers)[:3]} has no loadable")
                idx, record = hit
                runners[spec.index] = dla_exec.dla_runner_factory(self.platform, self.mode, spec.core,
                                                                  self._loadables[idx], record, self.network,
                                                                  self.precision)
        return runners

    @staticmethod
    def profile_name(spec) -> str:
        """TensorRT names a DLA subgraph {ForeignNode[first...last]}; GPU partitions likewise by range."""
        span = spec.layers[0] if len(spec.layers) == 1 else f"{spec.layers[0]}...{spec.layers[-1]}"
        return f"{{ForeignNode[{span}]}} ({spec.lane})" if spec.device == "dla" else f"[{span}] (gpu)"

    def executor(self, delays: Mapping[str, float] | None = None, seed: int = 0, context=None) -> PartitionExecutor:
        if self._runners is None:
            self._runners = self._build_runners()
        runners = self._context_runners(context) if context is not None else self._runners
        return PartitionExecutor(self.specs, runners, self.network.inputs, self.network.outputs, delays, seed)

    def execute(self, context, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.execute_frames(context, [feeds])
        return out[0]

    def execute_frames(self, context, frames: Sequence[Mapping[str, np.ndarray]],
                       delays: Mapping[str, float] | None = None, seed: int = 0) -> list[dict[str, np.ndarray]]:
        checked = [context._check_feeds(f) for f in frames]
        outs, events = self.executor(delays, seed, context).run(checked)
        context.last_events = events
        profiler = getattr(context, "profiler", None)
        if profiler is not None:  # one record per partition run, as TensorRT reports a DLA subgraph
            for ev in events:
                profiler.report_layer_time(self.profile_name(self.specs[ev.partition]), (ev.end - ev.start) * 1e3)
        io = context.engine._io_by_name
        return [{t: np.array(o[t], dtype=io[t].dtype.numpy, copy=True) for t in context.engine.output_names}
                for o in outs]
