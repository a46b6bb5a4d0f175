"""Chains of data movement as strided views (``backends.gpu.lowering.views``), without CUDA.

``reshape_strides`` against numpy's no-copy reshape on random strided arrays; an exported
attention block's QKV split (transpose, three gathers at one index, reshapes and transposes, a
scalar scale) lowered with and without views and run through the CUDA emulator on fresh random
data, against numpy and against each other, with the launches the views remove counted.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emu import compiler
from emu_lowered import run_lowered

from backends.gpu.kernels import gen
from backends.gpu.lower import lower
from backends.gpu.lowering import movement
from backends.gpu.lowering.views import View, reshape_strides, root_digits
from engine.ir.dtypes import Precision
from engine.ir.layers import GatherParams, ShuffleParams
from engine.ir.network import Network


def _random_reshape(rng, total: int) -> tuple[int, ...]:
    dims, rest = [], total
    while rest > 1:
        d = int(rng.choice([d for d in range(2, rest + 1) if rest % d == 0]))
        dims.append(d)
        rest //= d
        if rng.random() < 0.2:
            dims.insert(int(rng.integers(len(dims) + 1)), 1)
    return tuple(dims) or (1,)


def test_reshape_strides_agrees_with_numpy():
    rng = np.random.default_rng()
    viewed = copied = 0
    for _ in range(2000):
        shape = tuple(int(d) for d in rng.integers(1, 5, size=int(rng.integers(1, 5))))
        base = np.arange(np.prod(shape) * 3).reshape(*shape, 3)[..., 1]  # strided to begin with
        a = base.transpose(rng.permutation(len(shape)))
        new = _random_reshape(rng, a.size)
        elem = [s // a.itemsize for s in a.strides]
        got = reshape_strides(a.shape, tuple(elem), new)
        try:
            b = a.view()
            b.shape = new  # numpy refuses exactly when the reshape would need a copy
        except AttributeError:
            assert got is None, (a.shape, elem, new)
            copied += 1
            continue
        assert got is not None, (a.shape, elem, new)
        strided = np.lib.stride_tricks.as_strided(a, new, [g * a.itemsize for g in got])
        np.testing.assert_array_equal(strided, a.reshape(new))
        viewed += 1
    assert viewed > 500 and copied > 200


def test_root_digits_walk_the_same_elements_as_the_view():
    """Where ``root_digits`` maps a view of a row-major tensor to the tensor's coordinates, those
    coordinates index the element the view's offset does; where it refuses, some view dim leaves
    its tensor dim (checked on random permutes, reshapes and slices)."""
    rng = np.random.default_rng()
    mapped = refused = 0
    for _ in range(1500):
        shape = tuple(int(d) for d in rng.integers(1, 5, size=int(rng.integers(1, 5))))
        a = np.arange(np.prod(shape)).reshape(shape)
        v = View("t", shape, gen.row_major(shape))
        perm = tuple(int(p) for p in rng.permutation(len(shape)))
        v = v.permute(perm)
        a = a.transpose(perm)
        if rng.random() < 0.5:
            start = [int(rng.integers(n)) for n in v.shape]
            size = [int(rng.integers(1, n - s0 + 1)) for n, s0 in zip(v.shape, start)]
            v = v.slice(start, [1] * len(size), size)
            a = a[tuple(slice(s0, s0 + n) for s0, n in zip(start, size))]
        new = _random_reshape(rng, a.size)
        r = v.reshape(new)
        if r is None or not r.affine:
            continue
        b = a.reshape(new)
        d = root_digits(r, shape)
        if d is None:
            refused += 1
            continue
        mapped += 1
        for idx in np.ndindex(*new):
            coords = list(d.base)
            for (dim, k), i in zip(d.dims, idx):
                if dim >= 0:
                    coords[dim] += k * i
            assert all(0 <= c < n for c, n in zip(coords, shape))
            assert np.ravel_multi_index(coords, shape) == b[idx], (shape, perm, new, idx)
    assert mapped > 300 and refused > 50, (mapped, refused)


@pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")
def test_group_kernels_read_through_views(tmp_path):
    """Swin V2's cosine attention splits Q and K off the projection (a transpose and a gather at
    one index) and takes their L2 norms: the reduce, a softmax and a LayerNorm read the views, so
    the gathers' copies drop, and the results match numpy."""
    from engine.ir.layers import NormalizationParams, ReduceOp, ReduceParams, SoftMaxParams

    rng = np.random.default_rng()
    b, t, d = 3, 5, 24
    net = Network("cosine")
    x = net.add_activation(net.add_input("x", (b, t, 3, d)), "relu", name="in")
    split = net.add_layer(ShuffleParams(first_perm=(2, 0, 1, 3)), [x], name="split").outputs[0]
    q, k = (net.add_layer(GatherParams(axis=0), [split], {"indices": np.array(i, np.int64)}, name=f"g{i}").outputs[0]
            for i in (0, 1))
    norm = net.add_layer(ReduceParams(ReduceOp.L2, (2,)), [q], name="l2").outputs[0]
    soft = net.add_layer(SoftMaxParams(axis=1), [k], name="soft").outputs[0]
    ln = net.add_layer(NormalizationParams(axes=(2,)), [q], name="ln").outputs[0]
    for y in (norm, soft, ln):
        net.mark_output(y)
    for la in net.layers:
        la.precision = Precision.FP16
    low = lower(net, net.layers, list(net.outputs))
    labels = [op.label for op in low.ops]
    assert "g0" not in labels and "g1" not in labels and "split" not in labels, labels
    feeds = {"x": rng.standard_normal((b, t, 3, d)).astype(np.float16).astype(np.float32)}
    got = run_lowered(low, feeds, tmp_path / "cosine")
    xr = np.maximum(feeds["x"].astype(np.float64), 0)
    qr, kr = xr[:, :, 0], xr[:, :, 1]
    e = np.exp(kr - kr.max(axis=1, keepdims=True))
    mu, var = qr.mean(axis=2, keepdims=True), qr.var(axis=2, keepdims=True)
    want = {norm: np.sqrt((qr ** 2).sum(axis=2, keepdims=True)), soft: e / e.sum(axis=1, keepdims=True),
            ln: (qr - mu) / np.sqrt(var + 1e-5)}
    for name, ref in want.items():
        np.testing.assert_allclose(got[name], ref, rtol=1e-2, atol=1e-2 * np.abs(ref).max(), err_msg=name)


@pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")
def test_generated_matmul_reads_through_views(tmp_path):
    """The attention product of Swin V2's cosine attention: K transposed and V gathered off the
    projection are read by the generated MatMul kernel through their views (no copies), in FP32
    (which keeps it off cuBLAS), against numpy."""
    from engine.ir.layers import MatrixMultiplyParams

    rng = np.random.default_rng()
    b, t, d = 2, 5, 6
    net = Network("av")
    x = net.add_activation(net.add_input("x", (b, t, 3, d)), "relu", name="in")
    split = net.add_layer(ShuffleParams(first_perm=(2, 0, 1, 3)), [x], name="split").outputs[0]
    q, k, v = (net.add_layer(GatherParams(axis=0), [split], {"indices": np.array(i, np.int64)}, name=f"g{i}").outputs[0]
               for i in range(3))
    kt = net.add_layer(ShuffleParams(first_perm=(0, 2, 1)), [k], name="kt").outputs[0]
    s = net.add_layer(MatrixMultiplyParams(), [q, kt], name="qk").outputs[0]
    y = net.add_layer(MatrixMultiplyParams(), [s, v], name="sv").outputs[0]
    net.mark_output(y)
    for la in net.layers:
        la.precision = Precision.FP32
    low = lower(net, net.layers, list(net.outputs))
    labels = [op.label for op in low.ops]
    assert not {"g0", "g1", "g2", "kt", "split"} & set(labels), labels
    feeds = {"x": rng.standard_normal((b, t, 3, d)).astype(np.float32)}
    got = run_lowered(low, feeds, tmp_path / "av")[y]
    xr = np.maximum(feeds["x"].astype(np.float64), 0)
    qr, kr, vr = xr[:, :, 0], xr[:, :, 1], xr[:, :, 2]
    want = (qr @ kr.transpose(0, 2, 1)) @ vr
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_view_take_and_permute():
    x = np.arange(3 * 4 * 5).reshape(3, 4, 5)
    v = View("x", x.shape, (20, 5, 1)).permute((2, 0, 1)).take(1, 2)
    want = x.transpose(2, 0, 1)[:, 2]
    got = np.lib.stride_tricks.as_strided(x.reshape(-1)[v.base:], v.shape, [s * x.itemsize for s in v.strides])
    np.testing.assert_array_equal(got, want)


