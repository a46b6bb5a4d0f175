"""Data movement layers: Concatenation, Shuffle, Slice, Split, Padding, Gather, Constant, Cast, Identity."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from refhelp import assert_close, ort_single, randn, rng, run_single, seed_of

from backends.reference import execute
from engine.ir.dtypes import DataType, Precision
from engine.ir.layers import (
    CastParams,
    ConcatenationParams,
    GatherParams,
    IdentityParams,
    PaddingMode,
    PaddingParams,
    ShuffleParams,
    SliceParams,
    SplitParams,
)
from engine.ir.network import Network


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concatenation(axis, in_place):
    g = rng(seed_of("concat", axis))
    shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]]
    for i, s in enumerate(shapes):
        s[axis] += i
    xs = [randn(g, *s) for s in shapes]
    want = ort_single("Concat", xs, {"axis": axis})[0]
    got = run_single(ConcatenationParams(axis, in_place), xs)[0]
    assert np.array_equal(got, want)


@pytest.mark.parametrize("first,reshape,second", [
    ((0, 2, 1, 3), None, None),
    (None, (6, 20), None),
    ((3, 1, 0, 2), (5, 2, 12), (2, 0, 1)),
    (None, (2, 60), (1, 0)),
])
def test_shuffle(first, reshape, second):
    x = randn(rng(seed_of(first, reshape, second)), 2, 3, 4, 5)
    want = x
    if first is not None:
        want = ort_single("Transpose", [want], {"perm": list(first)})[0]
    if reshape is not None:
        want = ort_single("Reshape", [want, np.array(reshape, np.int64)], const_inputs=[1])[0]
    if second is not None:
        want = ort_single("Transpose", [want], {"perm": list(second)})[0]
    assert np.array_equal(run_single(ShuffleParams(first, reshape, second), [x])[0], want)


@pytest.mark.parametrize("start,size,step", [
    ((0, 1, 2), (2, 3, 2), (1, 1, 3)),
    ((1, 4, 7), (2, 3, 4), (-1, -1, -2)),
    ((0, 4, 0), (2, 5, 8), (1, -1, 1)),
    ((1, 2, 6), (1, 2, 3), (1, -2, -3)),
    ((0, 0, 0), (2, 0, 3), (1, 1, 1)),
])
def test_slice_with_negative_steps(start, size, step):
    x = randn(rng(seed_of(start, step)), 2, 5, 8)
    ends = [s + n * st for s, n, st in zip(start, size, step)]
    ends = [e if e >= 0 else -(x.shape[i] + 1) for i, e in enumerate(ends)]  # ONNX: clamp below -dim
    want = ort_single("Slice", [x, np.array(start, np.int64), np.array(ends, np.int64), np.arange(3, dtype=np.int64),
                                np.array(step, np.int64)], const_inputs=[1, 2, 3, 4])[0]
    got = run_single(SliceParams(start, size, step), [x])[0]
    assert got.shape == tuple(size)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("axis,sizes", [(0, (1, 3)), (1, (2, 2, 1)), (-1, (3, 0, 3))])
def test_split(axis, sizes):
    x = randn(rng(seed_of(axis, sizes)), 4, 5, 6)
    want = ort_single("Split", [x, np.array(sizes, np.int64)], {"axis": axis}, n_outputs=len(sizes),
                      const_inputs=[1])
    got = run_single(SplitParams(axis, sizes), [x])
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("pre,post", [
    ((0, 1, 2, 0), (0, 2, 1, 3)),
    ((1, 0, -1, 2), (0, 1, 2, -2)),
    ((0, 0, 3, 3), (0, 0, 3, 3)),
])
@pytest.mark.parametrize("mode", list(PaddingMode))
def test_padding(mode, pre, post):
    x = randn(rng(seed_of(mode, pre, post)), 2, 3, 5, 6)
    value = 0.75
    inputs = [x, np.array(pre + post, np.int64)]
    if mode is PaddingMode.CONSTANT:
        inputs.append(np.array(value, np.float32))
    want = ort_single("Pad", inputs, {"mode": mode.value}, const_inputs=[1, 2])[0]
    got = run_single(PaddingParams(pre, post, mode, value), [x])[0]
    assert np.array_equal(got, want)


def test_padding_int_constant():
    x = rng(3).integers(-5, 5, size=(3, 4)).astype(np.int32)
    want = ort_single("Pad", [x, np.array([1, 0, 0, 2], np.int64), np.array(7, np.int32)], const_inputs=[1, 2])[0]
    assert np.array_equal(run_single(PaddingParams((1, 0), (0, 2), value=7.0), [x])[0], want)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_gather_negative_indices(axis):
    g = rng(seed_of("gather", axis))
    x = randn(g, 4, 5, 6)
    n = x.shape[axis]
    idx = g.integers(-n, n, size=(2, 3)).astype(np.int64)
    want = ort_single("Gather", [x, idx], {"axis": axis}, const_inputs=[1])[0]
    assert np.array_equal(run_single(GatherParams(axis), [x], {"indices": idx})[0], want)


def test_constant_and_identity():
    g = rng(4)
    v = randn(g, 3, 4)
    net = Network()
    net.add_input("x", (3, 4))
    c = net.add_constant(v, name="c")
    y = net.add_layer(IdentityParams(), ["x"], name="id").outputs[0]
    net.mark_output(c.name)
    net.mark_output(y)
    x = randn(g, 3, 4)
    out = execute(net, {"x": x})
    assert np.array_equal(out["c"], v) and np.array_equal(out["id"], x)
    out[c.name][0, 0] += 1.0  # the result must not alias the layer's weights
    assert not np.array_equal(net.layer("c").weights["value"], out["c"])
    ints = np.arange(6, dtype=np.int64).reshape(2, 3) - 2
    assert np.array_equal(run_single(IdentityParams(), [ints])[0], ints)


def _cast_source(src: str, g) -> np.ndarray:
    if src == "float32":
        x = (randn(g, 40) * 50).astype(np.float32)
        x[:4] = [-2.5, 2.5, -0.7, 0.0]
        return x
    if src == "bool":
        return g.random(40) > 0.5
    info = np.iinfo(src)
    return g.integers(max(info.min, -300), min(info.max, 300), size=40, endpoint=True).astype(src)


@pytest.mark.parametrize("to", list(DataType))
@pytest.mark.parametrize("src", ["float32", "int32", "int64", "int8", "uint8", "bool"])
def test_cast(src, to):
    x = _cast_source(src, rng(seed_of("cast", src, to)))
    if src == "float32" and to in (DataType.INT8, DataType.UINT8):
        x = np.clip(x, -100, 100) if to is DataType.INT8 else np.abs(np.clip(x, -200, 200))  # in range: defined
    want = ort_single("Cast", [x], {"to": _onnx_type(to)})[0]
    got = run_single(CastParams(to), [x])[0]
    assert got.dtype == to.numpy
    assert_close(got, want, rtol=0, atol=0)


def _onnx_type(t: DataType) -> int:
    return helper.np_dtype_to_tensor_dtype(t.numpy)


def test_cast_float_to_int_truncates_and_saturates():
    x = np.array([-3.9, -0.5, 0.5, 3.9, 1e10, -1e10, np.nan], np.float32)
    got = run_single(CastParams(DataType.INT32), [x])[0]
    info = np.iinfo(np.int32)
    assert np.array_equal(got[:4], np.trunc(x[:4]).astype(np.int32))
    assert got[4] == info.max and got[5] == info.min and got[6] == 0


def test_cast_keeps_target_type_under_fp16():
    x = randn(rng(6), 10) * 1000
    got = run_single(CastParams(DataType.FLOAT), [x], precision=Precision.FP16)[0]
    assert got.dtype == np.float32
    assert np.array_equal(got, x.astype(np.float16).astype(np.float32))
    assert_close(run_single(CastParams(DataType.INT32), [x], precision=Precision.FP16)[0],
                 np.trunc(x.astype(np.float16).astype(np.float64)).astype(np.int32), rtol=0, atol=0)


def test_reflect_padding_longer_than_the_cropped_axis_is_refused():
    """Shape inference refuses it when the layer is added (the kernel would refuse it too)."""
    from engine.ir.errors import NetworkError

    x = randn(rng(7), 3, 6)
    with pytest.raises(NetworkError, match="cropped dims"):
        run_single(PaddingParams((0, -4), (0, 2), PaddingMode.REFLECT), [x])
