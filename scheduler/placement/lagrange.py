"""Loadable-capped linear placement by Lagrangian relaxation of the run count, with certificates.

Problem P: minimise ``f(x) = w_time*L(x) + w_energy*E(x)`` subject to at most ``cap`` DLA runs
(loadables) per core, when only the cap constrains the placement and the min-cut pair (A, B) of
``scheduler.placement.exact`` describes the devices: either exactly two usable devices, or GPU
plus two interchangeable DLA cores, represented by (gpu, dla0).

Relaxation. Let R(x) be the number of DLA runs of a placement on the pair, and C the run budget:
``cap`` for one DLA core, ``2*cap`` for two interchangeable cores. Merging dla1 into dla0 maps any
three-device placement y to a two-device one y' with f(y') <= f(y) and R(y') <= runs0(y) +
runs1(y) (runs can only merge; see ``exact``), so P' = min{f(x) : x on the pair, R(x) <= C} is a
lower bound on P. For a multiplier mu >= 0, the penalised problem min f(x) + mu*R(x) is one
min-cut (``min_cut_placement(..., run_penalty=mu)``).

Certificate (exactness). If x_mu minimises f + mu*R and R(x_mu) <= C with mu*(C - R(x_mu)) = 0
(either mu = 0, or R(x_mu) = C), then for every y feasible for P:
    f(x_mu) = f(x_mu) + mu*(R(x_mu) - C) <= f(y') + mu*(R(y') - C) <= f(y') <= f(y),
so f(x_mu) <= P. It remains to realise x_mu within the per-core cap at the same cost:
* one DLA core: R(x_mu) <= C = cap is the cap itself;
* two cores: its runs are split between dla0 and dla1 (``free_split``) so that no tensor is ever
  needed on both cores or passed from one core to the other: runs that share a tensor (as
  producer or consumer) stay together, and the groups are packed into two bins of ``cap`` runs
  (subset sum). Every layer and transfer then costs what it cost on dla0, so f is unchanged,
  and each core holds at most ``cap`` runs (runs are separated by GPU layers, so none merge).
The split placement is re-evaluated exactly before it is accepted.

The multiplier is found by Newton's (Dinkelbach-like) method on the concave, piecewise-linear
dual g(mu) = min_x f(x) + mu*(R(x) - C): intersect the lines of the best points with R > C and
with R <= C; each step either finds a new line (a new point strictly better at that mu) or proves
mu is the maximiser of g. A few min-cuts (each exact) suffice. When no certificate results (the
dual has a gap, or the split is not free) the caller solves the MILP; nothing is ever accepted
without the certificate above, so the answer is exact either way. Every g(mu) evaluated is a
valid lower bound on P (``dual_bound``), which lets a caller that only needs to know whether
some placement beats a threshold skip the MILP.
"""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.costgraph import DLA0, DLA1, CostGraph, is_dla
from scheduler.objectives import count_runs, evaluate
from scheduler.placement.mincut import min_cut_placement

_MAX_STEPS = 40
_REL = 1e-12


def free_split(g: CostGraph, devs: Sequence[str], cap: int) -> list[str] | None:
    """Move whole groups of dla0 runs to dla1 so both cores hold <= ``cap`` runs at no extra cost.

    Runs joined by a tensor (produced in one and read in another, or read in both) form one group;
    returns None when no packing of the groups fits."""
    run_of = [-1] * len(devs)
    runs = 0
    for i, d in enumerate(devs):
        if d == DLA0:
            if i == 0 or devs[i - 1] != DLA0:
                runs += 1
            run_of[i] = runs - 1
    if runs <= cap:
        return list(devs)
    parent = list(range(runs))

    def find(r: int) -> int:
        while parent[r] != r:
            parent[r] = parent[parent[r]]
            r = parent[r]
        return r

    for t in g.tensors:
        ids = {run_of[g.index[c]] for c in t.consumers} | {run_of[g.index[t.producer]]}
        ids.discard(-1)
        first, *rest = sorted(ids) or [-1]
        for r in rest:
            parent[find(r)] = find(first)
    groups: dict[int, list[int]] = {}
    for r in range(runs):
        groups.setdefault(find(r), []).append(r)
    sizes = [len(v) for v in groups.values()]
    # subset sum: which totals can the runs moved to dla1 reach (with one witness per total)
    reach: dict[int, tuple[int, ...]] = {0: ()}
    for k, s in enumerate(sizes):
        for tot, members in list(reach.items()):
            if tot + s <= cap and tot + s not in reach:
                reach[tot + s] = (*members, k)
    moved = next((reach[t] for t in sorted(reach) if runs - t <= cap), None)
    if moved is None:
        return None
    keys = list(groups)
    to_dla1 = {r for k in moved for r in groups[keys[k]]}
    return [DLA1 if run_of[i] in to_dla1 else d for i, d in enumerate(devs)]