T, HEADS, HD = 7, 2, 4
D = HEADS * HD


def qkv_split_net(N: int) -> Network:
    """torchvision's ViT attention input path (nn.MultiheadAttention exported), at a small size.
    With a batch N > 1 the split into heads merges the batch with the heads, which no strided
    view of the projection can express: those copies stay, reading the projection."""
    net = Network("qkv")
    x = net.add_input("x", (T, N, 3 * D))
    qkv = net.add_activation(x, "relu", name="proj").name  # stands in for the QKV projection
    split = net.add_layer(ShuffleParams(reshape=(T, N, 3, D), second_perm=(2, 0, 1, 3)), [qkv], name="split")
    unsq = net.add_layer(ShuffleParams(reshape=(3, T, N, 1, D)), split.outputs, name="unsqueeze")
    sq = net.add_layer(ShuffleParams(reshape=(3, T, N, D)), unsq.outputs, name="squeeze")
    heads = []
    for i, idx in enumerate((0, 1, -1)):
        g = net.add_layer(GatherParams(axis=0), sq.outputs, {"indices": np.array(idx, np.int64)}, name=f"g{i}")
        perm = (1, 2, 0) if i == 1 else (1, 0, 2)  # K comes out transposed
        h = net.add_layer(ShuffleParams(reshape=(T, N * HEADS, HD), second_perm=perm), g.outputs, name=f"h{i}")
        heads.append(h.outputs[0])
    scale = net.add_constant(np.array([0.5], np.float32), name="scale")
    q = net.add_elementwise(heads[0], scale, "prod", name="q_scaled")
    k = net.add_elementwise(heads[1], scale, "prod", name="k_scaled")
    # a reshape that is no view of its transposed input: the generic copy
    vt = net.add_layer(ShuffleParams(first_perm=(1, 0, 2), reshape=(N * HEADS * HD, T)), [heads[2]], name="v_flat")
    for t in (q.name, k.name, heads[2], vt.outputs[0]):
        net.mark_output(t)
    for la in net.layers:
        la.precision = Precision.FP16
    return net


def reference(x: np.ndarray) -> dict[str, np.ndarray]:
    N = x.shape[1]
    qkv = np.maximum(x, 0).reshape(T, N, 3, D).transpose(2, 0, 1, 3)
    q, k, v = (qkv[i].reshape(T, N * HEADS, HD) for i in range(3))
    # the halved Q and K as fp16 stores them: exact, except that a result below fp16's smallest normal
    # (2**-14) loses its last bit to round-half-even
    def half(a: np.ndarray) -> np.ndarray:
        return (a * 0.5).astype(np.float16).astype(np.float64)

    return {"q_scaled": half(q.transpose(1, 0, 2)), "k_scaled": half(k.transpose(1, 2, 0)),
            "h2": v.transpose(1, 0, 2), "v_flat": v.transpose(1, 0, 2).transpose(1, 0, 2).reshape(N * HEADS * HD, T)}


