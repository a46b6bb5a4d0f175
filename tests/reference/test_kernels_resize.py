"""Resize against onnxruntime's Resize: nearest modes, N-linear, every coordinate transformation."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from refhelp import assert_close, assert_fp16_close, ort_single, randn, rng, run_single, seed_of

from engine.ir.dtypes import Precision
from engine.ir.layers import ResizeMode, ResizeParams

COORDS = list(ResizeParams.COORDINATE_MODES)
SHAPES = [((1, 2, 5, 7), (1, 2, 11, 16)),   # upsample by non-integer factors
          ((2, 3, 9, 8), (2, 3, 4, 5)),     # downsample
          ((1, 2, 6, 4), (1, 2, 12, 4)),    # one axis only
          ((1, 1, 3, 4), (1, 1, 1, 9))]     # to length 1


def _onnx_reference_resize(x, mode, coord, nearest, scales):
    """ONNX's own reference evaluator: the spec's formulas (onnxruntime rounds the resized length
    for align_corners with scales, the spec does not)."""
    import onnx.reference
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode=mode, coordinate_transformation_mode=coord,
                            nearest_mode=nearest)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array(scales, np.float32), "scales")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    return onnx.reference.ReferenceEvaluator(model).run(None, {"x": x})[0]


def _ort_resize(x, mode, coord, nearest, sizes=None, scales=None):
    attrs = {"mode": mode, "coordinate_transformation_mode": coord, "nearest_mode": nearest}
    if scales is not None and coord == "align_corners":
        return _onnx_reference_resize(x, mode, coord, nearest, scales)
    if scales is not None:
        return ort_single("Resize", [x, None, np.array(scales, np.float32)], attrs, const_inputs=[2])[0]
    return ort_single("Resize", [x, None, None, np.array(sizes, np.int64)], attrs, const_inputs=[3])[0]


def _exact_source(i: int, n_in: int, n_out: int, scale: Fraction, coord: str) -> Fraction:
    """The ONNX coordinate formulas in exact arithmetic."""
    h = Fraction(1, 2)
    if coord == "align_corners":  # ONNX divides by the unrounded resized length n_in * scale
        resized = n_in * scale
        return i * (n_in - 1) / (resized - 1) if n_out > 1 and resized != 1 else Fraction(0)
    if coord == "asymmetric":
        return i / scale
    if coord == "pytorch_half_pixel" and n_out == 1:
        return Fraction(0)
    c = (i + h) / scale - h
    if coord == "half_pixel_symmetric":
        c += Fraction(n_in, 2) * (1 - n_out / (scale * n_in))
    return c


def _near(c: Fraction, boundary: Fraction) -> bool:
    """Whether c lies within float32 rounding of a boundary (k + ``boundary``)."""
    d = (c - boundary) - round(c - boundary)
    return abs(d) < Fraction(1, 10**5)


def _nearest_oracle(x, dst, coord, nearest, scales=None):
    """Exact nearest indices, and a mask of outputs whose coordinate sits on a rounding boundary
    (or within float32 error of one: there onnxruntime's float32 coordinates may round either way)."""
    idx, on_edge = [], []
    for ax, (n_in, n_out) in enumerate(zip(x.shape, dst)):
        scale = Fraction(float(scales[ax])) if scales is not None else Fraction(n_out, n_in)
        cs = [_exact_source(i, n_in, n_out, scale, coord) for i in range(n_out)]
        if nearest == "floor":
            k = [math.floor(c) for c in cs]
            edge = [_near(c, 0) for c in cs]
        elif nearest == "ceil":
            k = [math.ceil(c) for c in cs]
            edge = [_near(c, 0) for c in cs]
        else:
            k = [math.floor(c) + (1 if (c - math.floor(c) > Fraction(1, 2) or (
                c - math.floor(c) == Fraction(1, 2) and nearest == "round_prefer_ceil")) else 0) for c in cs]
            edge = [_near(c, Fraction(1, 2)) for c in cs]
        idx.append(np.clip(k, 0, n_in - 1))
        on_edge.append(np.array(edge))
    want = x[np.ix_(*idx)]
    mask = np.zeros(dst, bool)
    for ax, e in enumerate(on_edge):
        shape = [1] * len(dst)
        shape[ax] = dst[ax]
        mask |= e.reshape(shape)
    return want, mask


@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("nearest", list(ResizeParams.NEAREST_MODES))
@pytest.mark.parametrize("coord", COORDS)
def test_nearest_with_sizes(coord, nearest, shapes):
    src, dst = shapes
    x = randn(rng(seed_of(coord, nearest, shapes)), *src)
    got = run_single(ResizeParams(dst, ResizeMode.NEAREST, coord, nearest), [x])[0]
    exact, on_edge = _nearest_oracle(x, dst, coord, nearest)
    assert np.array_equal(got, exact)
    ort = _ort_resize(x, "nearest", coord, nearest, sizes=dst)
    assert np.array_equal(got[~on_edge], ort[~on_edge])


def test_nearest_exact_ties():
    """16 -> 7 asymmetric puts output 8 exactly on 3.5 (float32 gives 3.4999998); 2x downsampling
    under half_pixel puts every output on a tie."""
    x = randn(rng(12), 1, 1, 8, 7)
    for nearest, want_col8 in (("round_prefer_ceil", 4), ("round_prefer_floor", 3)):
        got = run_single(ResizeParams((1, 1, 8, 16), ResizeMode.NEAREST, "asymmetric", nearest), [x])[0]
        assert np.array_equal(got[..., 8], x[..., want_col8])
    down = run_single(ResizeParams((1, 1, 4, 7), ResizeMode.NEAREST, "half_pixel", "round_prefer_floor"), [x])[0]
    assert np.array_equal(down, x[:, :, 0::2])
    down = run_single(ResizeParams((1, 1, 4, 7), ResizeMode.NEAREST, "half_pixel", "round_prefer_ceil"), [x])[0]
    assert np.array_equal(down, x[:, :, 1::2])


@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("coord", COORDS)
def test_linear_with_sizes(coord, shapes):
    src, dst = shapes
    x = randn(rng(seed_of("lin", coord, shapes)), *src)
    want = _ort_resize(x, "linear", coord, "floor", sizes=dst)
    params = ResizeParams(dst, ResizeMode.LINEAR, coord)
    assert_close(run_single(params, [x])[0], want)
    assert_fp16_close(run_single(params, [x], precision=Precision.FP16)[0], want)


@pytest.mark.parametrize("mode", list(ResizeMode))
@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("scales", [(1.0, 1.0, 1.7, 2.5), (1.0, 1.0, 0.6, 0.75), (1.0, 1.0, 1.75, 0.625)])
def test_scales_drive_the_coordinate_mapping(coord, mode, scales):
    """Output 7 x 1.7 = 11 rows, but the rows sample at 1/1.7, not at 7/11."""
    scales = tuple(float(np.float32(s)) for s in scales)  # the values an ONNX model can hold
    src = (1, 2, 7, 6)
    dst = tuple(math.floor(n * s) for n, s in zip(src, scales))
    x = randn(rng(seed_of("scales", coord, mode, scales)), *src)
    want = _ort_resize(x, mode.value, coord, "round_prefer_ceil", scales=scales)
    assert want.shape == dst
    got = run_single(ResizeParams(dst, mode, coord, "round_prefer_ceil", scales=scales), [x])[0]
    if mode is ResizeMode.LINEAR:
        assert_close(got, want)
        return
    exact, on_edge = _nearest_oracle(x, dst, coord, "round_prefer_ceil", scales)
    assert np.array_equal(got, exact)
    assert np.array_equal(got[~on_edge], want[~on_edge])
    if coord in ("half_pixel", "asymmetric") and scales[2] != 1.75:
        by_size = run_single(ResizeParams(dst, mode, coord, "round_prefer_ceil"), [x])[0]
        assert not np.array_equal(by_size, got)  # the scales changed the mapping


@pytest.mark.parametrize("coord", COORDS)
def test_trilinear(coord):
    src, dst = (1, 2, 3, 5, 4), (1, 2, 7, 3, 9)
    x = randn(rng(seed_of("tri", coord)), *src)
    want = _ort_resize(x, "linear", coord, "floor", sizes=dst)
    assert_close(run_single(ResizeParams(dst, ResizeMode.LINEAR, coord), [x])[0], want)


def test_linear_1d_against_numpy_interp():
    """An oracle independent of onnxruntime: align_corners linear is numpy.interp on a stretched grid."""
    x = randn(rng(8), 1, 1, 9)
    n = 23
    grid = np.linspace(0, 8, n)
    want = np.interp(grid, np.arange(9), x[0, 0].astype(np.float64)).reshape(1, 1, n)
    got = run_single(ResizeParams((1, 1, n), ResizeMode.LINEAR, "align_corners"), [x])[0]
    assert_close(got, want.astype(np.float32))
