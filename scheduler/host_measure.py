"""Measured per-layer GPU times on this machine (the ``host`` platform's GPU clock).

With a CUDA GPU and CuPy, each layer is compiled alone as a GPU partition (the backend's own
kernels and tactics), captured into a CUDA graph, and its replay is timed with CUDA events:
the mean of ``GPU_REPLAYS`` back-to-back replays after a warm-up. A layer the GPU kernels cannot
run is timed on the reference backend, as the engine would run it. Without a GPU, the numpy
reference backend is timed on the CPU (the architecture's CPU fallback) and the reason is
reported. CPU times are the median of ``repeats`` runs after one warm-up run; every layer runs on
random inputs of its tensors' shapes and dtypes.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from engine.ir.dtypes import Precision
from engine.ir.layers import SHAPE_ONLY
from engine.ir.network import Network


def measured_backend() -> str:
    try:
        from backends.gpu.availability import gpu_available

        ok, why = gpu_available()
    except ImportError:
        ok, why = False, "backends.gpu is not installed"
    if ok:
        return "GPU backend, CUDA-event timing of each layer's captured graph"
    return f"numpy reference backend on the CPU; GPU backend unavailable: {why}"


GPU_REPLAYS = 20


def gpu_ok() -> bool:
    try:
        from backends.gpu.availability import gpu_available
    except ImportError:
        return False
    return gpu_available()[0]


def _random_args(network: Network, layer, rng: np.random.Generator) -> list[np.ndarray]:
    args = []
    for t in layer.inputs:
        spec = network.tensors[t]
        dt = spec.dtype.numpy
        args.append(rng.standard_normal(spec.shape).astype(dt) if dt.kind == "f" else np.zeros(spec.shape, dt))
    return args


def measure_layers(network: Network, repeats: int = 3, seed: int = 0) -> dict[str, float]:
    """Seconds per layer: on the GPU backend when it can run here, else the reference backend."""
    return measure_layers_gpu(network, seed=seed) if gpu_ok() else measure_layers_cpu(network, repeats, seed)


def measure_layers_gpu(network: Network, seed: int = 0) -> dict[str, float]:
    """Seconds per layer from CUDA events around replays of the layer's own captured graph."""
    import cupy

    from backends.gpu.backend import GpuPartition
    from engine.ir.logger import Logger, Severity

    rng = np.random.default_rng(seed)
    quiet = Logger(Severity.ERROR)
    out: dict[str, float] = {}
    fallback: list = []
    network = network.copy()
    for layer in network.layers:  # layers without a pinned precision run as the GPU engine runs them: FP16
        if layer.precision is None and layer.kind not in SHAPE_ONLY:
            layer.precision = Precision.FP16
    for layer in network.layers:
        part = GpuPartition(network, [layer.name], logger=quiet)
        if part.fallback_layers:
            fallback.append(layer)
            continue
        ctx = part.create_context()
        ctx.execute_device(dict(zip(layer.inputs, _random_args(network, layer, rng))))  # stage + warm up
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record(ctx.stream)
        for _ in range(GPU_REPLAYS):
            ctx.enqueue()
        end.record(ctx.stream)
        end.synchronize()
        out[layer.name] = cupy.cuda.get_elapsed_time(start, end) / GPU_REPLAYS / 1e3
    if fallback:
        sub = measure_layers_cpu(network, seed=seed, only={la.name for la in fallback})
        out.update(sub)
    return out


def measure_layers_cpu(network: Network, repeats: int = 3, seed: int = 0,
                       only: set[str] | None = None) -> dict[str, float]:
    """Seconds per layer, measured with the reference backend on the CPU."""
    from backends.reference import run_layer

    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    for layer in network.layers:
        if only is not None and layer.name not in only:
            continue
        args = _random_args(network, layer, rng)
        run_layer(layer, args)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run_layer(layer, args)
            times.append(time.perf_counter() - t0)
        out[layer.name] = statistics.median(times)
    return out
