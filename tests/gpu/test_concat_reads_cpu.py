"""Concatenations read in place by their element-wise reader (``lowering/concat_reads.py``), without CUDA.

DenseNet's pattern (a concatenation of earlier feature maps, then batch norm + ReLU as one
pointwise chain) and a few variants are lowered as the GPU lowers them: the concatenation must
lose its launch exactly where its only reader is an element-wise layer of its shape, and the
reader's kernel must give, in the CUDA emulator on fresh random data, the bits of the copy-then-map
lowering and float64 numpy at fp16 tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emu import compiler
from emu_lowered import run_lowered, run_without

from backends.gpu.lower import lower
from engine.ir.dtypes import Precision
from engine.ir.layers import ConcatenationParams, PointwiseParams, PointwiseStep
from engine.ir.network import Network

needs_emulator = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")
N, H, W = 2, 4, 3


def dense_net(rng, widths: tuple[int, ...], also_read: bool = False, axis: int = 1) -> tuple[Network, dict]:
    """Inputs of ``widths`` channels through a ReLU each (NHWC producers when axis is 1), a
    concatenation, and BN + ReLU on it as one pointwise chain; ``also_read``: the concatenation is
    a network output too, so it must keep its own tensor."""
    net = Network("dense")
    parts, feeds = [], {}
    for i, c in enumerate(widths):
        shape = (N, c, H, W) if axis == 1 else (N, H, W, c)
        feeds[f"x{i}"] = rng.standard_normal(shape).astype(np.float16).astype(np.float32)
        parts.append(net.add_activation(net.add_input(f"x{i}", shape), "relu", name=f"r{i}"))
    cat = net.add_layer(ConcatenationParams(axis=axis), parts, name="cat").outputs[0]
    total = sum(widths)
    wshape = (total, 1, 1) if axis == 1 else (total,)
    w = {"w0": rng.uniform(0.5, 2, wshape).astype(np.float16).astype(np.float32),
         "w1": rng.standard_normal(wshape).astype(np.float16).astype(np.float32)}
    steps = (PointwiseStep("elementwise", "prod", operand_weight="w0"),
             PointwiseStep("elementwise", "sum", operand_weight="w1"), PointwiseStep("activation", "relu"))
    y = net.add_layer(PointwiseParams(steps), [cat], dict(w), name="bn_relu").outputs[0]
    net.mark_output(y)
    if also_read:
        net.mark_output(cat)
    for la in net.layers:
        la.precision = Precision.FP16
    return net, {"feeds": feeds, **w}


def numpy_result(net: Network, d: dict, axis: int) -> np.ndarray:
    xs = [np.maximum(d["feeds"][f"x{i}"].astype(np.float64), 0) for i in range(len(d["feeds"]))]
    return np.maximum(np.concatenate(xs, axis=axis) * d["w0"] + d["w1"], 0)


@pytest.mark.parametrize("widths", [(16, 8), (12, 20, 4), (3, 5)])
def test_concatenation_read_by_its_chain_has_no_launch(widths):
    net, _ = dense_net(np.random.default_rng(), widths)
    low = lower(net, net.layers, list(net.outputs))
    labels = [op.label for op in low.ops]
    assert "cat" not in labels and "bn_relu" in labels
    chain = next(op for op in low.ops if op.label == "bn_relu")
    producers = {net.layer(f"r{i}").outputs[0] for i in range(len(widths))}
    assert producers <= set(chain.reads), (chain.reads, producers)


def test_concatenation_that_is_also_an_output_keeps_its_launch():
    net, _ = dense_net(np.random.default_rng(), (16, 8), also_read=True)
    assert "cat" in [op.label for op in lower(net, net.layers, list(net.outputs)).ops]


@needs_emulator
@pytest.mark.parametrize("widths,axis", [((12, 20, 4), 1), ((5, 7, 4), 3)])
def test_in_place_read_matches_the_copy_and_numpy(tmp_path, monkeypatch, widths, axis):
    rng = np.random.default_rng()
    net, d = dense_net(rng, widths, axis=axis)
    fused = lower(net, net.layers, list(net.outputs))
    assert "cat" not in [op.label for op in fused.ops]
    got = run_lowered(fused, d["feeds"], tmp_path / "fused")
    plain = run_without(net, d["feeds"], tmp_path / "copied", monkeypatch, "find_concat_reads", "cat")
    y = net.outputs[0]
    np.testing.assert_array_equal(got[y], plain[y])
    want = numpy_result(net, d, axis)
    np.testing.assert_allclose(got[y], want, rtol=1e-2, atol=1e-2 * np.abs(want).max())


def roll_and_merge_net(rng) -> tuple[Network, dict[str, np.ndarray]]:
    """Swin's shifted window (torch.roll exported as two slices and a concatenation per axis),
    its crop back to the same size (a slice that keeps everything) and its patch merging (four
    stride-2 slices concatenated on channels), on an NHWC-ordered linear tensor."""
    from engine.ir.layers import SliceParams

    n, h, w, c = 2, 6, 4, 8
    net = Network("swin")
    x = net.add_activation(net.add_input("x", (n, h, w, c)), "relu", name="in")
    a = net.add_layer(SliceParams(start=(0, 2, 0, 0), size=(n, h - 2, w, c), step=(1, 1, 1, 1)), [x], name="s1")
    b = net.add_layer(SliceParams(start=(0, 0, 0, 0), size=(n, 2, w, c), step=(1, 1, 1, 1)), [x], name="s2")
    rolled = net.add_layer(ConcatenationParams(axis=1), [a.outputs[0], b.outputs[0]], name="roll").outputs[0]
    crop = net.add_layer(SliceParams(start=(0, 0, 0, 0), size=(n, h, w, c), step=(1, 1, 1, 1)), [rolled],
                         name="crop").outputs[0]
    added = net.add_elementwise(crop, x, "sum", name="add")
    quads = [net.add_layer(SliceParams(start=(0, i, j, 0), size=(n, h // 2, w // 2, c), step=(1, 2, 2, 1)),
                           [added], name=f"q{i}{j}").outputs[0] for i in (0, 1) for j in (0, 1)]
    merged = net.add_layer(ConcatenationParams(axis=3), quads, name="merge").outputs[0]
    net.mark_output(merged)
    for la in net.layers:
        la.precision = Precision.FP16
    return net, {"x": rng.standard_normal((n, h, w, c)).astype(np.float16).astype(np.float32)}


def test_slices_read_as_views_leave_no_copies():
    net, _ = roll_and_merge_net(np.random.default_rng())
    labels = [op.label for op in lower(net, net.layers, list(net.outputs)).ops]
    assert not {"s1", "s2", "crop", "q00", "q01", "q10", "q11"} & set(labels), labels
    assert labels == ["in", "roll", "add", "merge"], labels


@needs_emulator
def test_roll_crop_and_patch_merge_through_views_match_numpy(tmp_path):
    rng = np.random.default_rng()
    net, feeds = roll_and_merge_net(rng)
    got = run_lowered(lower(net, net.layers, list(net.outputs)), feeds, tmp_path / "swin")
    x = np.maximum(feeds["x"].astype(np.float64), 0)
    added = np.roll(x, -2, axis=1) + x
    want = np.concatenate([added[:, i::2, j::2] for i in (0, 1) for j in (0, 1)], axis=3)
    np.testing.assert_array_equal(got[net.outputs[0]], want.astype(np.float16).astype(np.float32))


@needs_emulator
def test_channel_slice_read_by_a_convolution_converts_from_its_root(tmp_path):
    """ShuffleNet's split: a channel slice read by a convolution is converted to NHWC straight
    from the tensor it slices (no copy of its own), with the right channels."""
    from engine.ir.layers import SliceParams

    rng = np.random.default_rng()
    n, c, h, w = 2, 16, 3, 5
    net = Network("split")
    x = net.add_activation(net.add_input("x", (n, c, h, w)), "relu", name="in")
    half = net.add_layer(SliceParams(start=(0, 8, 0, 0), size=(n, 8, h, w), step=(1, 1, 1, 1)), [x], name="half")
    k = (rng.standard_normal((8, 8, 1, 1)) / 3).astype(np.float16).astype(np.float32)
    y = net.add_convolution(half.outputs[0], k, None, name="conv")
    net.mark_output(y)
    for la in net.layers:
        la.precision = Precision.FP16
    low = lower(net, net.layers, list(net.outputs))
    assert "half" not in [op.label for op in low.ops]
    feeds = {"x": rng.standard_normal((n, c, h, w)).astype(np.float16).astype(np.float32)}
    got = run_lowered(low, feeds, tmp_path / "split")[y.name]
    want = np.einsum("nchw,kc->nkhw", np.maximum(feeds["x"].astype(np.float64), 0)[:, 8:], k[:, :, 0, 0])
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2 * np.abs(want).max())


@needs_emulator
def test_split_of_a_merged_convolution_is_read_through_views(tmp_path):
    """GoogLeNet's horizontally merged 1x1 convolution: its channel split has no copy of its own;
    the 3x3 convolution's NHWC conversion and an element-wise reader take their channels straight
    from the merged convolution's NHWC slot."""
    from engine.ir.layers import SplitParams

    rng = np.random.default_rng()
    n, c, h, w = 2, 8, 5, 4
    net = Network("merged")
    k1 = (rng.standard_normal((24, c, 1, 1)) / 3).astype(np.float16).astype(np.float32)
    merged = net.add_convolution(net.add_input("x", (n, c, h, w)), k1, None, name="merged")
    a, b = net.add_layer(SplitParams(axis=1, sizes=(16, 8)), [merged], name="split").outputs
    k3 = (rng.standard_normal((8, 16, 3, 3)) / 6).astype(np.float16).astype(np.float32)
    y = net.add_convolution(a, k3, None, padding=(1, 1), name="conv3")
    z = net.add_activation(b, "relu", name="relu")
    net.mark_output(y)
    net.mark_output(z)
    for la in net.layers:
        la.precision = Precision.FP16
    low = lower(net, net.layers, list(net.outputs))
    assert not [op.label for op in low.ops if op.label.startswith("split")], [op.label for op in low.ops]
    feeds = {"x": rng.standard_normal((n, c, h, w)).astype(np.float16).astype(np.float32)}
    got = run_lowered(low, feeds, tmp_path / "merged")
    m = np.einsum("nchw,kc->nkhw", feeds["x"].astype(np.float64), k1[:, :, 0, 0])
    mp = np.pad(m[:, :16], ((0, 0), (0, 0), (1, 1), (1, 1)))
    want_y = sum(np.einsum("nchw,kc->nkhw", mp[:, :, u:u + h, v:v + w], k3[:, :, u, v])
                 for u in range(3) for v in range(3))
    np.testing.assert_allclose(got[y.name], want_y, rtol=1e-2, atol=1e-2 * np.abs(want_y).max())
    want_z = np.maximum(m[:, 16:], 0)
    np.testing.assert_allclose(got[z.name], want_z, rtol=1e-2, atol=1e-2 * np.abs(want_z).max())



