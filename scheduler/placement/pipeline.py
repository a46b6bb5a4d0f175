"""Throughput placement for a stream of frames over GPU + DLA cores (JEDI-style pipelining).

Model
-----
The execution order is cut into at most ``len(devices)`` contiguous stages (prefixes of a
topological order are ideals of the DAG, so every stage boundary is a valid cut), each stage on
its own device. Stage time = sum of its layers' times on its device + the time of every transfer
into it: a tensor produced in an earlier stage and read in this one is moved once to this stage's
device (the receiving stage waits for it). With unbounded buffers between stages, frame f leaves
the last stage at sum(stage times) + (f - 1) * max(stage times), so the time for ``frames`` frames

    makespan = sum_k s_k + (frames - 1) * max_k s_k

is minimised (for many frames this is the bottleneck stage, i.e. throughput). Energy per frame =
dynamic energy of all layers and transfers + static power of all rails x the pipeline period.

Exactness: every (cut1 <= cut2, device permutation) is evaluated; stage times are vectorised over
the second cut with prefix sums and difference arrays, so the enumeration costs O(n^2 * 3!) array
work and no candidate is skipped.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scheduler.costgraph import DEVICE_INDEX, DEVICES, CostGraph
from scheduler.objectives import cost_tables
from scheduler.placement.result import PlacementError


@dataclass(frozen=True)
class Stage:
    device: str
    first: int  # index of the first layer (inclusive)
    stop: int  # index one past the last layer
    time: float


@dataclass(frozen=True)
class PipelinePlan:
    stages: tuple[Stage, ...]
    frames: int
    period_ms: float  # bottleneck stage time
    latency_ms: float  # one frame through all stages
    makespan_ms: float  # all frames
    throughput_fps: float
    energy_per_frame_mj: float
    solver: str
    solve_time_s: float

    def devices(self, g: CostGraph) -> list[str]:
        out = [""] * len(g)
        for s in self.stages:
            for i in range(s.first, s.stop):
                out[i] = s.device
        return out


def stage_times(g: CostGraph, cuts: Sequence[int], devs: Sequence[str]) -> list[float]:
    """Times of the stages [0,c1), [c1,c2), ... on ``devs`` (direct O(n + tensors) evaluation)."""
    bounds = [0, *cuts, len(g)]
    stage_of = np.zeros(len(g), dtype=int)
    for k in range(len(devs)):
        stage_of[bounds[k] : bounds[k + 1]] = k
    out = []
    for k, d in enumerate(devs):
        t = 0.0
        for i in range(bounds[k], bounds[k + 1]):
            node = g.nodes[i]
            t += node.time[d] if node.supports(d) else np.inf
        for ten in g.tensors:
            p = g.index[ten.producer]
            if stage_of[p] < k and any(stage_of[g.index[c]] == k for c in ten.consumers):
                t += g.tensor_transfer(ten, devs[stage_of[p]], d)[0]
        out.append(t)
    return out


def _tensor_arrays(g: CostGraph):
    prod = np.array([g.index[t.producer] for t in g.tensors], dtype=np.int64)
    deg = max((len(t.consumers) for t in g.tensors), default=1)
    cons = np.full((len(g.tensors), deg), len(g), dtype=np.int64)
    for j, t in enumerate(g.tensors):
        cons[j, : len(t.consumers)] = sorted(g.index[c] for c in t.consumers)
    maxc = np.array([max(g.index[c] for c in t.consumers) for t in g.tensors], dtype=np.int64)
    return prod, cons, maxc


def pipeline(g: CostGraph, devices: Sequence[str] = DEVICES, frames: int = 100) -> PipelinePlan:
    """Exact best contiguous-stage pipeline of ``g`` over ``devices`` (at most 3) for ``frames`` frames."""
    if frames < 1:
        raise ValueError("frames must be >= 1")
    devices = tuple(devices)
    if not 1 <= len(devices) <= 3 or len(set(devices)) != len(devices):
        raise ValueError(f"pipeline needs 1 to 3 distinct devices, got {devices}")
    t0 = time.perf_counter()
    n = len(g)
    time_tab, energy_tab = cost_tables(g)
    prefix = np.zeros((n + 1, len(DEVICES)))
    bad = np.zeros((n + 1, len(DEVICES)), dtype=np.int64)
    prefix[1:] = np.cumsum(np.where(np.isfinite(time_tab), time_tab, 0.0), axis=0)
    bad[1:] = np.cumsum(~np.isfinite(time_tab), axis=0)
    prod, cons, maxc = _tensor_arrays(g)
    T = {(a, b): np.array([g.tensor_transfer(t, a, b)[0] for t in g.tensors]) for a in DEVICES for b in DEVICES}
    idx = np.arange(n + 1)

    def seg(d: str, lo, hi):
        j = DEVICE_INDEX[d]
        t = prefix[hi, j] - prefix[lo, j]
        return np.where(bad[hi, j] - bad[lo, j] > 0, np.inf, t)

    k = len(devices)
    perms = list(itertools.permutations(devices, k))
    best = (np.inf, None)
    for i1 in range(n + 1):
        i2 = idx[i1:]  # second cut (only used when k == 3)
        in1 = prod < i1
        nxt = np.where(cons >= i1, cons, n).min(axis=1) if len(g.tensors) else np.zeros(0, dtype=np.int64)
        for d1, d2, *rest in perms if k >= 2 else [(devices[0], None)]:
            s1 = seg(d1, 0, i1)
            if k == 1:
                s = np.array([s1 if i1 == n else np.inf])
                cand_i2 = np.array([n])
                stages = [np.full(1, s1)]
            elif k == 2:
                # stage 2 = [i1, n): inbound = tensors from stage 1 with a consumer >= i1
                w = T[(d1, d2)]
                inbound = float(w[in1 & (nxt < n)].sum())
                stages = [np.full(1, s1), np.full(1, seg(d2, i1, n) + inbound)]
                cand_i2 = np.array([n])
            else:
                d3 = rest[0]
                m = len(i2)
                # stage 2 inbound from stage 1: tensors with p < i1 whose first consumer >= i1 is < i2
                h = np.zeros(n + 2)
                np.add.at(h, nxt[in1] + 1, T[(d1, d2)][in1])
                in2 = np.cumsum(h)[i2]
                # stage 3 inbound from stage 1: p < i1 and max consumer >= i2
                h1 = np.zeros(n + 2)
                np.add.at(h1, maxc[in1], T[(d1, d3)][in1])
                from1 = np.cumsum(h1[::-1])[::-1][i2]
                # from stage 2: i1 <= p < i2 <= maxc  -> interval (p, maxc] contains i2
                mid = prod >= i1
                h2 = np.zeros(n + 2)
                np.add.at(h2, prod[mid] + 1, T[(d2, d3)][mid])
                np.add.at(h2, maxc[mid] + 1, -T[(d2, d3)][mid])
                from2 = np.cumsum(h2)[i2]
                stages = [
                    np.full(m, s1),
                    seg(d2, i1, i2) + in2,
                    seg(d3, i2, n) + from1 + from2,
                ]
                cand_i2 = i2
            st = np.vstack(stages)
            st = np.where(np.isnan(st), np.inf, st)
            total = st.sum(axis=0) + (frames - 1) * st.max(axis=0) if frames > 1 else st.sum(axis=0)
            j = int(np.argmin(total))
            if total[j] < best[0]:
                devs = (d1,) if k == 1 else (d1, d2, *rest)
                best = (float(total[j]), (i1, int(cand_i2[j]), devs))
    if best[1] is None:
        raise PlacementError(f"no contiguous pipeline over {devices} can run every layer")
    i1, i2, devs = best[1]
    cuts = [] if len(devs) == 1 else ([i1] if len(devs) == 2 else [i1, i2])
    times = stage_times(g, cuts, devs)
    bounds = [0, *cuts, n]
    stages = tuple(
        Stage(d, bounds[j], bounds[j + 1], times[j]) for j, d in enumerate(devs) if bounds[j + 1] > bounds[j]
    )
    period = max(s.time for s in stages)
    latency = sum(s.time for s in stages)
    placed = [""] * n
    for s in stages:
        for i in range(s.first, s.stop):
            placed[i] = s.device
    dyn = sum(energy_tab[i, DEVICE_INDEX[placed[i]]] for i in range(n))
    for ten in g.tensors:
        src = placed[g.index[ten.producer]]
        for d in {placed[g.index[c]] for c in ten.consumers} - {src}:
            dyn += g.tensor_transfer(ten, src, d)[1]
    return PipelinePlan(
        stages=stages,
        frames=frames,
        period_ms=period,
        latency_ms=latency,
        makespan_ms=latency + (frames - 1) * period,
        throughput_fps=1e3 / period if period > 0 else np.inf,
        energy_per_frame_mj=float(dyn + g.static_power * period),
        solver="pipeline-enumeration",
        solve_time_s=time.perf_counter() - t0,
    )
