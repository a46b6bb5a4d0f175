"""Solver-time benchmark of the placement algorithms (run: python bench/bench_placement.py).

Targets (issue 5): ``optimal`` on a 300-layer ResNet-like network within 1 s for latency, EDP
and constrained requests; concurrent placement of three networks (~60-100 layers) within 10 s.
Times are wall-clock seconds of this process on the host CPU.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.objectives import Constraints  # noqa: E402
from scheduler.placement import best_single_cut, dla_first, gpu_only, optimal  # noqa: E402
from scheduler.placement.concurrent import concurrent  # noqa: E402
from scheduler.placement.pipeline import pipeline  # noqa: E402
from scheduler.placement.synthetic import resnet_like  # noqa: E402


def _timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def main() -> int:
    g = resnet_like(1, 300)
    no_cap = Constraints(max_loadables_per_core=None)
    fastest = optimal(g, "latency", no_cap).latency
    cases = [
        ("latency, no cap", "latency", no_cap),
        ("latency, 16 loadables/core", "latency", Constraints()),
        ("energy, no cap", "energy", no_cap),
        ("energy, 16 loadables/core", "energy", Constraints()),
        ("latency+0.1*energy, 16/core", "latency+0.1*energy", Constraints()),
        ("edp, no cap", "edp", no_cap),
        ("edp, 16 loadables/core", "edp", Constraints()),
        (
            "energy, deadline 1.1x fastest",
            "energy",
            Constraints(max_loadables_per_core=None, deadline_ms=1.1 * fastest),
        ),
        ("latency, <= 6 transitions", "latency", Constraints(max_transitions=6)),
        ("latency, 4 loadables/core", "latency", Constraints(max_loadables_per_core=4)),
    ]
    print(
        f"{'case (300-layer ResNet-like)':36s} {'solver':34s} {'time s':>8s} "
        f"{'objective':>12s} {'lat ms':>9s} {'E mJ':>9s}"
    )
    slowest = 0.0
    for label, obj, c in cases:
        p, dt = _timed(optimal, g, obj, c)
        slowest = max(slowest, dt)
        print(f"{label:36s} {p.solver:34s} {dt:8.3f} {p.objective_value:12.6g} {p.latency:9.3f} {p.energy:9.2f}")
    for name, fn in (("gpu-only", gpu_only), ("dla-first", dla_first)):
        p, dt = _timed(fn, g)
        print(f"{name:36s} {p.solver:34s} {dt:8.3f} {p.objective_value:12.6g} {p.latency:9.3f} {p.energy:9.2f}")
    p, dt = _timed(best_single_cut, g, "latency")
    print(
        f"{'best single cut':36s} {p.solver:34s} {dt:8.3f} {p.objective_value:12.6g} {p.latency:9.3f} {p.energy:9.2f}"
    )
    pl, dt = _timed(pipeline, g, frames=100)
    print(
        f"{'pipeline, 100 frames':36s} {pl.solver:34s} {dt:8.3f} "
        f"period {pl.period_ms:.3f} ms, {pl.throughput_fps:.1f} fps"
    )
    nets = [resnet_like(s, n) for s, n in ((11, 60), (12, 80), (13, 100))]
    slowest_concurrent = 0.0
    for objective in ("makespan", "sum"):
        cp, dt = _timed(concurrent, nets, objective=objective)
        slowest_concurrent = max(slowest_concurrent, dt)
        print(
            f"{'concurrent 3 nets (60/80/100), ' + objective:36s} {'branch-and-bound':34s} {dt:8.3f} "
            f"{cp.objective_value:12.6g} evaluated {cp.combinations_evaluated} combinations"
        )
    ok = slowest <= 1.0 and slowest_concurrent <= 10.0
    print(f"slowest exact single-network case {slowest:.3f} s (target <= 1 s); slowest concurrent "
          f"{slowest_concurrent:.3f} s (target <= 10 s): {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
