"""The GPU backend: lowered segments on one arena, captured once into a CUDA graph.

``GpuBackend`` is the backend contract (``backends.contract``) the runtime uses: ``supports`` is
asked by the builder, which places every layer the GPU kernels cannot run on the reference backend
(a host partition, with the reason, in the plan); ``compile`` builds a ``GpuPartition`` and refuses
a partition holding such a layer, so the runtime never re-partitions.

``GpuPartition`` is built once per engine (weights uploaded, kernels compiled, tactics bound) and
``create_context()`` gives each execution context its own arena, stream and captured graph, so
several contexts of one engine run side by side. Used on its own (tests, tactic timing, layer
studies) it also accepts layers without a GPU kernel: they split the partition into segments and
run on the reference backend in between (logged once per layer with its reason).

``execute`` stages host inputs into the arena, replays the graph and copies the outputs back.
``execute_device`` takes and returns CuPy arrays (no host copies); ``execute_async`` stages and
replays on a caller's stream without synchronizing; ``enqueue`` replays inputs already staged.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from backends.contract import CompileOptions, PartitionDesc, ProfileRecord, TensorStore
from backends.gpu import eager
from backends.gpu.arena import Arena, buffer_uses, plan_offsets
from backends.gpu.availability import gpu_available
from backends.gpu.graph import LaunchSequence
from backends.gpu.lower import Lowered, Op, lower, supports
from engine.ir.errors import UnsupportedError
from engine.ir.layers import LayerKind
from engine.ir.logger import Logger
from engine.ir.network import Layer, Network
from engine.ir.partition_io import partition_io


@dataclass
class _Unit:
    """A GPU segment (``lowered`` set) or one reference layer (``layer`` set)."""

    inputs: list[str]
    outputs: list[str]
    lowered: Lowered | None = None
    layer: Layer | None = None
    consts: dict[str, Any] | None = None
    module_src: str = ""


def split_segments(network: Network, names: list[str], logger: Logger | None = None) -> list[tuple[bool, list[Layer]]]:
    """Consecutive runs of GPU-runnable layers, and single layers that fall back (reason logged)."""
    by_name = {la.name: la for la in network.layers}
    out: list[tuple[bool, list[Layer]]] = []
    for name in names:
        layer = by_name[name]
        ok, why = supports(layer, network)
        if not ok and logger is not None:
            logger.info(f"GPU backend: layer '{name}' ({layer.kind.value}) runs on the reference backend: {why}")
        if ok and out and out[-1][0]:
            out[-1][1].append(layer)
        else:
            out.append((ok, [layer]))
    return out


def segment_outputs(segments: list[tuple[bool, list[Layer]]], outputs: list[str] | set[str]) -> list[list[str]]:
    """For each segment of ``split_segments``, the tensors it must leave: the partition's
    ``outputs`` it produces and those a later segment reads."""
    needed = []
    for i, (_, layers) in enumerate(segments):
        later = {t for _, ls in segments[i + 1:] for la in ls for t in la.inputs}
        needed.append([t for la in layers for t in la.outputs if t in outputs or t in later])
    return needed


class GpuPartition:
    """One placement partition compiled for the GPU (engine-level, shared by contexts)."""

    def __init__(self, network: Network, layer_names: list[str] | tuple[str, ...], tactics: dict | None = None,
                 logger: Logger | None = None) -> None:
        import cupy

        from backends.gpu.kernels import conv as convk
        from backends.gpu.kernels import direct
        from backends.gpu.kernels.compile import compile_concurrently

        self.network = network
        self.logger = logger or Logger()
        names = list(layer_names)
        io = partition_io(network, names)
        self.inputs, self.outputs = list(io.inputs), list(io.outputs)
        segments = split_segments(network, names, self.logger)
        self.units: list[_Unit] = []
        for (on_gpu, layers), needed in zip(segments, segment_outputs(segments, self.outputs)):
            ins = list(partition_io(network, layers).inputs)
            if not on_gpu:
                self.units.append(_Unit(ins, needed, layer=layers[0], consts=eager.prepare(layers[0])))
                continue
            low = lower(network, layers, needed, tactics)
            consts = {k: cupy.asarray(s.const) for k, s in low.slots.items() if s.const is not None}
            self.units.append(_Unit(low.inputs, needed, lowered=low, consts=consts, module_src=low.source))
        # compile every module now (side by side), so the first execute does not pay NVRTC
        kinds = {op.kind for u in self.units if u.lowered for op in u.lowered.ops}
        tasks: list[Callable[[], object]] = [direct.compile_all]
        if kinds & {"conv", "conv_cublas", "conv_cublaslt", "conv_cudnn", "conv_gemv"}:
            tasks += convk.compile_tasks()
        if "conv_gdirect" in kinds:
            from backends.gpu.kernels import grouped

            tasks.append(grouped.compile_all)
        if kinds & {"conv8", "dwconv8", "pool8", "quant8"}:
            from backends.gpu.kernels import int8 as int8k

            tasks += int8k.compile_tasks()
        compile_concurrently(tasks)
        for u in self.units:  # the generated kernels' modules (CuPy compiles them at their first lookup)
            if u.lowered is not None and any(op.kind == "gen" for op in u.lowered.ops):
                _module(u.module_src)
        n_gpu = sum(len(u.lowered.ops) for u in self.units if u.lowered)
        n_ref = sum(1 for u in self.units if u.layer is not None)
        self.logger.info(f"GPU partition: {len(names)} layers -> {n_gpu} launches in "
                         f"{sum(1 for u in self.units if u.lowered)} CUDA graph(s); {n_ref} layers on the reference "
                         f"backend")

    @property
    def has_host_layers(self) -> bool:
        """Layers run on the reference backend (host arrays in and out); eager GPU layers are not."""
        return any(u.layer is not None and not eager.runs_eagerly(u.layer) for u in self.units)

    @property
    def fallback_layers(self) -> list[str]:
        return [u.layer.name for u in self.units if u.layer is not None]

    def create_context(self) -> GpuPartitionContext:
        return GpuPartitionContext(self)


def _module(source: str) -> Any:
    from backends.gpu.kernels.compile import get_module

    return get_module(source)


class SegmentRun:
    """A segment bound to one context: arena views, launch closures, the captured graph."""

    def __init__(self, unit: _Unit, stream: Any) -> None:
        import cupy

        low = unit.lowered
        assert low is not None
        self.unit = unit
        self.stream = stream
        ops = low.ops
        uses = buffer_uses(low)
        offsets, total = plan_offsets(uses)
        self.arena = Arena(total)
        self.activation_bytes = sum(u.nbytes for u in uses)
        views: dict[str, Any] = {}
        for nm, off in offsets.items():
            if nm.startswith("@ws"):
                views[nm] = self.arena.view(off, (ops[int(nm[3:])].workspace // 4,), cupy.float32)
            else:
                s = low.slots[nm]
                views[nm] = self.arena.view(off, s.phys_shape, s.dtype)
        for nm, s in low.slots.items():  # a slot aliasing another is a view of its bytes
            if s.alias is not None:
                views[nm] = views[s.alias].reshape(s.phys_shape)
        views.update(unit.consts or {})
        self.views = views
        seq = LaunchSequence()
        mod = _module(unit.module_src) if any(op.kind == "gen" for op in ops) else None
        for i, op in enumerate(ops):
            seq.add(op.label, _launcher(op, views, mod, views.get(f"@ws{i}")))
        self.seq = seq
        self.graph = seq.capture(stream)

    def stage(self, feeds: Mapping[str, Any], stream: Any | None = None) -> None:
        import cupy

        stream = stream or self.stream
        low = self.unit.lowered
        for name in low.inputs:
            dst = self.views[name]
            src = feeds[name]
            if isinstance(src, np.ndarray):
                dst.set(np.ascontiguousarray(src, dtype=dst.dtype), stream=stream)
            else:
                with stream:
                    cupy.copyto(dst, cupy.asarray(src).reshape(dst.shape).astype(dst.dtype, copy=False))

    def device_outputs(self) -> dict[str, Any]:
        """The outputs as views of this context's arena (valid until the next replay)."""
        low = self.unit.lowered
        return {t: self.views[slot].reshape(low.slots[slot].shape) for t, slot in low.outputs.items()}

    def outputs(self, host: bool) -> dict[str, Any]:
        low = self.unit.lowered
        out = {}
        for t, slot in low.outputs.items():
            v = self.views[slot].reshape(low.slots[slot].shape)
            out[t] = v.get(stream=self.stream) if host else v.copy()
        return out


