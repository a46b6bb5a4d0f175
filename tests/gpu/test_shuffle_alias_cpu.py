"""Shuffles that move no byte lower to slot aliases (no launch), and the arena keeps an aliased
slot's bytes live while the alias is read. Without CUDA: the lowering and the lifetime plan.
"""

from __future__ import annotations

import numpy as np
import pytest
from block_nets import convnext_block

from backends.gpu.arena import buffer_uses, plan_offsets
from backends.gpu.lower import lower
from engine.ir.layers import ElementWiseOp, ElementWiseParams, ShuffleParams
from engine.ir.network import Network


def _lower(net: Network):
    return lower(net, list(net.layers), list(net.outputs))


def test_convnext_permutes_are_aliases_and_their_sources_stay_live():
    net = convnext_block(96, np.random.default_rng(0))
    low = _lower(net)
    labels = [op.label for op in low.ops]
    assert "to_nhwc" not in labels and "to_nchw" not in labels
    conv_out = next(op for op in low.ops if op.label == "conv").writes[0]
    ln = next(op for op in low.ops if op.label == "ln")
    add = next(op for op in low.ops if op.label == "add")
    t, b = net.layer("to_nhwc").outputs[0], net.layer("to_nchw").outputs[0]
    assert low.slots[t].alias == conv_out and low.slots[t].layout == "linear"
    assert low.slots[b].alias == ln.writes[0] and low.slots[b].layout == "nhwc"
    assert ln.reads[0] == t and b in add.reads
    # the LayerNorm reads the alias: contiguous rows of 96 halves, loaded as uint4 vectors
    body = low.source.split(f"{ln.kernel}(", 1)[1].split("\n}\n", 1)[0]
    assert "reinterpret_cast<const uint4*>" in body
    uses = {u.name: u for u in buffer_uses(low)}
    assert t not in uses and b not in uses  # no buffers of their own
    step = {op.label: i for i, op in enumerate(low.ops)}
    assert uses[conv_out].last >= step["add"] and uses[ln.writes[0]].last >= step["add"]
    offsets, _ = plan_offsets(list(uses.values()))
    for name, u in uses.items():  # nothing written while the conv output is read through its alias
        if name != conv_out and u.first <= uses[conv_out].last and uses[conv_out].first <= u.last:
            a0, a1 = offsets[conv_out], offsets[conv_out] + uses[conv_out].nbytes
            assert offsets[name] + u.nbytes <= a0 or offsets[name] >= a1, name


def test_channels_not_a_multiple_of_8_are_read_through_views():
    """No alias: the padded NHWC slot is not the (N, H, W, C) tensor. Both permutes are strided
    views instead (``lowering.views``): the LayerNorm reads the convolution's padded slot through
    the first, the residual add reads the LayerNorm output through the second, and neither copy
    has a reader left."""
    net = convnext_block(20, np.random.default_rng(0))
    low = _lower(net)
    labels = [op.label for op in low.ops]
    assert "to_nhwc" not in labels and "to_nchw" not in labels
    assert all(s.alias is None for s in low.slots.values())
    ln = next(op for op in low.ops if op.label == "ln")
    assert ln.reads[0] == next(op for op in low.ops if op.label == "conv").writes[0]
    assert ln.writes[0] in next(op for op in low.ops if op.label == "add").reads


@pytest.mark.parametrize("params,shape,alias", [
    (ShuffleParams(reshape=(4, 30)), (2, 3, 4, 5), True),  # a reshape of a linear tensor
    (ShuffleParams(first_perm=(1, 0, 2)), (1, 6, 5), True),  # only a size-1 dim moves
    (ShuffleParams(first_perm=(1, 0, 2)), (2, 6, 5), False),  # a real transpose
    (ShuffleParams(first_perm=(0, 2, 1), reshape=(2, 5, 6), second_perm=(0, 2, 1)), (2, 6, 5), False),
    (ShuffleParams(second_perm=(0, 2, 1)), (2, 6, 5), False),  # a transpose written as the second one
    (ShuffleParams(first_perm=(0, 1, 2), reshape=(2, 30), second_perm=(0, 1)), (2, 6, 5), True),
])
def test_which_shuffles_of_an_intermediate_linear_tensor_alias(params, shape, alias):
    net = Network("t")
    net.add_input("x", shape)
    e = net.add_layer(ElementWiseParams(ElementWiseOp.PROD), ["x", "x"], name="sq").outputs[0]
    s = net.add_layer(params, [e], name="shuffle").outputs[0]
    net.mark_output(net.add_layer(ElementWiseParams(ElementWiseOp.SUM), [s, s], name="twice").outputs[0])
    low = _lower(net)
    twice = next(op for op in low.ops if op.label == "twice")
    assert "shuffle" not in [op.label for op in low.ops]
    if alias:
        assert low.slots[s].alias == e and twice.reads == [s, s]
    else:  # a real transpose: the add reads the product through a strided view, no copy between
        assert s not in low.slots and twice.reads == [e, e]