class CappedLagrangian:
    """Certified solutions of the loadable-capped problem on the pair (a, b); see the module doc."""

    def __init__(self, g: CostGraph, pair: tuple[str, str], cap: int, two_cores: bool) -> None:
        self.g = g
        self.a, self.b = pair
        self.cap = cap
        self.two_cores = two_cores
        self.core = self.b if is_dla(self.b) else self.a
        self.budget = 2 * cap if two_cores else cap
        self.min_cuts = 0
        self.dual_bound = -float("inf")  # best Lagrangian lower bound of the last ``solve``
        self._mu_per_value = 0.0  # last multiplier / objective value: the next solve's first guess

    def _point(self, w_time: float, w_energy: float, mu: float) -> tuple[list[str], float, int]:
        devs = min_cut_placement(self.g, self.a, self.b, w_time, w_energy, mu)
        self.min_cuts += 1
        m = evaluate(self.g, devs)
        return devs, w_time * m.latency + w_energy * m.energy, count_runs(devs, self.core)

    def _realise(self, devs: list[str], f: float, w_time: float, w_energy: float) -> list[str] | None:
        if not self.two_cores or count_runs(devs, self.core) <= self.cap:
            return devs
        split = free_split(self.g, devs, self.cap)
        if split is None:
            return None
        m = evaluate(self.g, split)
        if max(m.loadables.values()) > self.cap:
            return None
        if w_time * m.latency + w_energy * m.energy > f + _REL * abs(f):
            return None
        return split

    def relaxed(self, w_time: float, w_energy: float) -> tuple[list[str], float]:
        """The uncapped optimum on the pair and its value: a lower bound on the capped problem."""
        devs, f, _ = self._point(w_time, w_energy, 0.0)
        return devs, f

    def solve(self, w_time: float, w_energy: float, start: tuple[list[str], float] | None = None) -> list[str] | None:
        """A provably optimal capped placement, or None when the certificate cannot be given.

        ``start``: the uncapped optimum and its value when the caller has them (``relaxed``)."""
        if self.a == self.b or not (is_dla(self.a) ^ is_dla(self.b)):
            return None
        if start is None:
            lo_devs, lo_f, lo_r = self._point(w_time, w_energy, 0.0)
        else:
            lo_devs, lo_f = start
            lo_r = count_runs(lo_devs, self.core)
        self.dual_bound = lo_f
        if lo_r <= self.budget:
            return self._realise(lo_devs, lo_f, w_time, w_energy)
        lo = (lo_devs, lo_f, lo_r)
        hi = None
        guess = self._mu_per_value * abs(lo_f)
        while guess > 0 and hi is None:  # warm start: the last multiplier, per unit of objective
            pt = self._point(w_time, w_energy, guess)
            self.dual_bound = max(self.dual_bound, pt[1] + guess * (pt[2] - self.budget))
            if pt[2] > self.budget:
                lo, guess = pt, (guess * 4 if guess * 4 < self._big(w_time, w_energy) else 0.0)
            else:
                hi = pt
        if hi is None:  # a multiplier larger than any objective difference minimises the run count first
            hi = self._point(w_time, w_energy, self._big(w_time, w_energy))
            if hi[2] > self.budget:
                return None  # not even the fewest runs fit: the MILP reports infeasibility
        for _ in range(_MAX_STEPS):
            (lo_devs, lo_f, lo_r), (hi_devs, hi_f, hi_r) = lo, hi
            mu = (hi_f - lo_f) / (lo_r - hi_r)
            if hi_r == self.budget:
                return self._realise(hi_devs, hi_f, w_time, w_energy)
            pt = self._point(w_time, w_energy, mu)
            self._mu_per_value = mu / abs(lo_f) if lo_f else 0.0
            devs, f, r = pt
            self.dual_bound = max(self.dual_bound, f + mu * (r - self.budget))
            line = lo_f + mu * lo_r
            if f + mu * r >= line - _REL * abs(line):
                return None  # mu maximises the dual and neither side meets the budget exactly: a gap
            if r > self.budget:
                lo = pt
            else:
                hi = pt
        return None

    def _big(self, w_time: float, w_energy: float) -> float:
        """A multiplier above the objective of every placement (so runs dominate the penalised cost)."""
        k_lat = w_time + w_energy * self.g.static_power
        big = 1.0 + sum(max(k_lat * n.time[d] + w_energy * n.energy[d] for d in n.allowed) for n in self.g.nodes)
        for t in self.g.tensors:
            big += max(k_lat * tt + w_energy * te for tt, te in
                       (self.g.tensor_transfer(t, self.a, self.b), self.g.tensor_transfer(t, self.b, self.a)))
        return big

