"""Exact single-inference placement: ``optimal(g, objective, constraints)``.

Which method solves what, and why it is exact
---------------------------------------------
* Linear objectives (latency, energy, latency + lam*energy) are ``a*L + b*E`` with a, b >= 0.
  - Two usable devices and no side constraint other than the loadable cap: Stone's min-cut
    (``mincut.py``). If the min-cut placement also meets the loadable cap it is optimal for the
    capped problem too (it is optimal for a relaxation and feasible); otherwise the MILP decides.
  - Three devices with interchangeable DLA cores (same costs, mirrored transfers): any placement
    that uses both cores can be mapped to one using only dla0 at no higher latency and energy,
    because every dla1 layer and transfer costs the same on dla0, dla0<->dla1 transfers vanish,
    and a tensor needed on both cores is then moved once instead of twice. So without a loadable
    cap (or when the single-core optimum meets it) the {gpu, dla0} min-cut is optimal over all
    three devices. The second core pays off only when the cap binds (or cores differ).
  - A binding loadable cap: Lagrangian relaxation of the run count (``lagrange.py``): a per-run
    penalty is one extra arc per layer in the same min-cut, and a placement that minimises the
    penalised cost while using exactly the run budget (split over both cores at no cost) is
    certified optimal. Without a certificate the MILP with per-core loadable counting decides.
  - Anything else (transition limit, energy budget, deadline, different cores): MILP (``milp.py``).
    The same merge of dla1 into dla0 never raises latency, energy or the number of transitions
    (a tensor's destinations can only coincide), so with interchangeable cores and no loadable
    cap the MILP runs over {gpu, dla0} only: fewer variables and no core symmetry to branch on.
* EDP = L*E is not linear. f(L,E) = L*E is quasi-concave and non-decreasing on the positive
  quadrant, so over the finite set P of feasible (L,E) points its minimum is attained at a vertex
  of Q = conv(P) + R^2_+ (a point of Q is a convex combination of vertices plus a non-negative
  direction, and f of it is >= the smallest f of those vertices). Every vertex of Q is the unique
  minimiser of w1*L + w2*E for some w > 0. We enumerate those vertices with the non-inferior-set
  (Aneja-Nair) recursion: from a min-L point and a min-E point, solve the weighted problem with
  the normal of the segment between two known points; a strictly better point splits the segment,
  otherwise the segment is a hull edge. Each call is an exact linear solve (min-cut or MILP), each
  split adds a new hull point, so the recursion ends after at most 2*(#vertices) - 1 solves, and
  it finds every vertex even if the first two points are not the lexicographic extremes (a
  segment whose normal has both weights > 0 always prefers the lexicographic vertex). A segment
  between (L_a, E_a) and (L_b, E_b), L_a < L_b, can only hide vertices with L >= L_a and E >= E_b,
  so it is skipped when L_a * E_b is already >= the best EDP found: the result stays exact.
  The pruning also uses lower bounds of the weighted problem from relaxations (uncapped min-cut,
  Lagrangian dual; see ``_edp_search``), which close segments without a MILP solve. A segment
  closed that way has no feasible point strictly below it, or none whose L*E beats the incumbent,
  so no vertex that could be the optimum is skipped.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable, Sequence

from scheduler.costgraph import DEVICES, DLA0, DLA1, GPU, CostGraph
from scheduler.objectives import Constraints, Kind, Objective, evaluate
from scheduler.placement.lagrange import CappedLagrangian
from scheduler.placement.milp import solve_milp
from scheduler.placement.mincut import min_cut_placement
from scheduler.placement.result import Placement, PlacementError, make_placement

_REL = 1e-12
_ABOVE: list[str] = []  # sentinel of ``_LinearSolver.below``: no placement beats the threshold


def _check_placeable(g: CostGraph) -> None:
    for n in g.nodes:
        if not n.allowed:
            why = "; ".join(f"{d}: {n.why_not(d)}" for d in DEVICES)
            raise PlacementError(f"layer {n.name!r} cannot run on any device ({why})")


def _used_devices(g: CostGraph) -> list[str]:
    return [d for d in DEVICES if any(n.supports(d) for n in g.nodes)]


class _LinearSolver:
    """Exact minimiser of w_time*L + w_energy*E under the constraints; records which method ran.

    Order of methods per call: the min-cut (no cap, or its answer meets the cap); the Lagrangian
    certificate for a binding loadable cap (``lagrange``); the MILP otherwise. With interchangeable
    DLA cores and no loadable cap, the MILP runs on {gpu, dla0} only (module doc: merging dla1 into
    dla0 never raises latency, energy or transitions), a smaller model without core symmetry.
    """

    def __init__(self, g: CostGraph, constraints: Constraints) -> None:
        self.g = g
        self.c = constraints
        self.methods: list[str] = []
        used = _used_devices(g)
        three = set(used) == {GPU, DLA0, DLA1}
        symmetric = three and g.dla_cores_interchangeable()
        self.pair: tuple[str, str] | None = None
        if constraints.only_loadable_cap():
            if len(used) == 1:
                self.pair = (used[0], used[0])
            elif len(used) == 2:
                self.pair = (used[0], used[1])
            elif symmetric:
                self.pair = (GPU, DLA0)
        cap = constraints.max_loadables_per_core
        self.lagrange: CappedLagrangian | None = None
        if self.pair is not None and self.pair[0] != self.pair[1] and cap is not None:
            self.lagrange = CappedLagrangian(g, self.pair, cap, two_cores=three)
        self.milp_graph = g.subgraph_devices((GPU, DLA0)) if symmetric and cap is None else g
        self._relaxed: dict[tuple[float, float], tuple[list[str], float]] = {}

    def lower_bound(self, w_time: float, w_energy: float) -> float | None:
        """min w.(L, E) without the loadable cap (a relaxation), when a min-cut gives it; else None."""
        if self.lagrange is None:
            return None
        key = (w_time, w_energy)
        if key not in self._relaxed:
            self._relaxed[key] = self.lagrange.relaxed(w_time, w_energy)
        return self._relaxed[key][1]

    def __call__(self, w_time: float, w_energy: float) -> list[str] | None:
        devs = self._solve(w_time, w_energy, None)
        assert devs is not _ABOVE
        return devs

    def below(self, w_time: float, w_energy: float, closes: Callable[[float], bool]):
        """An exact minimiser, or ``_ABOVE`` when ``closes(lb)`` holds for a proven lower bound lb
        of min w.(L, E) (uncapped min-cut or Lagrangian dual), so that the caller can settle a hull
        segment without the MILP."""
        return self._solve(w_time, w_energy, closes)

    def _solve(self, w_time: float, w_energy: float, closes: Callable[[float], bool] | None):
        g, c = self.g, self.c
        if self.pair is not None:
            a, b = self.pair
            if a == b:
                devs = [a] * len(g)
                cap = c.max_loadables_per_core
                if cap is None or max(evaluate(g, devs).loadables.values()) <= cap:
                    self.methods.append("min-cut")
                    return devs
            elif self.lagrange is None:
                self.methods.append("min-cut")
                return min_cut_placement(g, a, b, w_time, w_energy)
            else:
                lb = self.lower_bound(w_time, w_energy)
                if closes is not None and closes(lb):
                    self.methods.append("min-cut")
                    return _ABOVE
                start = self._relaxed[(w_time, w_energy)]
                before = self.lagrange.min_cuts
                devs = self.lagrange.solve(w_time, w_energy, start)
                if devs is not None:
                    self.methods.append("min-cut" if self.lagrange.min_cuts == before else "lagrangian")
                    return devs
                if closes is not None and closes(self.lagrange.dual_bound):
                    self.methods.append("lagrangian")
                    return _ABOVE
        self.methods.append("milp")
        return solve_milp(self.milp_graph, w_time, w_energy, c)


def _diagnose(g: CostGraph, constraints: Constraints) -> PlacementError:
    """Explain why no placement meets ``constraints`` (called only when that is the case)."""
    c = constraints
    structural = Constraints(c.max_loadables_per_core, c.max_transitions)
    solver = _LinearSolver(g, structural)
    fast = solver(1.0, 0.0)
    if fast is None:
        return PlacementError(
            f"no placement meets the structural limits (max {c.max_loadables_per_core} DLA loadables per core, "
            f"max {c.max_transitions} transitions); layers that only a DLA can run need loadables and transfers"
        )
    lmin = evaluate(g, fast).latency
    if c.deadline_ms is not None and lmin > c.deadline_ms:
        return PlacementError(f"deadline {c.deadline_ms:.6g} ms is below the fastest placement's {lmin:.6g} ms")
    frugal = solver(0.0, 1.0)
    emin = evaluate(g, frugal).energy
    if c.energy_budget_mj is not None and emin > c.energy_budget_mj:
        return PlacementError(
            f"energy budget {c.energy_budget_mj:.6g} mJ is below the minimum achievable energy {emin:.6g} mJ"
        )
    return PlacementError(
        f"no placement meets deadline {c.deadline_ms:.6g} ms and energy budget {c.energy_budget_mj:.6g} mJ together "
        f"(fastest: {lmin:.6g} ms; least energy: {emin:.6g} mJ; each alone is achievable)"
    )


def _corner(a: tuple[float, float], wa: tuple[float, float], b: tuple[float, float], wb: tuple[float, float]):
    """Intersection of the supporting lines wa.p = wa.a and wb.p = wb.b (None when parallel)."""
    det = wa[0] * wb[1] - wa[1] * wb[0]
    if det == 0:
        return None
    ra = wa[0] * a[0] + wa[1] * a[1]
    rb = wb[0] * b[0] + wb[1] * b[1]
    return (ra * wb[1] - wa[1] * rb) / det, (wa[0] * rb - ra * wb[0]) / det


def _clip_min_product(tri: Sequence[tuple[float, float]], w: tuple[float, float], lb: float | None) -> float:
    """min L*E over the triangle ``tri`` intersected with {p : w.p >= lb} (the whole triangle when lb is None).

    L*E is quasi-concave, so the minimum over a convex polygon is at a vertex; the clipped polygon's
    vertices are the triangle's vertices on the kept side and the edge crossings of w.p = lb."""
    if lb is None:
        return min(p[0] * p[1] for p in tri)
    h = [w[0] * p[0] + w[1] * p[1] - lb for p in tri]
    verts = [p for p, hp in zip(tri, h) if hp >= 0]
    for i in range(3):
        j = (i + 1) % 3
        if (h[i] >= 0) != (h[j] >= 0):
            s = h[i] / (h[i] - h[j])
            p, q = tri[i], tri[j]
            verts.append((p[0] + s * (q[0] - p[0]), p[1] + s * (q[1] - p[1])))
    return min((p[0] * p[1] for p in verts), default=float("inf"))


