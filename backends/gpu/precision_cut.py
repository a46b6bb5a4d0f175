"""INT8 or FP16 for each layer at the least total time, exactly, as a minimum s-t cut.

The choice is a two-label energy: each layer costs its kernel's time in the label it takes
(``unary``), and a tensor between two layers of different labels costs its conversion (``pairs``,
int8 <-> fp16; zero when both agree). Such an energy, whose pair terms cost nothing on agreement and
something non-negative on disagreement, is minimised exactly by a minimum cut (Kolmogorov and Zabih,
"What energy functions can be minimized via graph cuts?", PAMI 2004): INT8 layers on the source
side, FP16 on the sink side. A greedy pass per layer cannot find the chains that pay only together
(an expansion and its depthwise layer, whose big tensor between them converts when only one flips);
the cut does. scipy's maximum flow does the work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# costs are milliseconds; the flow solver takes int32 capacities: nanoseconds, up to two seconds an edge
_UNITS_PER_MS = 1e6


@dataclass
class LabelProblem:
    """``unary[name] = (cost as INT8, cost as FP16)``; ``pairs[(a, b)]``: the cost when a and b differ."""

    unary: dict[str, tuple[float, float]] = field(default_factory=dict)
    pairs: dict[tuple[str, str], float] = field(default_factory=dict)

    def add_unary(self, name: str, int8: float = 0.0, fp16: float = 0.0) -> None:
        a, b = self.unary.get(name, (0.0, 0.0))
        self.unary[name] = (a + int8, b + fp16)

    def add_pair(self, a: str, b: str, cost: float) -> None:
        if a == b or cost <= 0:
            return
        key = (a, b) if a < b else (b, a)
        self.pairs[key] = self.pairs.get(key, 0.0) + cost

    def energy(self, fp16: set[str]) -> float:
        """The total cost (ms) of labelling ``fp16`` FP16 and every other layer INT8."""
        total = sum(c[1] if n in fp16 else c[0] for n, c in self.unary.items())
        return total + sum(w for (a, b), w in self.pairs.items() if (a in fp16) != (b in fp16))


def solve(problem: LabelProblem) -> set[str]:
    """The layers to label FP16 at the least ``problem.energy`` (ties keep INT8)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    names = sorted(set(problem.unary) | {n for pair in problem.pairs for n in pair})
    if not names:
        return set()
    index = {n: i + 2 for i, n in enumerate(names)}  # 0: source (INT8), 1: sink (FP16)
    size = len(names) + 2
    cap = np.zeros((size, size), np.int64)
    for name, (c8, c16) in problem.unary.items():
        base = min(c8, c16)  # a constant per layer does not move the cut
        cap[0, index[name]] += _units(c16 - base)  # cut when the layer is on the sink (FP16) side
        cap[index[name], 1] += _units(c8 - base)  # cut when it stays on the source (INT8) side
    for (a, b), w in problem.pairs.items():
        cap[index[a], index[b]] += _units(w)
        cap[index[b], index[a]] += _units(w)
    if cap.max(initial=0) >= 2**31:
        raise ValueError("a layer cost of more than two seconds: the timings are not of one layer")
    flow = maximum_flow(csr_matrix(cap.astype(np.int32)), 0, 1).flow.toarray()
    residual = cap - flow
    sink_side = np.zeros(size, bool)
    sink_side[1] = True
    frontier = [1]
    while frontier:  # backwards over edges with capacity left: the smallest sink side of a minimum cut,
        # so that a layer free to take either label (a tie) stays INT8
        nxt = np.flatnonzero((residual[:, frontier] > 0).any(axis=1) & ~sink_side)
        sink_side[nxt] = True
        frontier = list(nxt)
    return {n for n in names if sink_side[index[n]]}


def _units(ms: float) -> int:
    return int(round(max(ms, 0.0) * _UNITS_PER_MS))