def shuffle_unit_net(rng, shuffle) -> tuple[Network, dict[str, np.ndarray]]:
    """ShuffleNetV2's unit with element-wise layers for its convolutions: a branch concatenated
    with the passthrough half, a shuffle layer (``shuffle``: its ShuffleParams) and a channel
    split whose halves are read by the branch of the next unit and by its concatenation."""
    from engine.ir.layers import ShuffleParams, SliceParams

    n, c, h, w = 2, 16, 3, 5
    net = Network("shuffle")
    x = net.add_activation(net.add_input("x", (n, c, h, w)), "relu", name="in")
    branch = net.add_activation(x, "sigmoid", name="branch")
    cat = net.add_layer(ConcatenationParams(axis=1), [x, branch], name="cat").outputs[0]
    mixed = net.add_layer(ShuffleParams(*shuffle), [cat], name="mix").outputs[0]
    flat = net.add_layer(ShuffleParams(reshape=(n, 2 * c, h, w)), [mixed], name="flat").outputs[0]
    a = net.add_layer(SliceParams((0, 0, 0, 0), (n, c, h, w), (1, 1, 1, 1)), [flat], name="a").outputs[0]
    b = net.add_layer(SliceParams((0, c, 0, 0), (n, c, h, w), (1, 1, 1, 1)), [flat], name="b").outputs[0]
    nxt = net.add_activation(b, "tanh", name="next_branch")
    net.mark_output(net.add_layer(ConcatenationParams(axis=1), [a, nxt], name="next").outputs[0])
    for la in net.layers:
        la.precision = Precision.FP16
    return net, {"x": rng.standard_normal((n, c, h, w)).astype(np.float16).astype(np.float32)}