def _launcher(op: Op, views: dict[str, Any], mod: Any, ws: Any) -> Any:
    from backends.gpu.kernels import direct
    from backends.gpu.kernels.conv import conv2d

    if op.kind == "gen":
        fn = mod.get_function(op.kernel)
        if op.smem > 48 * 1024 and fn.max_dynamic_shared_size_bytes < op.smem:
            fn.max_dynamic_shared_size_bytes = op.smem  # opt in beyond the default 48 KB
        args = tuple(views[a] for a in op.args)
        return lambda: fn(op.grid, (op.block,), args, shared_mem=op.smem)
    info = op.info
    x, y = views[info["x"]], views[info["y"]]
    if op.kind == "conv":
        g, t = info["geom"], info["tactic"]
        w, b = views[info["w"]], views[info["b"]]
        res = views[info["res"]] if info["res"] else None
        sc = views[info["scale"]] if info.get("scale") else None
        return lambda: conv2d(x, w, b, y, g, t, info["act"], res, ws, sc)
    if op.kind in ("conv_cublas", "conv_cublaslt", "conv_cudnn", "conv_gemv"):  # a whole-layer tactic
        from backends.gpu.kernels.conv import conv2d_cublas, conv2d_cublaslt, conv2d_cudnn, conv2d_gemv

        whole = {"conv_cublas": conv2d_cublas, "conv_cublaslt": conv2d_cublaslt, "conv_gemv": conv2d_gemv,
                 "conv_cudnn": functools.partial(conv2d_cudnn, algo=info.get("algo"))}[op.kind]
        w, b = views[info["w"]], views[info["b"]]
        res = views[info["res"]] if info["res"] else None
        return lambda: whole(x, w, b, y, info["geom"], info["act"], res)
    if op.kind == "conv_gdirect":
        from backends.gpu.kernels.grouped import grouped_conv

        w, b = views[info["w"]], views[info["b"]]
        res = views[info["res"]] if info["res"] else None
        return lambda: grouped_conv(x, w, b, y, info["geom"], info["groups"], info["tactic"], info["act"], res)
    if op.kind == "gemm_cublas":
        from backends.gpu.kernels import cublas

        w = views[info["w"]]
        return lambda: cublas.gemm(info["plan"], x, w, y)
    if op.kind == "depthwise":
        w, b = views[info["w"]], views[info["b"]]
        res = views[info["res"]] if info["res"] else None
        return lambda: direct.depthwise_conv(x, w, b, y, info["geom"], info["act"], res)
    if op.kind == "gpool":
        return lambda: direct.global_pool(x, y, info["n"], info["hw"], info["c"], info["ldy"], info["average"])
    if op.kind == "s2d":
        return lambda: direct.nchw_to_s2d(x, y, info["shape"])
    if op.kind == "pool":
        return lambda: direct.pool2d(x, y, info["geom"], info["average"], info["count_pad"])
    if op.kind in ("conv8", "dwconv8", "pool8", "quant8"):
        from backends.gpu.kernels import int8 as int8k

        if op.kind == "dwconv8":
            from backends.gpu.kernels.int8_dw import dwconv2d_s8

            epi = int8k.DeviceEpilogue.upload(info["epi"])
            res = views[info["res"]] if info["res"] else None
            return lambda: dwconv2d_s8(x, views[info["w"]], y, info["geom"], epi, res, info["ldy"])
        if op.kind == "quant8":
            return lambda: int8k.quantize_nchw(x, y, info["shape"], info["scale"], info["s2d"])
        if op.kind == "pool8":
            return lambda: int8k.pool2d_s8(x, y, info["geom"], info["average"])
        g, t, w = info["geom"], info["tactic"], views[info["w"]]
        epi = int8k.DeviceEpilogue.upload(info["epi"])
        res = views[info["res"]] if info["res"] else None
        return lambda: int8k.conv2d_s8(x, w, y, g, t, epi, res, ws, info["ldy"])
    raise ValueError(op.kind)


