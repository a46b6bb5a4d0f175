"""DLA simulator speed: timing-only ResNet-50 (< 0.2 s) and functional INT8 ResNet-50 batch 1 (< 10 s).

Run:  python bench/bench_dla_sim.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import time

import numpy as np  # noqa: E402

from dla_sim import networks, simulator  # noqa: E402
from dla_sim.config import XAVIER  # noqa: E402


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    net = networks.resnet50(batch=1)
    t_timing = best_of(lambda: simulator.simulate(net, XAVIER, timing_only=True), 5)
    tensors, ops = networks.random_parameters(net, seed=0)
    x = np.random.default_rng(1).integers(-128, 128, size=(1, 3, 224, 224)).astype(np.int8)
    t_func = best_of(lambda: simulator.simulate(ops, XAVIER, {"data": x}, tensors), 1)
    ok = t_timing < 0.2 and t_func < 10.0
    print(f"timing-only ResNet-50 (b1, xavier):     {t_timing * 1e3:8.1f} ms   target < 200 ms")
    print(f"functional INT8 ResNet-50 (b1, xavier): {t_func:8.2f} s    target < 10 s")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