CHANNEL_SHUFFLE = (None, (2, 2, 16, 3, 5), (0, 2, 1, 3, 4))  # (N, 2C, H, W) -> (N, 2, C, H, W) -> (N, C, 2, H, W)


@needs_emulator
@pytest.mark.parametrize("shuffle", [CHANNEL_SHUFFLE, ((0, 1, 3, 2), (2, 2, 16, 5, 3), (0, 2, 1, 4, 3))])
def test_channel_shuffle_reads_its_concatenation_in_place(tmp_path, monkeypatch, shuffle):
    """The shuffle copies straight from the concatenation's inputs (one launch instead of two),
    with the bits of the copying lowering; the (N, 2C, H, W) result against numpy."""
    rng = np.random.default_rng()
    net, feeds = shuffle_unit_net(rng, shuffle)
    fused = lower(net, net.layers, list(net.outputs))
    labels = [op.label for op in fused.ops]
    assert "cat" not in labels and "mix" in labels, labels
    got = run_lowered(fused, feeds, tmp_path / "fused")
    plain = run_without(net, feeds, tmp_path / "copied", monkeypatch, "find_concat_reads", "cat")
    y = net.outputs[0]
    np.testing.assert_array_equal(got[y], plain[y])
    xr = np.maximum(feeds["x"].astype(np.float64), 0)
    cat = np.concatenate([xr, 1 / (1 + np.exp(-xr))], axis=1)
    first, reshape, second = shuffle
    t = cat.transpose(first) if first else cat
    flat = t.reshape(reshape).transpose(second).reshape(cat.shape)
    want = np.concatenate([flat[:, :16], np.tanh(flat[:, 16:])], axis=1)
    np.testing.assert_allclose(got[y], want, rtol=1e-2, atol=1e-2 * np.abs(want).max())


