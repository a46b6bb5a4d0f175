"""One lifetime planner for the engine's activation arena and the GPU device arena.

``engine.ir.memory`` plans a network's activations; ``backends.gpu.arena`` plans a lowered GPU
segment's buffers with the same ``step_lifetimes`` and ``place_buffers`` at its own 256-byte
alignment. Both must give placements where buffers live at the same step never share bytes, on
random DAGs.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_memory import random_network

from backends.gpu.arena import ALIGN, BufferUse, buffer_uses, plan_offsets
from backends.gpu.lower import lower, supports
from engine.ir.memory import ALIGNMENT, Buffer, place_buffers, plan_memory, step_lifetimes, verify


def _assert_disjoint(items: list[tuple[str, int, int, int]], offsets: dict[str, int], total: int, align: int) -> None:
    """items: (name, nbytes, first, last); live-overlapping buffers must not share a byte."""
    for name, nbytes, _, _ in items:
        assert offsets[name] % align == 0 and offsets[name] >= 0
        assert offsets[name] + nbytes <= total
    for i, (a, na, fa, la) in enumerate(items):
        for b, nb, fb, lb in items[i + 1:]:
            if na and nb and fa <= lb and fb <= la:
                oa, ob = offsets[a], offsets[b]
                assert oa + na <= ob or ob + nb <= oa, (a, b)


@pytest.mark.parametrize("seed", range(30))
def test_engine_and_gpu_arenas_on_a_random_dag(seed):
    net = random_network(seed, max_layers=18)
    verify(plan_memory(net), net)  # the engine's arena

    layers = [la for la in net.layers if supports(la, net)[0]]
    assert len(layers) == len(net.layers)  # every kind of the random DAG lowers for the GPU
    outputs = list(net.outputs)
    low = lower(net, layers, outputs)
    uses = buffer_uses(low)
    offsets, total = plan_offsets(uses)
    life = {u.name: (u.first, u.last) for u in uses}
    def buffer(name: str) -> str:  # a slot aliasing another uses that slot's buffer
        return low.slots[name].alias or name

    for step, op in enumerate(low.ops):  # every launch touches only buffers live at its step
        for name in (*op.reads, *op.writes):
            if low.slots[name].const is None:
                assert life[buffer(name)][0] <= step <= life[buffer(name)][1], (name, step)
    for name in low.inputs:
        assert life[name][0] == -1
    for name in low.outputs.values():
        if low.slots[name].const is None:
            assert life[buffer(name)][1] == len(low.ops)
    _assert_disjoint([(u.name, u.nbytes, u.first, u.last) for u in uses], offsets, total, ALIGN)


@pytest.mark.parametrize("seed", range(30))
def test_one_placement_rule_at_both_alignments(seed):
    rng = np.random.default_rng(seed)
    items = []
    for i in range(int(rng.integers(1, 40))):
        a, b = sorted(int(v) for v in rng.integers(-1, 25, 2))
        items.append((f"t{i}", int(rng.integers(0, 5000)), a, b))
    engine_offsets, engine_total = place_buffers(Buffer(*it) for it in items)
    _assert_disjoint(items, engine_offsets, engine_total, ALIGNMENT)
    gpu_offsets, gpu_total = plan_offsets([BufferUse(*it) for it in items])
    _assert_disjoint(items, gpu_offsets, gpu_total, ALIGN)
    # never more than no reuse at all, never less than the bytes live at the busiest step
    assert gpu_total <= sum(-(-max(n, 1) // ALIGN) * ALIGN for _, n, _, _ in items)
    busiest = max(sum(n for _, n, a, b in items if a <= s <= b) for s in range(-1, 25))
    assert engine_total >= busiest and gpu_total >= busiest


def test_step_lifetimes():
    steps = [(["x"], ["a"]), (["a"], ["b"]), (["a", "b"], ["c"]), (["c"], ["d"])]
    live = step_lifetimes(steps, live_in=["x"], live_out=["d", "b"])
    assert live == {"x": (-1, 0), "a": (0, 2), "b": (1, 4), "c": (2, 3), "d": (3, 4)}