def _edp_search(solve: _LinearSolver, g: CostGraph) -> tuple[list[str] | None, int]:
    """Minimum L*E over the feasible set via the hull recursion described in the module doc.

    Pruning: a known hull point p found with weight w has the supporting line w.p' >= w.p for all
    feasible p'. Vertices hidden between consecutive known points a and b lie in the triangle
    (a, b, corner), corner being where their supporting lines meet (or (L_a, E_b) when they do not
    meet inside the box), and above the line w.p' >= LB_w, where w is the segment's normal and LB_w
    a lower bound of the weighted problem from a relaxation (``_LinearSolver.lower_bound``: the
    uncapped min-cut) when one is available. L*E is quasi-concave, so its minimum over that convex
    region is at one of its vertices. Segments whose bound is not below the incumbent are dropped
    (open segments are taken lowest bound first), and a segment is closed as a hull edge without
    an exact solve when a relaxation proves that no feasible point lies strictly below it
    (``_LinearSolver.below``).
    """
    p_l = solve(1.0, 0.0)
    if p_l is None:
        return None, 1
    p_e = solve(0.0, 1.0)
    calls = 2
    pts: dict[tuple[str, ...], tuple[float, float]] = {}

    def point(devs: Sequence[str]) -> tuple[float, float]:
        key = tuple(devs)
        if key not in pts:
            m = evaluate(g, devs)
            pts[key] = (m.latency, m.energy)
        return pts[key]

    def push(a, wa, b, wb) -> None:
        c = _corner(a, wa, b, wb)
        if c is None or not (a[0] <= c[0] <= b[0] and b[1] <= c[1] <= a[1]):
            c = (a[0], b[1])
        corner[(a, b)] = c
        w = (a[1] - b[1], b[0] - a[0])
        bnd = _clip_min_product((a, c, b), w, None)
        if bnd < best[0]:
            bnd = _clip_min_product((a, c, b), w, solve.lower_bound(*w))
        if bnd < best[0]:
            heapq.heappush(heap, (bnd, a, wa, b, wb))

    a, b = point(p_l), point(p_e)
    best = min((a[0] * a[1], tuple(p_l)), (b[0] * b[1], tuple(p_e)))
    heap: list = []
    corner: dict = {}
    if a[0] < b[0] and a[1] > b[1]:
        push(a, (1.0, 0.0), b, (0.0, 1.0))
    while heap:
        lb, a, wa, b, wb = heapq.heappop(heap)
        if lb >= best[0]:
            break  # every remaining segment has a bound at least this large
        w = (a[1] - b[1], b[0] - a[0])
        ref = w[0] * a[0] + w[1] * a[1]
        tri = (a, corner[(a, b)], b)

        def closes(lb_w: float, w=w, ref=ref, tri=tri, incumbent=best[0]) -> bool:
            return lb_w >= ref - _REL * abs(ref) or _clip_min_product(tri, w, lb_w) >= incumbent

        q = solve.below(w[0], w[1], closes)
        calls += 1
        if q is _ABOVE:
            continue  # proven hull edge
        pq = point(q)
        if w[0] * pq[0] + w[1] * pq[1] < ref - _REL * abs(ref):
            if pq[0] * pq[1] < best[0]:
                best = (pq[0] * pq[1], tuple(q))
            push(a, wa, pq, w)
            push(pq, w, b, wb)
    return list(best[1]), calls


def optimal(
    g: CostGraph,
    objective: Objective | str = "latency",
    constraints: Constraints | None = None,
    devices: Iterable[str] = DEVICES,
) -> Placement:
    """The exact optimum of ``objective`` under ``constraints`` for one inference (sequential model).

    ``devices`` restricts which devices may be used (default: gpu, dla0 and dla1).
    Raises PlacementError for requests no placement can meet, with the limit and the best value."""
    objective = Objective.parse(objective)
    constraints = constraints or Constraints()
    devices = tuple(devices)
    t0 = time.perf_counter()
    if set(devices) != set(DEVICES):
        g = g.subgraph_devices(devices)
    _check_placeable(g)
    solve = _LinearSolver(g, constraints)
    extra: dict[str, float] = {}
    if objective.kind is Kind.EDP:
        devs, calls = _edp_search(solve, g)
        extra["linear_solves"] = calls
    else:
        wt, we = objective.linear_weights()
        devs = solve(wt, we)
    if devs is None:
        raise _diagnose(g, constraints)
    method = "+".join(sorted(set(solve.methods)))
    return make_placement(
        g, devs, objective, f"optimal[{method}]", time.perf_counter() - t0, constraints=constraints, extra=extra
    )
