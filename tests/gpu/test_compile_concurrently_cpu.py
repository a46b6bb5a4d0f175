"""``compile.compile_concurrently``: module compilations run side by side on the caller's device, and
a task that fails in its thread is run again in the calling thread (so an error is raised as the
serial path would raise it). CuPy is replaced by a stand-in that records the device each thread
selects; no GPU is needed."""

from __future__ import annotations

import sys
import threading
import time
import types

import pytest

from backends.gpu.kernels.compile import compile_concurrently, decided_once


@pytest.fixture
def fake_cupy(monkeypatch):
    selected: list[tuple[str, int]] = []

    class Device:
        def __init__(self, device: int | None = None) -> None:
            self.id = 3 if device is None else device

        def __enter__(self):
            selected.append((threading.current_thread().name, self.id))
            return self

        def __exit__(self, *exc):
            return False

    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(Device=Device)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    return selected


def test_tasks_run_side_by_side_on_the_callers_device(fake_cupy):
    barrier = threading.Barrier(3, timeout=10)  # passes only if all three run at once
    ran: list[str] = []

    def task() -> None:
        barrier.wait()
        ran.append(threading.current_thread().name)

    compile_concurrently([task, task, task])
    assert len(ran) == 3 and all(name.startswith("nvrtc") for name in ran)
    assert sorted(d for _, d in fake_cupy) == [3, 3, 3]


def test_a_task_failing_in_its_thread_runs_again_in_the_caller(fake_cupy):
    calls: list[str] = []

    def main_thread_only() -> None:
        calls.append(threading.current_thread().name)
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("needs the calling thread")

    compile_concurrently([main_thread_only, lambda: None])
    assert len(calls) == 2 and calls[-1] == threading.main_thread().name


def test_an_error_that_is_not_the_threads_is_raised(fake_cupy):
    def broken() -> None:
        raise ValueError("NVRTC says no")

    with pytest.raises(ValueError, match="NVRTC says no"):
        compile_concurrently([broken, lambda: None])


def test_one_task_runs_in_the_calling_thread_without_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # importing it would fail
    names: list[str] = []
    compile_concurrently([lambda: names.append(threading.current_thread().name)])
    assert names == [threading.main_thread().name]


def test_a_probe_is_decided_once_while_other_callers_wait():
    """``decided_once``: two threads asking at once run the probe once, and both get its answer."""
    calls = []

    @decided_once
    def probe() -> bool:
        calls.append(1)
        time.sleep(0.05)  # the second caller arrives while the first is still compiling
        return len(calls) == 1

    answers: list[bool] = []
    threads = [threading.Thread(target=lambda: answers.append(probe())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert answers == [True, True] and len(calls) == 1 and probe() is True
