"""Whether the GPU backend can run here, with a reason a user can act on when it cannot."""

from __future__ import annotations

import functools
import importlib


@functools.cache
def gpu_available() -> tuple[bool, str]:
    """(True, device description) or (False, why not). CuPy is imported lazily, here only."""
    try:
        cupy = importlib.import_module("cupy")
    except ImportError as exc:
        return False, f"CuPy is not installed (pip install hetrt[gpu] or hetrt[gpu13]): {exc}"
    except Exception as exc:  # a broken CUDA install can raise anything at import
        return False, f"CuPy failed to import: {type(exc).__name__}: {exc}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"no usable CUDA driver or device: {type(exc).__name__}: {exc}"
    if count < 1:
        return False, "CUDA reports no GPU device"
    try:
        props = cupy.cuda.runtime.getDeviceProperties(0)
        major, minor = props["major"], props["minor"]
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    except Exception as exc:
        return False, f"cannot read GPU properties: {type(exc).__name__}: {exc}"
    if (major, minor) < (8, 0):
        return False, f"{name} is sm_{major}{minor}; the kernels need sm_80 or newer (mma.sync, cp.async)"
    try:
        probe = cupy.RawKernel(r'extern "C" __global__ void probe(int* p) { p[0] = 42; }', "probe")
        buf = cupy.zeros(1, dtype=cupy.int32)
        probe((1,), (1,), (buf,))
        if int(buf[0]) != 42:
            return False, "NVRTC probe kernel ran but wrote the wrong value"
    except Exception as exc:
        return False, f"NVRTC cannot compile or launch kernels: {type(exc).__name__}: {exc}"
    return True, f"{name} (sm_{major}{minor}), CuPy {cupy.__version__}"
