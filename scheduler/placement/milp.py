"""MILP for the sequential model with side constraints, solved by HiGHS (scipy.optimize.milp).

Variables
  x[v,d] in {0,1}   layer v on device d (only for devices that can run v)
  y[t,d] in [0,1]   tensor t has a consumer on d             y[t,d] >= x[c,d] for every consumer c
  z[t,a,d] in [0,1] t is moved from a to d (a != d)          z[t,a,d] >= x[p,a] + y[t,d] - 1
  s[i,k] in [0,1]   a DLA run on core k starts at position i  s[i,k] >= x[v_i,k] - x[v_{i-1},k]
Constraints
  sum_d x[v,d] = 1;  sum_i s[i,k] <= cap;  sum z <= max transitions;
  L = sum t*x + sum T_time*z <= deadline;  E = sum e*x + sum T_energy*z + P*L <= budget.
Objective  w_time * L + w_energy * E.

Why the continuous auxiliaries are exact: for fixed binary x the smallest feasible y, z and s are
the 0/1 indicators of "tensor needed on d", "tensor moved a->d" and "run starts here", i.e. the
true transfer set and loadable count. Every objective coefficient and every constrained quantity
(latency, energy, transitions, loadables) is non-decreasing in y, z, s, so any feasible solution
can lower them to those indicators without losing feasibility or objective; hence the MILP's
optimum over x equals the true optimum. HiGHS runs with a relative gap of 1e-12 and an absolute
gap of 1e-12 on an objective scaled to order one, so its "optimal" is optimal to that tolerance.

Symmetric DLA cores are left to HiGHS: an explicit symmetry-breaking row (sum x[.,dla0] >=
sum x[.,dla1]) made the searches measurably slower on ResNet-like graphs.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from scheduler.costgraph import DEVICES, DLA_CORES, CostGraph
from scheduler.objectives import Constraints


class _Builder:
    def __init__(self) -> None:
        self.lb: list[float] = []
        self.ub: list[float] = []
        self.integ: list[int] = []
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.rlo: list[float] = []
        self.rhi: list[float] = []

    def var(self, lo: float, hi: float, integer: bool) -> int:
        self.lb.append(lo)
        self.ub.append(hi)
        self.integ.append(int(integer))
        return len(self.lb) - 1

    def row(self, terms: dict[int, float] | list[tuple[int, float]], lo: float, hi: float) -> None:
        r = len(self.rlo)
        items = terms.items() if isinstance(terms, dict) else terms
        for c, v in items:
            if v != 0.0:
                self.rows.append(r)
                self.cols.append(c)
                self.vals.append(v)
        self.rlo.append(lo)
        self.rhi.append(hi)


def solve_milp(
    g: CostGraph,
    w_time: float,
    w_energy: float,
    constraints: Constraints,
    time_limit: float = 60.0,
) -> list[str] | None:
    """Optimal placement for ``w_time*L + w_energy*E`` under ``constraints``; None if infeasible."""
    b = _Builder()
    n = len(g)
    x: list[dict[str, int]] = []
    for node in g.nodes:
        x.append({d: b.var(0, 1, True) for d in DEVICES if node.supports(d)})
    lat: dict[int, float] = {}
    dyn: dict[int, float] = {}
    for v, node in enumerate(g.nodes):
        for d, j in x[v].items():
            lat[j] = node.time[d]
            dyn[j] = node.energy[d]
    zs: list[int] = []
    for t in g.tensors:
        p = g.index[t.producer]
        cons = [g.index[c] for c in t.consumers]
        for d in DEVICES:
            holders = [c for c in cons if d in x[c]]
            if not holders:
                continue
            srcs = [a for a in x[p] if a != d]
            if not srcs:
                continue
            y = b.var(0, 1, False)
            for c in holders:
                b.row([(y, 1.0), (x[c][d], -1.0)], 0.0, np.inf)
            for a in srcs:
                tt, te = g.tensor_transfer(t, a, d)
                z = b.var(0, 1, False)
                b.row([(z, 1.0), (x[p][a], -1.0), (y, -1.0)], -1.0, np.inf)
                zs.append(z)
                lat[z] = tt
                dyn[z] = te
    c = constraints
    if c.max_loadables_per_core is not None:
        for core in DLA_CORES:
            starts = []
            for i in range(n):
                cur = x[i].get(core)
                if cur is None:
                    continue
                prev = x[i - 1].get(core) if i > 0 else None
                s = b.var(0, 1, False)
                terms = [(s, 1.0), (cur, -1.0)] + ([(prev, 1.0)] if prev is not None else [])
                b.row(terms, 0.0, np.inf)
                starts.append(s)
            if starts and len(starts) > c.max_loadables_per_core:
                b.row([(s, 1.0) for s in starts], -np.inf, float(c.max_loadables_per_core))
    if c.max_transitions is not None and zs:
        b.row([(z, 1.0) for z in zs], -np.inf, float(c.max_transitions))
    P = g.static_power
    if c.deadline_ms is not None:
        b.row(lat, -np.inf, c.deadline_ms)
    if c.energy_budget_mj is not None:
        b.row({j: dyn.get(j, 0.0) + P * lat.get(j, 0.0) for j in set(lat) | set(dyn)}, -np.inf, c.energy_budget_mj)
    for xv in x:
        b.row([(j, 1.0) for j in xv.values()], 1.0, 1.0)

    nv = len(b.lb)
    cost = np.zeros(nv)
    k_lat = w_time + w_energy * P
    for j, val in lat.items():
        cost[j] += k_lat * val
    for j, val in dyn.items():
        cost[j] += w_energy * val
    scale = float(np.abs(cost).sum()) or 1.0
    cost /= scale / max(1, n)
    A = coo_matrix((b.vals, (b.rows, b.cols)), shape=(len(b.rlo), nv)).tocsr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # mip_abs_gap is passed to HiGHS verbatim
        res = milp(
            cost,
            integrality=np.array(b.integ),
            bounds=Bounds(np.array(b.lb), np.array(b.ub)),
            constraints=LinearConstraint(A, np.array(b.rlo), np.array(b.rhi)),
            options={"mip_rel_gap": 1e-12, "mip_abs_gap": 1e-12, "time_limit": time_limit},
        )
    if res.status == 2:  # infeasible
        return None
    if res.x is None or res.status != 0:
        raise RuntimeError(f"HiGHS did not prove optimality: {res.message}")
    sol = res.x
    return [max(xv, key=lambda d, xv=xv: sol[xv[d]]) for xv in x]