@pytest.mark.parametrize("N", [1, 2])
def test_qkv_split_copies_straight_from_the_projection(monkeypatch, N):
    net = qkv_split_net(N)
    viewed = lower(net, net.layers, list(net.outputs))
    with monkeypatch.context() as m:
        m.setattr(movement, "shuffle_view", lambda lw, layer: None)
        m.setattr(movement, "input_view", lambda lw, t: View.of(lw.slots[t]))
        plain = lower(net, net.layers, list(net.outputs))
    labels = [op.label for op in viewed.ops]
    proj = next(op for op in viewed.ops if op.label == "proj").writes[0]
    # the split and the gathers go; each remaining copy reads the projection
    assert not {"split", "g0", "g1", "g2"} & set(labels), labels
    for op in viewed.ops:
        if op.label in ("h0", "h1", "h2"):
            assert op.reads == [proj], (op.label, op.reads)
    if N == 1:  # the head split is a view too: Q and K are scaled straight from the projection
        assert not {"h0", "h1"} & set(labels), labels
        assert proj in next(op for op in viewed.ops if op.label == "q_scaled").reads
    assert len(viewed.ops) == len(plain.ops) - (6 if N == 1 else 4)


@pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")
@pytest.mark.parametrize("N", [1, 2])
def test_qkv_split_through_views_matches_numpy_and_the_copies(tmp_path, monkeypatch, N):
    net = qkv_split_net(N)
    x = np.random.default_rng().standard_normal((T, N, 3 * D)).astype(np.float16).astype(np.float32)
    # an odd multiple of fp16's smallest subnormal in Q and in K: halving it rounds
    x[0, 0, 0] = x[1, 0, D] = 1003 * 2.0**-24
    want = reference(x.astype(np.float64))
    got = run_lowered(lower(net, net.layers, list(net.outputs)), {"x": x}, tmp_path / "views")
    with monkeypatch.context() as m:
        m.setattr(movement, "shuffle_view", lambda lw, layer: None)
        m.setattr(movement, "input_view", lambda lw, t: View.of(lw.slots[t]))
        plain = run_lowered(lower(net, net.layers, list(net.outputs)), {"x": x}, tmp_path / "plain")
    names = {"q_scaled": "q_scaled", "k_scaled": "k_scaled", "h2": net.layer("h2").outputs[0],
             "v_flat": net.layer("v_flat").outputs[0]}
    for key, tensor in names.items():
        assert got[tensor].shape == want[key].shape, key
        # movement is exact; the scale by 0.5 is the reference's fp16 rounding of it
        np.testing.assert_array_equal(got[tensor].astype(np.float64), want[key], err_msg=key)
        np.testing.assert_array_equal(got[tensor], plain[tensor], err_msg=key)


def test_drop_dead_ops_keeps_what_outputs_and_non_generated_launches_need():
    from backends.gpu.lowering.slots import Lowered, Op, Slot
    from backends.gpu.lowering.views import drop_dead_ops

    slots = {n: Slot(n, (4,), "float16") for n in ("x", "a", "b", "c", "d", "w")}
    slots["c_alias"] = Slot("c_alias", (2, 2), "float16", alias="c")
    ops = [Op("a", "gen", ["x"], ["a"], ["a", "x"]),  # read by the dead copy only: goes with it
           Op("b", "gen", ["a"], ["b"], ["b", "a"]),  # nobody reads b
           Op("c", "gen", ["x"], ["c"], ["c", "x"]),  # read through its alias by the output's producer
           Op("w", "conv", ["x"], ["w"]),  # not a generated kernel: kept although unread
           Op("d", "gen", ["c_alias"], ["d"], ["d", "c_alias"])]
    low = drop_dead_ops(Lowered(slots, ops, ["x"], {"y": "d"}, "", {}))
    assert [op.label for op in low.ops] == ["c", "w", "d"]
    assert set(low.slots) == {"x", "c", "c_alias", "w", "d"}