def test_a_staged_input_or_an_nhwc_reshape_is_copied():
    net = Network("t")
    net.add_input("x", (2, 3, 4, 5))
    s = net.add_layer(ShuffleParams(reshape=(6, 20)), ["x"], name="flat").outputs[0]
    net.mark_output(s)
    low = _lower(net)
    assert [op.label for op in low.ops] == ["flat"]  # a segment never ends up without a launch
    net = convnext_block(96, np.random.default_rng(0))
    y = net.layer("conv").outputs[0]
    net.mark_output(net.add_layer(ShuffleParams(reshape=(2, 96 * 63)), [y], name="flat").outputs[0])
    low = _lower(net)
    assert "flat" in [op.label for op in low.ops]  # NHWC bytes are not the row-major (N, C*H*W) tensor


def test_an_alias_that_leaves_the_segment_keeps_its_bytes_to_the_end():
    net = convnext_block(96, np.random.default_rng(0))
    net.mark_output(net.layer("to_nhwc").outputs[0])
    low = _lower(net)
    t = net.layer("to_nhwc").outputs[0]
    root = low.slots[low.outputs[t]].alias
    assert root is not None
    assert {u.name: u for u in buffer_uses(low)}[root].last == len(low.ops)


def _offsets(shape, strides) -> np.ndarray:
    """The storage offset of every logical element of a slot (an array of the logical shape)."""
    out = np.zeros(shape, np.int64)
    for d, (n, st) in enumerate(zip(shape, strides)):
        out += (np.arange(n) * st).reshape([n if i == d else 1 for i in range(len(shape))])
    return out


def test_an_alias_is_always_the_same_bytes():
    """Random shuffles of random linear / NHWC slots: wherever ``alias_layout`` answers, every output
    element sits at the offset its source element has in the input slot (and the slot sizes match)."""
    from types import SimpleNamespace

    from backends.gpu.lowering.movement import alias_layout
    from backends.gpu.lowering.slots import Slot

    rng = np.random.default_rng(7)
    found = {"linear": 0, "nhwc": 0}
    for _ in range(400):
        rank = int(rng.integers(2, 5))
        shape = tuple(int(d) for d in rng.choice([1, 2, 3, 8, 16], rank))
        layout = "nhwc" if rank == 4 and rng.random() < 0.5 else "linear"
        perm = tuple(int(i) for i in rng.permutation(rank)) if rng.random() < 0.8 else None
        if rank == 4 and rng.random() < 0.4:  # the NHWC <-> (N, H, W, C) pair, and a near miss
            perm = [(0, 2, 3, 1), (0, 3, 1, 2), (0, 3, 2, 1)][int(rng.integers(3))]
        tshape = tuple(shape[i] for i in perm) if perm else shape
        reshape = tshape if rng.random() < 0.3 else (tuple(reversed(tshape)) if rng.random() < 0.3 else None)
        params = ShuffleParams(first_perm=perm, reshape=reshape)
        net = Network("t")
        net.add_input("x", shape)
        layer = net.add_layer(params, ["x"])
        out = layer.outputs[0]
        lw = SimpleNamespace(net=net, inputs=[], dtypes={out: "float16"})
        s = Slot("s", shape, "float16", layout)
        got = alias_layout(lw, layer, s)
        if got is None:
            continue
        found[got] += 1
        src = _offsets(shape, s.strides)
        moved = src.transpose(perm) if perm else src
        moved = moved.reshape(net.tensors[out].shape)
        o = Slot("o", net.tensors[out].shape, "float16", got)
        assert o.nbytes == s.nbytes
        np.testing.assert_array_equal(moved, _offsets(o.shape, o.strides))
    assert found["linear"] > 20 and found["nhwc"] > 5, found
