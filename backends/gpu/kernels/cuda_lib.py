"""CUDA libraries called through ctypes (cuBLAS, cuBLASLt, cuDNN): loaded once, on first use, with one
workspace per stream that every library on that stream shares.

Why a loader of our own: CuPy's wrappers re-bind their handle's stream on each call, which a CUDA
graph capture refuses (see ``cublas``). A library that fails to load is remembered, so every later
call reports the same reason instead of retrying, and ``available`` lets a tactic step aside.
A workspace is shared by stream because calls on one stream run in order: the cuBLAS handle's and
cuBLASLt's GEMMs on that stream never use it at the same time.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

from engine.ir.errors import ExecutionError

WORKSPACE_BYTES = 32 << 20  # cuBLAS's recommendation for Hopper


def open_versioned(stem: str) -> Any:
    """``lib<stem>.so`` of the CUDA major version CuPy runs on, else the unversioned name; raises
    OSError naming the last failure."""
    import cupy

    major = cupy.cuda.runtime.runtimeGetVersion() // 1000
    error = ""
    for name in (f"lib{stem}.so.{major}", f"lib{stem}.so"):
        try:
            return ctypes.CDLL(name)
        except OSError as e:
            error = f"cannot load {name}: {e}"
    raise OSError(error)


class LazyLibrary:
    """``lib<stem>``, loaded on the first ``get`` (by ``opener``, default ``open_versioned(stem)``) and
    its functions' argument types set by ``declare``."""

    def __init__(self, stem: str, label: str, declare: Callable[[Any], None],
                 opener: Callable[[], Any] | None = None) -> None:
        self.stem, self.label, self.declare = stem, label, declare
        self.opener = opener or (lambda: open_versioned(stem))
        self._lib: Any = None
        self._error: str | None = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        """The library; raises ExecutionError naming why it is not available."""
        with self._lock:
            if self._lib is None and self._error is None:
                try:
                    lib = self.opener()
                except OSError as e:
                    self._error = str(e)
                else:
                    self.declare(lib)
                    self._lib = lib
            if self._lib is None:
                raise ExecutionError(f"{self.label} is not available ({self._error})")
            return self._lib

    def available(self) -> bool:
        try:
            self.get()
            return True
        except Exception:  # no CuPy, no GPU, no library: the layer keeps another tactic
            return False


_workspaces: dict[tuple[int, int], Any] = {}
_workspaces_lock = threading.Lock()


def stream_key() -> tuple[int, int]:
    """(device, stream pointer) of the current stream: what handles and workspaces are kept by."""
    import cupy

    return cupy.cuda.runtime.getDevice(), cupy.cuda.get_current_stream().ptr


def stream_workspace(key: tuple[int, int] | None = None) -> Any:
    """The workspace (WORKSPACE_BYTES of device memory) of stream ``key`` (default: the current
    one), made on first use, which is never inside a capture (``LaunchSequence.capture`` runs every
    step once first)."""
    import cupy

    key = key or stream_key()
    with _workspaces_lock:
        if key not in _workspaces:
            _workspaces[key] = cupy.empty(WORKSPACE_BYTES, dtype=cupy.uint8)
        return _workspaces[key]
