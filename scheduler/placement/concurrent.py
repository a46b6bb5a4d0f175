"""Several networks at once on GPU + DLA cores (HaX-CoNN's problem), solved exactly by enumeration.

Model
-----
* Each network is cut into at most ``max_groups`` layer groups (contiguous ranges of its
  execution order, as HaX-CoNN groups GoogLeNet into 10); device switches happen only at group
  boundaries. Boundaries are placed at equal shares of the network's GPU time, moved to the
  nearby position with the fewest crossing tensor bytes (block boundaries of residual networks).
* A network's placement is a sequence of at most ``k + 1`` segments (k device switches, default
  1), consecutive segments on different devices. A segment's standalone time = its layers' times
  on its device + the transfers into it (a tensor is moved once per destination device; the
  transfer is charged to the first segment on that device that reads it).
* All networks start at t = 0. Each device runs one segment at a time in a chosen order; a
  segment starts as soon as its device is free and the previous segment of its network ended
  (semi-active schedules). Decision space: every network's segments and every device's order.
* Contention: while two or more segments run at once, each progresses at rate 1/sigma, where
  sigma is a piecewise-constant function of the total DRAM bandwidth share of the running
  segments (a segment's share is the time-weighted mean of its layers' ``dram_share``), with
  separate tables for the GPU and the DLAs (PCCS-style). Alone, a segment runs at full speed.
  The timeline is simulated event by event, so the slowdown follows the actual overlap.
* Objective: makespan (max latency) or the sum of latencies.

Exactness
---------
Every combination of per-network placements gets the lower bound max(longest network's
standalone chain, most loaded device) for the makespan, or the sum of standalone chains for the
sum of latencies; both hold for any schedule because sigma >= 1 and segments of one network, and
of one device, never overlap. Combinations are examined in increasing bound order; each is solved
exactly by trying every device order; the search stops when the next bound is not below the best
value found, so the result is optimal for the model over group-boundary cuts.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scheduler.costgraph import DEVICES, GPU, CostGraph
from scheduler.placement.result import PlacementError

MAX_COMBINATIONS = 5_000_000


@dataclass(frozen=True)
class ContentionModel:
    """sigma(total DRAM share): ``slowdowns[j]`` applies when the share lies in (thresholds[j-1], thresholds[j]]."""

    thresholds: tuple[float, ...] = (0.6, 0.8, 1.0)
    gpu_slowdowns: tuple[float, ...] = (1.0, 1.08, 1.2, 1.45)
    dla_slowdowns: tuple[float, ...] = (1.0, 1.05, 1.15, 1.35)

    def __post_init__(self) -> None:
        for tab in (self.gpu_slowdowns, self.dla_slowdowns):
            if len(tab) != len(self.thresholds) + 1:
                raise ValueError("need one slowdown per interval between thresholds")
            if min(tab) < 1.0:
                raise ValueError("slowdowns must be >= 1 (contention never speeds a device up)")
        if list(self.thresholds) != sorted(self.thresholds):
            raise ValueError("thresholds must be increasing")

    def sigma(self, device: str, total_share: float) -> float:
        j = int(np.searchsorted(self.thresholds, total_share, side="left"))
        return (self.gpu_slowdowns if device == GPU else self.dla_slowdowns)[j]


NO_CONTENTION = ContentionModel((1.0,), (1.0, 1.0), (1.0, 1.0))


@dataclass(frozen=True)
class Segment:
    network: int
    first: int  # layer index (inclusive)
    stop: int
    device: str
    work: float  # standalone time incl. inbound transfers (ms)
    share: float  # DRAM bandwidth share while running


@dataclass(frozen=True)
class ConcurrentPlan:
    segments: tuple[tuple[Segment, ...], ...]  # per network
    order: dict  # device -> tuple of (network, segment index)
    latencies: tuple[float, ...]
    makespan: float
    objective: str
    objective_value: float
    groups: tuple[tuple[int, ...], ...]  # group boundaries per network
    combinations_evaluated: int
    solver: str
    solve_time_s: float


def group_boundaries(g: CostGraph, max_groups: int) -> list[int]:
    """Cut positions (1..n-1) that split ``g`` into at most ``max_groups`` groups."""
    n = len(g)
    if n <= max_groups:
        return list(range(1, n))
    gpu = np.array([nd.time[GPU] if nd.supports(GPU) else min(v for v in nd.time.values() if v) for nd in g.nodes])
    cum = np.concatenate([[0.0], np.cumsum(gpu)])
    cross = np.zeros(n + 1)
    for t in g.tensors:
        p = g.index[t.producer]
        last = max(g.index[c] for c in t.consumers)
        cross[p + 1 : last + 1] += t.nbytes
    cuts: list[int] = []
    for q in range(1, max_groups):
        target = cum[-1] * q / max_groups
        pos = int(np.clip(np.searchsorted(cum, target), 1, n - 1))
        window = range(max(1, pos - 3), min(n - 1, pos + 3) + 1)
        best = min(window, key=lambda c: (cross[c], abs(c - pos)))
        if not cuts or best > cuts[-1]:
            cuts.append(best)
    return cuts


def _segment(g: CostGraph, net: int, lo: int, hi: int, dev: str, placed: list[str]) -> Segment | None:
    work = 0.0
    share_t = 0.0
    for i in range(lo, hi):
        nd = g.nodes[i]
        if not nd.supports(dev):
            return None
        work += nd.time[dev]
        share_t += nd.time[dev] * nd.dram_share.get(dev, 0.0)
    for t in g.tensors:
        p = g.index[t.producer]
        src = placed[p]
        if src == dev:
            continue
        first_on_dev = min((g.index[c] for c in t.consumers if placed[g.index[c]] == dev), default=None)
        if first_on_dev is not None and lo <= first_on_dev < hi:
            work += g.tensor_transfer(t, src, dev)[0]
    return Segment(net, lo, hi, dev, work, share_t / work if work > 0 else 0.0)


def network_options(g: CostGraph, net: int, cuts: Sequence[int], k: int) -> list[tuple[Segment, ...]]:
    """Every placement of network ``net`` with at most ``k`` switches at the cut positions."""
    n = len(g)
    out = []
    for j in range(k + 1):
        for chosen in itertools.combinations(cuts, j):
            bounds = [0, *chosen, n]
            for devs in itertools.product(DEVICES, repeat=j + 1):
                if any(devs[i] == devs[i + 1] for i in range(j)):
                    continue
                placed = [""] * n
                for s in range(j + 1):
                    placed[bounds[s] : bounds[s + 1]] = [devs[s]] * (bounds[s + 1] - bounds[s])
                segs = [_segment(g, net, bounds[s], bounds[s + 1], devs[s], placed) for s in range(j + 1)]
                if all(s is not None for s in segs):
                    out.append(tuple(segs))
    return out


def simulate(
    segments: Sequence[Sequence[Segment]], order: dict[str, Sequence[tuple[int, int]]], contention: ContentionModel
) -> list[float] | None:
    """Latency of each network for fixed device orders (None when the orders deadlock)."""
    m = len(segments)
    nxt_seg = [0] * m  # next segment index per network
    pos = {d: 0 for d in order}  # next position in each device's order
    idle = [True] * m  # network has no segment running
    running: dict[tuple[int, int], float] = {}  # (net, seg) -> remaining work
    done_at = [0.0] * m
    t = 0.0
    total = sum(len(s) for s in segments)
    finished = 0
    while finished < total:
        for d, seq in order.items():
            busy = any(segments[nt][sg].device == d for nt, sg in running)
            if busy or pos[d] >= len(seq):
                continue
            nt, sg = seq[pos[d]]
            if nxt_seg[nt] == sg and idle[nt]:
                running[(nt, sg)] = segments[nt][sg].work
                pos[d] += 1
                nxt_seg[nt] = sg + 1
                idle[nt] = False
        if not running:
            return None  # nothing can start: the device orders contradict network order
        share = sum(segments[nt][sg].share for nt, sg in running)
        rates = {}
        for key in running:
            seg = segments[key[0]][key[1]]
            rates[key] = 1.0 / contention.sigma(seg.device, share) if len(running) > 1 else 1.0
        dt = min(running[key] / rates[key] for key in running)
        t += dt
        for key in list(running):
            running[key] -= dt * rates[key]
            if running[key] <= 1e-12 * max(1.0, t):
                del running[key]
                finished += 1
                idle[key[0]] = True
                if key[1] == len(segments[key[0]]) - 1:
                    done_at[key[0]] = t
    return done_at


def _best_schedule(segs: Sequence[Sequence[Segment]], contention: ContentionModel, sum_objective: bool):
    per_dev: dict[str, list[tuple[int, int]]] = {d: [] for d in DEVICES}
    for nt, ss in enumerate(segs):
        for sg, s in enumerate(ss):
            per_dev[s.device].append((nt, sg))
    devs = [d for d in DEVICES if per_dev[d]]
    best = (np.inf, None, None)
    for orders in itertools.product(*(itertools.permutations(per_dev[d]) for d in devs)):
        order = dict(zip(devs, orders))
        lat = simulate(segs, order, contention)
        if lat is None:
            continue
        val = sum(lat) if sum_objective else max(lat)
        if val < best[0]:
            best = (val, order, lat)
    return best


def concurrent(
    graphs: Sequence[CostGraph],
    contention: ContentionModel | None = None,
    k: int = 1,
    objective: str = "makespan",
    max_groups: int = 20,
) -> ConcurrentPlan:
    """Exact joint placement and ordering of ``graphs`` (objective ``makespan`` or ``sum``)."""
    if objective not in ("makespan", "sum"):
        raise ValueError("objective must be 'makespan' or 'sum'")
    if k < 0:
        raise ValueError("k must be >= 0")
    contention = contention or ContentionModel()
    t0 = time.perf_counter()
    groups = [group_boundaries(g, max_groups) for g in graphs]
    options = [network_options(g, i, groups[i], k) for i, g in enumerate(graphs)]
    for i, opts in enumerate(options):
        if not opts:
            raise PlacementError(f"network {graphs[i].name!r} has no placement with at most {k} switches")
    size = int(np.prod([len(o) for o in options], dtype=np.int64))
    if size > MAX_COMBINATIONS:
        raise PlacementError(f"{size} placement combinations exceed {MAX_COMBINATIONS}; lower max_groups or k")
    chain = [np.array([sum(s.work for s in o) for o in opts]) for opts in options]
    load = [np.array([[sum(s.work for s in o if s.device == d) for d in DEVICES] for o in opts]) for opts in options]
    lb = chain[0]
    loads = load[0]
    for i in range(1, len(graphs)):
        if objective == "sum":
            lb = (lb[:, None] + chain[i][None, :]).ravel()
        else:
            lb = np.maximum(lb[:, None], chain[i][None, :]).ravel()
            loads = (loads[:, None, :] + load[i][None, :, :]).reshape(-1, len(DEVICES))
    if objective == "makespan":
        lb = np.maximum(lb, loads.max(axis=1))
    order_idx = np.argsort(lb, kind="stable")
    shape = [len(o) for o in options]
    best = (np.inf, None, None, None)
    evaluated = 0
    for flat in order_idx:
        if lb[flat] >= best[0]:
            break
        choice = np.unravel_index(int(flat), shape)
        segs = [options[i][c] for i, c in enumerate(choice)]
        val, order, lat = _best_schedule(segs, contention, objective == "sum")
        evaluated += 1
        if val < best[0]:
            best = (val, segs, order, lat)
    val, segs, order, lat = best
    if segs is None:
        raise PlacementError("no feasible joint schedule")
    return ConcurrentPlan(
        segments=tuple(tuple(s) for s in segs),
        order={d: tuple(v) for d, v in order.items()},
        latencies=tuple(lat),
        makespan=max(lat),
        objective=objective,
        objective_value=val,
        groups=tuple(tuple(c) for c in groups),
        combinations_evaluated=evaluated,
        solver="concurrent-branch-and-bound",
        solve_time_s=time.perf_counter() - t0,
    )
