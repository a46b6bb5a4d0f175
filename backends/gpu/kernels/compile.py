"""NVRTC compilation with an in-process module cache.

A module is keyed by its source text, its compile options and the target architecture, so each
distinct kernel set compiles once per process. CuPy keeps its own on-disk cache of cubins, which
makes later processes start fast too.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

_lock = threading.Lock()
_modules: dict[tuple[str, tuple[str, ...], str], Any] = {}


def device_arch() -> str:
    """The current device's target, e.g. 'sm_90'."""
    import cupy

    return f"sm_{cupy.cuda.Device().compute_capability}"  # CuPy gives e.g. '90'


def get_module(source: str, name_expressions: Sequence[str] = (), options: Sequence[str] = (),
               arch: str | None = None) -> Any:
    """A compiled ``cupy.RawModule`` for ``source`` (cached). ``arch`` defaults to the device's."""
    import cupy

    arch = arch or device_arch()
    opts = ("--std=c++17", f"-arch={arch}", *options)
    key = (hashlib.sha256(source.encode()).hexdigest(), opts + tuple(name_expressions), arch)
    with _lock:
        mod = _modules.get(key)
        if mod is None:
            mod = cupy.RawModule(code=source, options=opts, name_expressions=list(name_expressions) or None)
            _modules[key] = mod
        return mod


def get_function(source: str, name: str, name_expressions: Sequence[str] = (),
                 options: Sequence[str] = (), dynamic_smem: int = 0, arch: str | None = None) -> Any:
    """One kernel of a cached module; raises its dynamic shared-memory limit when it needs more."""
    mod = get_module(source, name_expressions, options, arch)
    fn = mod.get_function(name)
    if dynamic_smem > 48 * 1024 and fn.max_dynamic_shared_size_bytes < dynamic_smem:
        fn.max_dynamic_shared_size_bytes = dynamic_smem
    return fn


def compile_concurrently(tasks: Sequence[Callable[[], object]]) -> None:
    """Run independent module compilations side by side, each in a thread on the caller's device.

    CuPy releases the GIL inside ``nvrtcCompileProgram``, so a cold build waits for its slowest
    module rather than for the sum of them (NVRTC takes tens of seconds per tile module). A task
    that fails in its thread is run again here, in the calling thread, so that any error is raised
    as the serial path would raise it.
    """
    if len(tasks) < 2:
        for task in tasks:
            task()
        return
    import cupy

    device = cupy.cuda.Device().id

    def on_device(task: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with cupy.cuda.Device(device):
                return task()
        return run

    with ThreadPoolExecutor(max_workers=len(tasks), thread_name_prefix="nvrtc") as pool:
        futures = [pool.submit(on_device(task)) for task in tasks]
        failed = [task for task, f in zip(tasks, futures) if f.exception() is not None]
    for task in failed:
        task()


def decided_once(probe: Callable[[], bool]) -> Callable[[], bool]:
    """``probe``'s answer (whether a module compiles and runs here), computed by its first caller
    while any other waits (``compile_concurrently`` may ask from two threads), then kept for the
    process."""
    lock = threading.Lock()
    answer: list[bool] = []

    @functools.wraps(probe)
    def decided() -> bool:
        with lock:
            if not answer:
                answer.append(probe())
            return answer[0]

    return decided
