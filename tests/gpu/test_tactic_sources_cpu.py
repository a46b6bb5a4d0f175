"""Tactic sources (TensorRT's --tacticSources) without a GPU: which libraries the tactic timing may
take kernels from, how the command line edits them, and the timing cache keeping restricted
builds apart."""

from __future__ import annotations

import numpy as np
import pytest
from gemm_nets import one_conv_network

from backends.gpu import tactics
from backends.gpu.kernels import compile as compile_mod
from backends.gpu.kernels import conv as convk
from engine.builder import BuilderConfig
from engine.cli.common import parse_tactic_sources
from engine.ir.errors import BuildError, HetrtError
from engine.ir.network import Network


def test_the_command_line_edits_the_default_set():
    assert parse_tactic_sources(None) is None
    assert parse_tactic_sources("-cudnn") == ("cublas", "cublaslt")
    assert parse_tactic_sources("-CUDNN,-CUBLAS_LT") == ("cublas",)
    assert parse_tactic_sources("-cudnn,+cudnn") == ("cublas", "cublaslt", "cudnn")
    for bad in ("cudnn", "-edge_mask", "+", "-cudnn,tensorrt"):
        with pytest.raises(HetrtError, match="tactic-sources"):
            parse_tactic_sources(bad)


def test_the_builder_refuses_an_unknown_source():
    BuilderConfig(tactic_sources=("cublas",)).validate()
    with pytest.raises(BuildError, match="unknown tactic source"):
        BuilderConfig(tactic_sources=("cublas", "cutlass")).validate()
    with pytest.raises(BuildError, match="tuple of library names"):
        BuilderConfig(tactic_sources="cudnn").validate()


def _conv_net() -> Network:
    return one_conv_network(np.random.default_rng(0), "conv", (4, 64, 14, 14), 64, 1)


@pytest.fixture
def timed(monkeypatch):
    """Stand-in timings: every library faster than the tiles, cuDNN fastest; records what was timed."""
    calls: list[str] = []

    def fake(name: str, ms: float):
        def time_it(*args, **kwargs):
            calls.append(name)
            return {name: ms}
        return time_it

    monkeypatch.setattr(tactics, "time_conv", lambda g, cands, act, res: {cands[0].name: 1.0})
    monkeypatch.setattr(tactics, "time_conv_cublas", fake("cublas", 0.5))
    monkeypatch.setattr(tactics, "time_conv_cublaslt", fake("cublaslt", 0.4))
    monkeypatch.setattr(tactics, "time_conv_cudnn", fake("cudnn_a1", 0.3))
    monkeypatch.setattr(tactics, "time_conv_gemv", lambda *a: {})
    monkeypatch.setattr(tactics, "gpu_name", lambda: "test GPU")
    monkeypatch.setattr(convk, "wgmma_usable", lambda: False)
    monkeypatch.setattr(compile_mod, "compile_concurrently", lambda tasks: None)
    return calls


def test_only_the_allowed_libraries_are_timed(timed, tmp_path):
    net = _conv_net()
    cache = str(tmp_path / "timing.json")
    assert tactics.select_tactics(net, ["conv"], cache) == {"conv": "cudnn_a1"}
    assert timed == ["cublas", "cublaslt", "cudnn_a1"]
    timed.clear()
    # a build without cuDNN neither times it nor reuses the unrestricted build's cached choice
    assert tactics.select_tactics(net, ["conv"], cache, sources=("cublas", "cublaslt")) == {"conv": "cublaslt"}
    assert timed == ["cublas", "cublaslt"]
    timed.clear()
    assert tactics.select_tactics(net, ["conv"], cache, sources=()) == {"conv": tactics._shortlist(
        convk.ConvGeometry(4, 14, 14, 64, 64, 1, 1), 3)[0].name}
    assert timed == []
    timed.clear()
    assert tactics.select_tactics(net, ["conv"], cache) == {"conv": "cudnn_a1"}  # from the cache
    assert timed == []


def test_a_timing_without_cudnn_is_not_reused_where_cudnn_runs(monkeypatch):
    from backends.gpu.kernels import cudnn

    monkeypatch.setattr(tactics, "gpu_name", lambda: "test GPU")
    monkeypatch.setattr(convk, "wgmma_usable", lambda: False)
    cache = tactics.TimingCache(None)
    monkeypatch.setattr(cudnn, "available", lambda: False)
    without = cache.key("conv x")
    monkeypatch.setattr(cudnn, "available", lambda: True)
    monkeypatch.setattr(cudnn, "version", lambda: 92400)
    with_9_24 = cache.key("conv x")
    monkeypatch.setattr(cudnn, "version", lambda: 91900)
    assert len({without, with_9_24, cache.key("conv x")}) == 3


def test_the_verbose_log_names_the_choice_and_its_runners_up(timed, tmp_path):
    from engine.ir.logger import Logger, Severity

    log = Logger(Severity.ERROR)
    assert tactics.select_tactics(_conv_net(), ["conv"], str(tmp_path / "t.json"), logger=log) == {"conv": "cudnn_a1"}
    lines = [m for m in log.messages(Severity.VERBOSE) if m.startswith("Tactic of conv:")]
    assert len(lines) == 1
    assert lines[0].startswith("Tactic of conv: cudnn_a1 0.3000 ms of 4 timed (next: cublaslt 0.4000, cublas 0.5000, ")