def test_a_shuffle_that_merges_dims_keeps_the_concatenation():
    """A reshape that merges the concatenated axis with the next one walks across inputs within
    one output dim: no in-place read, the concatenation keeps its launch."""
    net, _ = shuffle_unit_net(np.random.default_rng(), ((0, 2, 1, 3), (2, 3, 160), (0, 1, 2)))
    labels = [op.label for op in lower(net, net.layers, list(net.outputs)).ops]
    assert "cat" in labels, labels


@pytest.mark.parametrize("int8", [False, True])
def test_no_in_place_read_beside_an_int8_result(int8):
    """An element-wise layer that also reads an INT8 layer's result may become an int8 -> int8
    bridge (``lower_int8_bridge``), which reads its other input's slot: that concatenation keeps it."""
    from backends.gpu.lowering.concat_reads import find_concat_reads
    from backends.gpu.lowering.lowerer import Lowerer

    rng = np.random.default_rng()
    net = Network("beside_int8")
    parts = [net.add_activation(net.add_input(f"x{i}", (N, c, H, W)), "relu", name=f"r{i}")
             for i, c in enumerate((16, 8))]
    cat = net.add_layer(ConcatenationParams(axis=1), parts, name="cat").outputs[0]
    conv = net.add_convolution("x0", rng.standard_normal((24, 16, 1, 1)).astype(np.float32), name="c")
    net.mark_output(net.add_elementwise(cat, conv, "prod", name="y"))
    for la in net.layers:
        la.precision = Precision.INT8 if int8 and la.name == "c" else Precision.FP16
    found = find_concat_reads(Lowerer(net, net.layers, list(net.outputs)), set())
    assert set(found) == (set() if int8 else {cat})