class GpuPartitionContext:
    """Per execution context: one stream, and per segment an arena and a captured CUDA graph."""

    def __init__(self, partition: GpuPartition) -> None:
        import cupy

        self.partition = partition
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.runs = [SegmentRun(u, self.stream) if u.lowered is not None else None for u in partition.units]

    @property
    def device_memory_size(self) -> int:
        """Arena bytes this context holds (activations and scratch, all segments)."""
        return sum(r.arena.nbytes for r in self.runs if r is not None)

    @property
    def activation_bytes_without_reuse(self) -> int:
        return sum(r.activation_bytes for r in self.runs if r is not None)

    def execute(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Host arrays in, host arrays out (the runtime's seam)."""
        return self._run(feeds, host=True)

    def execute_device(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """CuPy (or host) arrays in, CuPy arrays out; no host copy of the outputs."""
        return self._run(feeds, host=False)

    def execute_async(self, feeds: Mapping[str, Any] | None, stream: Any | None = None) -> dict[str, Any]:
        """Stage ``feeds`` (host or CuPy arrays; None keeps what is staged) and replay on ``stream``
        without synchronizing; returns the outputs as CuPy views of the arena, valid until the next
        run. Needs a partition that is one CUDA graph (no reference-backend layers)."""
        if len(self.runs) != 1 or self.runs[0] is None:
            raise UnsupportedError("execute_async needs a GPU partition that is one CUDA graph; this one has "
                                   f"{len(self.runs)} segment(s) and reference-backend layers "
                                   f"{self.partition.fallback_layers}")
        run = self.runs[0]
        stream = stream or self.stream
        if feeds is not None:
            run.stage(feeds, stream)
        run.graph.graph.launch(stream)
        return run.device_outputs()

    def enqueue(self, stream: Any | None = None) -> None:
        """Replay every segment's graph on ``stream`` (inputs already staged; GPU-only partitions)."""
        if any(r is None for r in self.runs):
            raise RuntimeError("enqueue needs a partition without reference-backend layers")
        for r in self.runs:
            r.graph.graph.launch(stream or self.stream)

    def profile_layers(self, feeds: dict[str, Any]) -> tuple[dict[str, np.ndarray], list[tuple[str, float]]]:
        """One execution with each launch timed on its own (CUDA events, no graph): host outputs
        and (layer, ms) in execution order, the launches of one fused layer summed."""
        times: dict[str, float] = {}
        outs = self._run(feeds, host=True, times=times)
        return outs, list(times.items())

    def _run(self, feeds: dict[str, Any], host: bool, times: dict[str, float] | None = None) -> dict[str, Any]:
        from backends.reference import run_layer

        env: dict[str, Any] = dict(feeds)
        for unit, run in zip(self.partition.units, self.runs):
            if run is None:
                layer = unit.layer
                if eager.runs_eagerly(layer):
                    outs = eager.run(layer, [env[t] for t in layer.inputs], unit.consts, self.stream, host)
                else:
                    outs = run_layer(layer, [_to_host(env[t]) for t in layer.inputs])
                env.update(zip(layer.outputs, outs))
                continue
            run.stage(env)
            if times is None:
                run.graph.replay()
            else:
                for label, ms in run.seq.profile(self.stream):
                    times[label] = times.get(label, 0.0) + ms
            # host outputs feed reference layers and the caller; device outputs stay on the GPU
            outs = run.outputs(host or self.partition.has_host_layers)
            self.stream.synchronize()
            env.update(outs)
        return {t: _to_host(env[t]) if host else env[t] for t in self.partition.outputs}


def _to_host(a: Any) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else a.get()


class GpuBackend:
    """The GPU backend behind the backend contract."""

    name = "gpu"

    def available(self) -> tuple[bool, str]:
        return gpu_available()

    def supports(self, layer: Layer, network: Network) -> str | None:
        if eager.runs_eagerly(layer):  # on the context's stream between the graphs (backends/gpu/eager.py)
            return None
        ok, why = supports(layer, network)
        if layer.kind is LayerKind.PLUGIN:
            why = "plugin layer without a registered GPU implementation: it runs its reference one"
        return None if ok else why

    def compile(self, partition: PartitionDesc, network: Network, options: CompileOptions) -> GpuCompiled:
        by_name = {la.name: la for la in network.layers}
        refused = [(n, why) for n in partition.layers if (why := self.supports(by_name[n], network)) is not None]
        if refused:
            shown = "; ".join(f"'{n}': {why}" for n, why in refused[:4])
            raise UnsupportedError(f"partition {partition.name} was placed on the GPU backend but {len(refused)} "
                                   f"of its layers have no GPU kernel ({shown}); rebuild the plan so the builder "
                                   "places them on the reference backend")
        program = GpuPartition(network, partition.layers, dict(options.tactics), options.logger)
        return GpuCompiled(partition, program)


class GpuCompiled:
    """A compiled GPU partition (engine-level) as the runtime sees it."""

    def __init__(self, desc: PartitionDesc, program: GpuPartition) -> None:
        self.desc = desc
        self.program = program
        self.profile_name = f"[{desc.span}] ({desc.lane})"

    def create_context(self) -> GpuContext:
        return GpuContext(self)

    def describe(self) -> dict[str, Any]:
        """Launches per kernel kind and the tactic of every convolution (for reports)."""
        ops = [op for u in self.program.units if u.lowered is not None for op in u.lowered.ops]
        kinds: dict[str, int] = {}
        tactics: dict[str, int] = {}
        for op in ops:
            kinds[op.kind] = kinds.get(op.kind, 0) + 1
            name = (op.info["tactic"].name if op.kind in ("conv", "conv8", "conv_gdirect")
                    else op.kind.removeprefix("conv_") if op.kind.startswith("conv_") else None)
            if name is not None:
                tactics[name] = tactics.get(name, 0) + 1
        return {"backend": "gpu", "graphs": sum(1 for u in self.program.units if u.lowered is not None),
                "launches": len(ops), "kernels": kinds, "tactics": tactics}


class GpuContext:
    """Per execution context state of a compiled GPU partition: its ``GpuPartitionContext``."""

    def __init__(self, compiled: GpuCompiled) -> None:
        self.compiled = compiled
        self.program_context = compiled.program.create_context()

    @property
    def segment(self) -> SegmentRun:
        """The partition's one CUDA graph with its arena and stream (for device-side timing)."""
        return self.program_context.runs[0]

    layer_profiling = False  # set by the runtime while a profiler is attached: per-launch records

    def set_layer_profiling(self, on: bool) -> None:
        self.layer_profiling = on

    def execute(self, store: TensorStore) -> list[ProfileRecord]:
        feeds = {t: store.get(t) for t in self.compiled.program.inputs}
        if self.layer_profiling:
            outs, times = self.program_context.profile_layers(feeds)
            for name, value in outs.items():
                store.put(name, value)
            return [ProfileRecord(name, ms) for name, ms in times]
        t0 = time.perf_counter()
        outs = self.program_context.execute(feeds)
        for name, value in outs.items():
            store.put(name, value)
        return [ProfileRecord(self.compiled.profile_name, (time.perf_counter() - t0) * 1e3)]

    def execute_async(self, feeds: Mapping[str, Any] | None, stream: Any | None = None) -> dict[str, Any]:
        return self.program_context.execute_async(feeds, stream)

    def enqueue(self, stream: Any | None = None) -> None:
        self.program_context.enqueue(stream)

