"""Stone's two-processor min-cut for the sequential model with a linear objective.

Construction (source = device A, sink = device B; a node on the source side runs on A):

* layer v: arc s->v with capacity w_B(v) (cut exactly when v runs on B), arc v->t with capacity
  w_A(v) (cut exactly when v runs on A); a device that cannot run v gets an infinite capacity.
* tensor t with producer p and consumers C, hyperedge gadgets so a tensor is paid once per
  direction however many consumers cross:
    - A->B: auxiliary node a_t, arc p->a_t with capacity w_AB(t), arcs a_t->c (infinite) for c in C.
      If p is on A and some consumer on B, a_t must be on B (else an infinite arc is cut), so
      p->a_t is cut and w_AB is paid exactly once; otherwise a_t can sit with the free side at no cost.
    - B->A: auxiliary node b_t, arcs c->b_t (infinite), arc b_t->p with capacity w_BA(t); symmetric.
  With two devices a tensor has one destination device other than its producer's, so these two
  gadgets reproduce the transfer term of the objective exactly.

* optional per-run penalty mu (the Lagrangian term of a DLA loadable cap, ``scheduler.placement.
  lagrange``): a DLA run on device B starts at execution position i exactly when i is on B and i-1
  is on A (or i = 0), so an arc (i-1)->i of capacity mu (and mu added to s->0) charges mu per run
  start; for a DLA device A the arcs i->(i-1) and 0->t do the same. Each term is a pairwise
  "u on one side, v on the other" cost, which is what a cut pays, so the construction stays exact.

Every finite s-t cut therefore costs exactly the objective of the placement it encodes (for the
aux nodes' best positions), and every placement is encoded by some finite cut, so a minimum cut
is an optimal placement. Capacities are the objective weights converted exactly to integers
(every float is m * 2^e, so one power-of-two scale makes all of them integral) and the max-flow
runs on Python integers: no rounding enters the comparison of cuts.
"""

from __future__ import annotations

from collections import deque

from scheduler.costgraph import CostGraph, is_dla


class _FlowNetwork:
    """Dinic's max-flow on integer capacities (adjacency arrays, iterative DFS)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.head: list[list[int]] = [[] for _ in range(n)]
        self.to: list[int] = []
        self.cap: list[int] = []

    def add(self, u: int, v: int, c: int) -> None:
        if c <= 0 or u == v:
            return
        self.head[u].append(len(self.to))
        self.to.append(v)
        self.cap.append(c)
        self.head[v].append(len(self.to))
        self.to.append(u)
        self.cap.append(0)

    def max_flow(self, s: int, t: int) -> int:
        total = 0
        to, cap, head = self.to, self.cap, self.head
        while True:
            level = [-1] * self.n
            level[s] = 0
            q = deque([s])
            while q:
                u = q.popleft()
                for e in head[u]:
                    if cap[e] > 0 and level[to[e]] < 0:
                        level[to[e]] = level[u] + 1
                        q.append(to[e])
            if level[t] < 0:
                return total
            it = [0] * self.n
            while True:
                # one augmenting path in the level graph, found iteratively
                path: list[int] = []
                u = s
                while u != t:
                    hu = head[u]
                    while it[u] < len(hu):
                        e = hu[it[u]]
                        if cap[e] > 0 and level[to[e]] == level[u] + 1:
                            break
                        it[u] += 1
                    if it[u] == len(hu):
                        if u == s:
                            break
                        level[u] = -1  # dead end
                        e = path.pop()
                        u = to[e ^ 1]
                        it[u] += 1
                        continue
                    e = hu[it[u]]
                    path.append(e)
                    u = to[e]
                if u != t:
                    break
                f = min(cap[e] for e in path)
                for e in path:
                    cap[e] -= f
                    cap[e ^ 1] += f
                total += f

    def source_side(self, s: int) -> list[bool]:
        seen = [False] * self.n
        seen[s] = True
        q = deque([s])
        while q:
            u = q.popleft()
            for e in self.head[u]:
                if self.cap[e] > 0 and not seen[self.to[e]]:
                    seen[self.to[e]] = True
                    q.append(self.to[e])
        return seen


def _exact_integers(values: list[float | None]) -> list[int | None]:
    """Scale finite floats by one power of two so that all become integers, exactly.

    ``float.as_integer_ratio`` gives numerator / 2^k exactly; the largest denominator is a
    common multiple of all of them."""
    ratios = [v.as_integer_ratio() if v is not None else None for v in values]
    den = max((r[1] for r in ratios if r is not None), default=1)
    return [None if r is None else r[0] * (den // r[1]) for r in ratios]


def min_cut_placement(
    g: CostGraph, a: str, b: str, w_time: float, w_energy: float, run_penalty: float = 0.0
) -> list[str]:
    """Minimise ``w_time * latency + w_energy * energy (+ run_penalty * DLA runs)`` over placements
    on devices ``a`` and ``b``. Runs are counted on whichever of ``a`` and ``b`` is a DLA core.

    Layers that run on neither must not exist (checked by the caller)."""
    n = len(g)
    k_lat = w_time + w_energy * g.static_power  # energy = dyn + P * latency
    node_w: list[tuple[float | None, float | None]] = []
    for node in g.nodes:
        wa = k_lat * node.time[a] + w_energy * node.energy[a] if node.supports(a) else None
        wb = k_lat * node.time[b] + w_energy * node.energy[b] if node.supports(b) else None
        node_w.append((wa, wb))
    ten_w: list[tuple[float, float]] = []
    for t in g.tensors:
        ab_t, ab_e = g.tensor_transfer(t, a, b)
        ba_t, ba_e = g.tensor_transfer(t, b, a)
        ten_w.append((k_lat * ab_t + w_energy * ab_e, k_lat * ba_t + w_energy * ba_e))
    pen_a = run_penalty if is_dla(a) else 0.0
    pen_b = run_penalty if is_dla(b) else 0.0
    flat: list[float | None] = [x for pair in node_w for x in pair] + [x for pair in ten_w for x in pair]
    flat += [pen_a, pen_b]
    ints = _exact_integers(flat)
    mu_a, mu_b = ints[-2], ints[-1]
    ints = ints[:-2]
    inf = sum(x for x in ints if x is not None) + n * (mu_a + mu_b) + 1
    ints = [inf if x is None else x for x in ints]
    src, snk = n, n + 1
    net = _FlowNetwork(n + 2 + 2 * len(g.tensors))
    for v in range(n):
        wa, wb = ints[2 * v], ints[2 * v + 1]
        if v == 0:  # a run starts at position 0 on whichever device layer 0 uses
            wa, wb = min(inf, wa + mu_a), min(inf, wb + mu_b)
        else:
            net.add(v - 1, v, mu_b)  # v-1 on A, v on B: a run on B starts at v
            net.add(v, v - 1, mu_a)  # v on A, v-1 on B: a run on A starts at v
        net.add(src, v, wb)
        net.add(v, snk, wa)
    base = 2 * n
    for j, t in enumerate(g.tensors):
        w_ab, w_ba = ints[base + 2 * j], ints[base + 2 * j + 1]
        p = g.index[t.producer]
        cons = [g.index[c] for c in t.consumers]
        if w_ab > 0:
            aux = n + 2 + 2 * j
            net.add(p, aux, w_ab)
            for c in cons:
                net.add(aux, c, inf)
        if w_ba > 0:
            aux = n + 3 + 2 * j
            for c in cons:
                net.add(c, aux, inf)
            net.add(aux, p, w_ba)
    net.max_flow(src, snk)
    side = net.source_side(src)
    return [a if side[v] else b for v in range(n)]
