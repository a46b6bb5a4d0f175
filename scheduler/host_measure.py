"""Measured per-layer GPU times on this machine (the ``host`` platform's GPU clock).

With a CUDA GPU and CuPy the GPU backend would be timed; that backend exposes no per-layer timing
entry point here yet, so the numpy reference backend is timed on the CPU whenever the GPU backend
is unavailable (its reason is reported) -- the architecture's CPU fallback. Each layer runs on
random inputs of its tensors' shapes and dtypes; the time is the median of ``repeats`` runs after
one warm-up run.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from engine.network import Network


def measured_backend() -> str:
    try:
        from backends.gpu.availability import gpu_available

        ok, why = gpu_available()
    except ImportError:
        ok, why = False, "backends.gpu is not installed"
    return "numpy reference backend on the CPU" + ("" if ok else f"; GPU backend unavailable: {why}")


def measure_layers(network: Network, repeats: int = 3, seed: int = 0) -> dict[str, float]:
    """Seconds per layer, measured with the reference backend."""
    from backends.reference import run_layer

    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    for layer in network.layers:
        args = []
        for t in layer.inputs:
            spec = network.tensors[t]
            dt = spec.dtype.numpy
            a = rng.standard_normal(spec.shape).astype(dt) if dt.kind == "f" else np.zeros(spec.shape, dt)
            args.append(a)
        run_layer(layer, args)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run_layer(layer, args)
            times.append(time.perf_counter() - t0)
        out[layer.name] = statistics.median(times)
    return out
