"""Tactic timing (``backends.gpu.tactics._time_launches``) on stand-ins for CuPy and the CUDA graph:
a tactic that cannot launch is dropped, but a kernel fault stops the build with the tactic's name
(swallowed, the lost context would surface later, far from its cause)."""

from __future__ import annotations

import sys
import types

import pytest

from backends.gpu import graph, tactics


class CudaError(Exception):
    def __init__(self, status: int, name: str) -> None:
        super().__init__(f"{name}: ...")
        self.status = status


class FakeSequence:
    def __init__(self) -> None:
        self.steps = []

    def add(self, label, step) -> None:
        self.steps.append(step)

    def capture(self, stream):
        for step in self.steps:
            step()
        return types.SimpleNamespace(time_ms=lambda **_: {"median": 2.0})


@pytest.fixture
def fake_gpu(monkeypatch):
    cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(Stream=lambda non_blocking: object()))
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setattr(graph, "LaunchSequence", FakeSequence)


def _tactic(name: str):
    return types.SimpleNamespace(name=name)


def test_a_tactic_that_cannot_launch_is_dropped(fake_gpu):
    def launch(t):
        if t.name == "big":
            raise CudaError(701, "cudaErrorLaunchOutOfResources")

    assert tactics._time_launches([_tactic("big"), _tactic("small")], launch, 4) == {"small": 0.5}


@pytest.mark.parametrize("status,name", [(700, "cudaErrorIllegalAddress"), (717, "cudaErrorInvalidAddressSpace"),
                                         (719, "cudaErrorLaunchFailure")])
def test_a_kernel_fault_names_its_tactic(fake_gpu, status, name):
    def launch(t):
        if t.name == "bad":
            raise CudaError(status, name)

    with pytest.raises(RuntimeError, match=f"tactic bad faulted on the device while being timed: {name}"):
        tactics._time_launches([_tactic("good"), _tactic("bad")], launch, 2)
    assert not tactics.device_fault(ValueError("no status")) and not tactics.device_fault(CudaError(2, "oom"))
