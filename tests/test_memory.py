"""Activation memory planning: reuse by liveness, concat elimination, and the overlap checker."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.ir.dtypes import Precision
from engine.ir.layers import ConcatenationParams, IdentityParams
from engine.ir.memory import ALIGNMENT, MemoryPlan, TensorSlot, lifetimes, peak_live_bytes, plan_memory, verify
from engine.ir.network import Network


def chain(depth: int = 6, shape=(1, 8, 16, 16)) -> Network:
    n = Network("chain")
    t = n.add_input("x", shape)
    for i in range(depth):
        t = n.add_activation(t, "relu" if i % 2 else "sigmoid", name=f"act{i}")
    n.mark_output(t)
    return n


def concat_net(batch: int = 1, axis: int = 1, in_place: bool = True, output_is_concat: bool = False,
               fp16_branch: bool = False) -> Network:
    n = Network("concat")
    x = n.add_input("x", (batch, 4, 8, 8))
    a = n.add_activation(x, "relu", name="a")
    b = n.add_activation(x, "sigmoid", name="b")
    if fp16_branch:
        n.layer("b").precision = Precision.FP16
    c = n.add_activation(a, "tanh", name="c")
    cat = n.add_layer(ConcatenationParams(axis=axis, in_place=in_place), [c, b], name="cat")
    if output_is_concat:
        n.mark_output(cat.outputs[0])
    else:
        n.mark_output(n.add_activation(cat.outputs[0], "relu", name="y"))
    return n


def test_chain_reuses_memory():
    n = chain()
    plan = plan_memory(n)
    verify(plan, n)
    size = 8 * 16 * 16 * 4
    assert set(plan.slots) == {f"act{i}" for i in range(5)}  # act5 is the network output
    assert plan.sum_of_tensor_bytes == 5 * size
    assert plan.peak_bytes == 2 * size  # ping-pong between two buffers
    assert len({s.offset for s in plan.slots.values()}) == 2


def test_lifetimes_cover_producer_and_last_consumer():
    n = concat_net()
    live = lifetimes(n)
    assert live["a"] == (0, 2) and live["b"] == (1, 3) and live["c"] == (2, 3) and live["cat"] == (3, 4)


def test_concat_eliminated_when_inputs_are_contiguous():
    n = concat_net(batch=1, axis=1)
    plan = plan_memory(n)
    verify(plan, n)
    d = plan.concats["cat"]
    assert d.in_place and "contiguous" in d.reason
    cat, c, b = plan.slots["cat"], plan.slots["c"], plan.slots["b"]
    assert (c.parent, b.parent) == ("cat", "cat")
    assert c.offset == cat.offset and b.offset == cat.offset + c.nbytes
    assert plan.eliminated_concats == {"cat"}


@pytest.mark.parametrize("kwargs, reason", [
    ({"batch": 2, "axis": 1}, "dims [2] before axis 1 are not all 1"),
    ({"batch": 1, "axis": 2}, "dims [1, 4] before axis 2 are not all 1"),
    ({"output_is_concat": True}, "is a network output"),
    ({"fp16_branch": True}, "is stored as float16, the output as float32"),
    ({"in_place": False}, "in_place not requested"),
])
def test_concat_falls_back_to_a_copy(kwargs, reason):
    n = concat_net(**kwargs)
    plan = plan_memory(n)
    verify(plan, n)
    d = plan.concats["cat"]
    assert not d.in_place and reason in d.reason
    assert all(s.parent is None for s in plan.slots.values())


def test_concat_of_network_input_and_repeated_input_fall_back():
    n = Network("io")
    x = n.add_input("x", (1, 2, 4))
    a = n.add_activation(x, "relu", name="a")
    n.add_layer(ConcatenationParams(axis=1, in_place=True), [x, a], name="cat1")
    n.add_layer(ConcatenationParams(axis=1, in_place=True), [a, a], name="cat2")
    n.mark_output(n.add_elementwise("cat1", "cat2", "sum", name="y"))
    plan = plan_memory(n)
    verify(plan, n)
    assert "input 'x' is a network input" in plan.concats["cat1"].reason
    assert "appears more than once" in plan.concats["cat2"].reason


def test_nested_and_shared_concats():
    n = Network("nested")
    x = n.add_input("x", (1, 2, 4))
    a, b, c = (n.add_activation(x, "relu", name=k) for k in "abc")
    n.add_layer(ConcatenationParams(axis=1, in_place=True), [a, b], name="inner")
    n.add_layer(ConcatenationParams(axis=1, in_place=True), ["inner", c], name="outer")
    n.add_layer(ConcatenationParams(axis=1, in_place=True), [a, c], name="other")  # a, c already placed
    n.mark_output(n.add_activation("outer", "sigmoid", name="y"))
    n.mark_output(n.add_activation("other", "sigmoid", name="z"))
    plan = plan_memory(n)
    verify(plan, n)
    s = plan.slots
    assert plan.concats["inner"].in_place and plan.concats["outer"].in_place
    assert "already lives inside 'inner'" in plan.concats["other"].reason
    assert s["a"].offset == s["outer"].offset and s["b"].offset == s["a"].offset + 32
    assert s["c"].offset == s["outer"].offset + 64 and s["inner"].parent == "outer"


def test_verify_catches_overlap_and_misalignment():
    good = MemoryPlan(ALIGNMENT, 128, 128, {"a": TensorSlot("a", 0, 64, 0, 1), "b": TensorSlot("b", 64, 64, 1, 2)})
    verify(good)
    bad = MemoryPlan(ALIGNMENT, 128, 128, {"a": TensorSlot("a", 0, 64, 0, 1), "b": TensorSlot("b", 0, 64, 1, 2)})
    with pytest.raises(AssertionError, match="'[ab]' .* overlaps '[ab]'"):
        verify(bad)
    with pytest.raises(AssertionError, match="not 64-byte aligned"):
        verify(MemoryPlan(ALIGNMENT, 128, 128, {"a": TensorSlot("a", 8, 64, 0, 1)}))
    with pytest.raises(AssertionError, match="outside"):
        verify(MemoryPlan(ALIGNMENT, 64, 64, {"a": TensorSlot("a", 64, 64, 0, 1)}))
    # disjoint lifetimes may share bytes
    verify(MemoryPlan(ALIGNMENT, 64, 128, {"a": TensorSlot("a", 0, 64, 0, 1), "b": TensorSlot("b", 0, 64, 2, 3)}))


def test_to_dict_is_json_ready():
    import json

    d = plan_memory(concat_net()).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["concats"]["cat"]["in_place"] is True


# ------------------------------------------------------------------------------- random DAGs


def random_network(seed: int, max_layers: int = 14) -> Network:
    """A random DAG of pointwise ops, sums, concats (some in place), identities and constants."""
    rng = np.random.default_rng(seed)
    n = Network(f"random{seed}")
    batch = 1 if rng.random() < 0.7 else 2
    n.add_input("x", (batch, int(rng.integers(1, 4)), 3, 3))
    if rng.random() < 0.5:
        n.add_input("x2", (batch, 2, 3, 3))
    pool = list(n.inputs)
    for i in range(int(rng.integers(2, max_layers))):
        op = rng.choice(["act", "act", "sum", "concat", "concat", "identity", "const"])
        inner = pool[len(n.inputs):] if len(pool) > len(n.inputs) and rng.random() < 0.8 else pool
        src = inner[int(rng.integers(len(inner)))]
        shape = n.tensors[src].shape
        name = f"l{i}"
        if op == "sum":
            same = [t for t in pool if n.tensors[t].shape == shape]
            out = n.add_elementwise(src, same[int(rng.integers(len(same)))], "sum", name=name).name
        elif op == "concat":
            axis = int(rng.choice([0, 1, 1, 1, 2, 3]))
            same = [t for t in pool if all(d1 == d2 for k, (d1, d2) in enumerate(zip(n.tensors[t].shape, shape))
                                           if k != axis)]
            k = int(rng.integers(1, 4))
            picks = ([same[int(j)] for j in rng.choice(len(same), size=k, replace=False)] if len(same) >= k
                     and rng.random() < 0.8 else [same[int(j)] for j in rng.integers(len(same), size=k)])
            layer = n.add_layer(ConcatenationParams(axis=axis, in_place=bool(rng.random() < 0.8)), picks, name=name)
            out = layer.outputs[0]
        elif op == "identity":
            out = n.add_layer(IdentityParams(), [src], name=name).outputs[0]
        elif op == "const":
            out = n.add_constant(rng.standard_normal(shape).astype(np.float32), name=name).name
        else:
            out = n.add_activation(src, str(rng.choice(["relu", "sigmoid", "tanh"])), name=name).name
        if rng.random() < 0.25 and n.layers[-1].kind.value != "constant":
            n.layers[-1].precision = Precision.FP16
        pool.append(out)
    pool.append(n.add_activation(pool[-1], "relu", name="last").name)
    n.mark_output(pool[-1])
    for t in pool[:-1]:
        if rng.random() < 0.15:
            n.mark_output(t)
    n.validate()
    return n


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1))
def test_random_dags_never_overlap(seed):
    n = random_network(seed)
    plan = plan_memory(n)
    verify(plan, n)
    assert plan.peak_bytes <= plan.sum_of_tensor_bytes
    # lower bound: the bytes live at any step must fit
    live = lifetimes(n)
    for step in range(len(n.layers)):
        roots = [s for s in plan.slots.values() if s.parent is None and s.start <= step <= s.end]
        assert sum(s.nbytes for s in roots) <= plan.peak_bytes
    for t, s in plan.slots.items():
        assert s.start <= live[t][0] and live[t][1] <= s.end


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1))
def test_peak_live_bytes_is_the_largest_live_set(seed):
    """Against a per-step count written out directly: inputs live from before the first layer to
    their last reader, outputs from their producer to after the last layer, other tensors from
    producer to last reader."""
    n = random_network(seed)
    rng = np.random.default_rng(seed)
    nbytes = {t: int(rng.integers(1, 1000)) for t in n.tensors}
    steps = len(n.layers)
    first = {t: -1 for t in n.inputs}
    last = {t: steps for t in n.outputs} | {t: -1 for t in n.inputs if t not in n.outputs}
    for i, layer in enumerate(n.layers):
        for t in layer.outputs:
            first.setdefault(t, i)
        for t in (*layer.inputs, *layer.outputs):
            last[t] = max(last.get(t, i), i)
    for t in n.outputs:
        first.setdefault(t, steps)
    expected = max(sum(nbytes[t] for t in first if first[t] <= s <= last[t]) for s in range(-1, steps + 1))
    assert peak_live_bytes(n, nbytes) == expected


def test_peak_live_bytes_of_a_long_chain_is_two_tensors():
    """Each layer of a chain reads one tensor and writes the next: two are live at any step,
    whatever the depth (the sum over tensors grows with it)."""
    each = 8 * 16 * 16 * 4
    for depth in (2, 40):
        n = chain(depth=depth, shape=(1, 8, 16, 16))
        assert peak_live_bytes(n, {t: each for t in n.tensors}) == 2 * each