def test_gather_of_an_empty_tensor_is_no_view():
    """A one-index gather of a tensor with a zero-length axis lowers as before views: its own
    launch, no view (a view copy of no elements was refused with a ValueError)."""
    from backends.gpu.lowering.lowerer import Lowerer

    net = Network("empty")
    x = net.add_input("x", (3, 0, 4))
    r = net.add_activation(x, "relu", name="r")
    g = net.add_layer(GatherParams(axis=0), [r], {"indices": np.array(1, np.int64)}, name="g")
    net.mark_output(g.outputs[0])
    for la in net.layers:
        la.precision = Precision.FP16
    lw = Lowerer(net, list(net.layers), list(net.outputs))
    low = lw.lower()
    assert [op.label for op in low.ops] == ["r", "g"]
    assert g.outputs[0] not in lw.views


def _offsets(v: View) -> np.ndarray:
    """Every element's root offset of a view, composite dims included (float64-free integer math)."""
    out = np.full(v.shape, v.base, np.int64)
    for axis, dim in enumerate(v._parts()):
        idx = np.arange(v.shape[axis])
        inner, off = 1, np.zeros(v.shape[axis], np.int64)
        for size, stride in reversed(dim):
            off += ((idx // inner) % size) * stride
            inner *= size
        out += off.reshape([-1 if a == axis else 1 for a in range(len(v.shape))])
    return out


def test_chains_through_composite_views_agree_with_numpy():
    """Random chains of transposes, reshapes and one-index takes: the view's offsets equal numpy's
    result on an array of offsets at every step, whether the view is affine or composite, and a
    chain that merges dims no stride can hold comes out affine again once they are split."""
    rng = np.random.default_rng()
    composite = back_to_affine = 0
    for _ in range(1500):
        shape = tuple(int(d) for d in rng.integers(1, 5, size=int(rng.integers(2, 5))))
        a = np.arange(int(np.prod(shape))).reshape(shape)
        v = View("r", shape, gen.row_major(shape))
        was_composite = False
        for _ in range(5):
            step = rng.integers(3)
            if step == 0:
                perm = tuple(int(p) for p in rng.permutation(a.ndim))
                a, v = a.transpose(perm), v.permute(perm)
            elif step == 1:
                new = _random_reshape(rng, a.size)
                w = v.reshape(new)
                if w is None:
                    continue
                a, v = a.reshape(new), w
            elif a.ndim > 1:
                axis = int(rng.integers(a.ndim))
                index = int(rng.integers(a.shape[axis]))
                a, v = np.take(a, index, axis=axis), v.take(axis, index)
            assert v.shape == a.shape
            np.testing.assert_array_equal(_offsets(v), a)
            if v.affine:
                np.testing.assert_array_equal(np.lib.stride_tricks.as_strided(
                    np.arange(10**5)[v.base:], v.shape, [s * 8 for s in v.strides]), a)
                back_to_affine += was_composite
            else:
                composite += 1
                was_composite = True
    assert composite > 200 and back_to_affine > 5


def test_batch_merged_with_heads_splits_back_into_a_view():
    """torch's MultiheadAttention at batch N > 1: (S, N, E) -> (S, N*H, D) merges the batch with
    the heads (no stride holds it), -> (N*H, S, D) -> (N, H, S, D) splits them again: an affine
    view of the projection."""
    S, N, H, D = 5, 3, 2, 4
    proj = np.arange(S * N * 3 * H * D).reshape(S, N, 3 * H * D)
    v = View("p", proj.shape, gen.row_major(proj.shape)).reshape((S, N, 3, H * D)).take(2, 1)
    merged = v.reshape((S, N * H, D))
    assert merged is not None and not merged.affine
    heads = merged.permute((1, 0, 2)).reshape((N, H, S, D))
    assert heads is not None and heads.affine
    want = proj.reshape(S, N, 3, H * D)[:, :, 1].reshape(S, N * H, D).transpose(1, 0, 2).reshape(N, H, S, D)
    np.testing.assert_array_equal(_offsets(heads), want)
