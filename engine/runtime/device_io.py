"""Caller buffers for ``ExecutionContext.execute_async``: host numpy arrays and device arrays.

Device arrays are any object with ``__cuda_array_interface__`` (CuPy arrays, PyTorch CUDA tensors,
Numba arrays) or DLPack (``__dlpack__``); they are viewed as CuPy arrays without copies. Streams
are CuPy streams, or any object with a ``cuda_stream`` handle (a ``torch.cuda.Stream``), or a raw
``cudaStream_t`` integer; outputs are copied into caller buffers on that stream without
synchronising. CuPy is imported only when a device object is actually given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from engine.ir.errors import ExecutionError


def is_device(obj: Any) -> bool:
    """True for a device array (CUDA array interface or DLPack), False for host numpy arrays."""
    if isinstance(obj, np.ndarray):
        return False
    return hasattr(obj, "__cuda_array_interface__") or hasattr(obj, "__dlpack__")


def shape_of(name: str, obj: Any) -> tuple[int, ...]:
    shape = getattr(obj, "shape", None)
    if shape is None:
        raise ExecutionError(f"tensor '{name}': expected a numpy array or a device array (CuPy, PyTorch CUDA "
                             f"tensor), got {type(obj).__name__}")
    return tuple(int(d) for d in shape)


def as_cupy(name: str, obj: Any) -> Any:
    """A CuPy view of a device array (no copy)."""
    import cupy

    if isinstance(obj, cupy.ndarray):
        return obj
    if hasattr(obj, "__cuda_array_interface__"):
        return cupy.asarray(obj)
    if hasattr(obj, "__dlpack__"):
        return cupy.from_dlpack(obj)
    raise ExecutionError(f"tensor '{name}': {type(obj).__name__} is not a device array")


def as_stream(stream: Any) -> Any:
    """A CuPy stream for ``stream`` (None stays None: the backend's own stream)."""
    if stream is None:
        return None
    import cupy

    if isinstance(stream, cupy.cuda.Stream | cupy.cuda.ExternalStream):
        return stream
    handle = getattr(stream, "cuda_stream", stream)
    if isinstance(handle, int):
        return cupy.cuda.ExternalStream(handle)
    raise ExecutionError(f"stream: expected a CuPy stream, an object with .cuda_stream or a cudaStream_t "
                         f"integer, got {type(stream).__name__}")


def check_output(name: str, dst: Any, shape: tuple[int, ...], dtype: np.dtype) -> None:
    got = shape_of(name, dst)
    if got != shape:
        raise ExecutionError(f"output buffer '{name}' has shape {got}; the output's shape is {shape}")
    got_dtype = np.dtype(str(getattr(dst, "dtype", "")).replace("torch.", "")) if hasattr(dst, "dtype") else None
    if got_dtype != dtype:
        raise ExecutionError(f"output buffer '{name}' has dtype {getattr(dst, 'dtype', None)}; the output's is "
                             f"{dtype}")
    if isinstance(dst, np.ndarray) and not (dst.flags.writeable and dst.flags.c_contiguous):
        raise ExecutionError(f"output buffer '{name}' must be a writable C-contiguous array")


def deliver(outputs: Mapping[str, Any], buffers: Mapping[str, Any], stream: Any) -> dict[str, Any]:
    """Copy each produced output into the caller's buffer of that name, on ``stream`` for device
    results (no synchronisation); names without a buffer keep the produced array."""
    out = dict(outputs)
    for name, dst in buffers.items():
        src = outputs[name]
        if isinstance(src, np.ndarray) and not is_device(dst):
            np.copyto(dst, src, casting="same_kind")
        else:
            import cupy

            s = as_stream(stream) or cupy.cuda.get_current_stream()
            with s:
                if isinstance(src, np.ndarray):
                    src = cupy.asarray(src)
                if src.dtype != dst.dtype and isinstance(dst, np.ndarray):
                    src = src.astype(dst.dtype)
                if isinstance(dst, np.ndarray):
                    src.get(stream=s, out=dst)
                else:
                    cupy.copyto(as_cupy(name, dst), src, casting="same_kind")
        out[name] = dst
    return out
