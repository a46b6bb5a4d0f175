"""trtexec-style statistics and Polygraphy-style comparison, checked against numpy directly."""

from __future__ import annotations

import io

import numpy as np
import pytest

from engine.compare import compare_arrays
from engine.ir.logger import Logger, Severity
from engine.perf import LatencyStats, measure


def test_latency_stats_match_numpy_percentiles():
    rng = np.random.default_rng(1)
    values = rng.gamma(2.0, 1.5, size=501)
    s = LatencyStats.from_ms(list(values))
    assert s.count == 501
    assert s.min == values.min() and s.max == values.max()
    assert s.mean == pytest.approx(values.mean())
    assert s.median == pytest.approx(np.median(values))
    for p, got in ((90, s.p90), (95, s.p95), (99, s.p99)):
        assert got == pytest.approx(np.percentile(values, p))


def test_measure_honours_iterations_and_duration():
    calls = []
    result = measure(lambda: calls.append(1), warmup_ms=0, iterations=25, duration_s=0)
    assert result.stats.count == 25
    assert result.warmup_iterations >= 1
    assert len(calls) == 25 + result.warmup_iterations
    timed = measure(lambda: None, warmup_ms=0, iterations=1, duration_s=0.05)
    assert timed.wall_s >= 0.05 and timed.stats.count > 1


def test_measure_rejects_bad_arguments():
    with pytest.raises(ValueError, match="iterations"):
        measure(lambda: None, iterations=0)


def test_compare_passes_within_tolerance_and_fails_outside():
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((4, 100)).astype(np.float32)
    close = ref + np.float32(1e-7) * rng.standard_normal(ref.shape).astype(np.float32)
    assert compare_arrays("y", close, ref, rtol=1e-5).passed
    bad = ref.copy()
    bad[2, 17] += 0.5
    cmp = compare_arrays("y", bad, ref, rtol=1e-5)
    assert not cmp.passed
    assert cmp.worst_index == (2, 17)
    assert cmp.max_abs == pytest.approx(0.5, rel=1e-5)
    assert "FAILED" in cmp.report()


def test_compare_flags_nan_mismatch():
    ref = np.ones(5, np.float32)
    got = ref.copy()
    got[3] = np.nan
    assert not compare_arrays("y", got, ref, rtol=1e-2).passed


def test_logger_threshold_and_records():
    buf = io.StringIO()
    log = Logger(Severity.INFO, stream=buf)
    log.info("shown")
    log.verbose("hidden")
    log.warning("warned")
    assert buf.getvalue().splitlines() == ["[I] shown", "[W] warned"]
    assert log.messages(Severity.VERBOSE) == ["hidden"]


def test_progress_reports_throttled_and_at_the_end():
    buf = io.StringIO()
    log = Logger(Severity.INFO, stream=buf)
    from engine.ir.logger import Progress

    p = Progress(log, "Timing", total=3, interval=3600)
    p.update(1)
    p.update(2)
    p.update(3)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[I] Timing: 3/3")
    q = Progress(log, "Batches", interval=0)
    q.update(5)
    assert buf.getvalue().splitlines()[-1].startswith("[I] Batches: 5 (")
