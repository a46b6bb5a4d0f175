"""The shared resize coordinate maths (``engine.ir.resize_coords``) against ONNX Runtime's Resize.

A float64 resize built only from the shared functions must match onnxruntime for every
coordinate transformation, nearest mode and linear, on random data; the reference kernel and the
GPU lowering's index/weight tables are checked to come from those functions.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from backends.gpu.lower import lower, supports
from backends.reference import execute
from engine.ir.errors import UnsupportedError
from engine.ir.layers import ResizeMode, ResizeParams
from engine.ir.network import Network
from engine.ir.resize_coords import axis_scales, is_identity, linear_taps, nearest_indices, source_coordinates

COORDS = list(ResizeParams.COORDINATE_MODES)
NEAREST = list(ResizeParams.NEAREST_MODES)
SHAPES = [((1, 2, 5, 7), (1, 2, 11, 16)), ((2, 3, 9, 8), (2, 3, 4, 5)), ((1, 1, 3, 4), (1, 1, 1, 9)),
          ((1, 2, 16, 6), (1, 2, 7, 6))]


@pytest.fixture
def rng() -> np.random.Generator:
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print(f"seed {seed}")
    return np.random.default_rng(seed)


def _ort(x: np.ndarray, mode: str, coord: str, nearest: str, sizes=None, scales=None) -> np.ndarray:
    inits = [numpy_helper.from_array(np.array([], np.float32), "roi")]
    if scales is not None:
        inits.append(numpy_helper.from_array(np.array(scales, np.float32), "scales"))
        ins = ["x", "roi", "scales"]
    else:
        inits.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
        ins = ["x", "roi", "", "sizes"]
    node = helper.make_node("Resize", ins, ["y"], mode=mode, coordinate_transformation_mode=coord,
                            nearest_mode=nearest)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _resize64(x: np.ndarray, out_shape, mode: str, coord: str, nearest: str, scales=None) -> np.ndarray:
    """A float64 resize from the shared coordinate functions alone."""
    y = x.astype(np.float64)
    for ax, (o, n, sc) in enumerate(zip(out_shape, x.shape, axis_scales(scales, out_shape, x.shape))):
        if is_identity(o, n, sc):
            continue
        c = source_coordinates(o, n, sc, coord)
        if mode == "nearest":
            y = np.take(y, nearest_indices(c, nearest, n), axis=ax)
        else:
            lo, hi, frac = linear_taps(c, n)
            shape = [1] * y.ndim
            shape[ax] = o
            a, b = np.take(y, lo, axis=ax), np.take(y, hi, axis=ax)
            y = a + (b - a) * frac.reshape(shape)
    return y


@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("coord", COORDS)
def test_linear_matches_onnxruntime(coord, shapes, rng):
    x = rng.standard_normal(shapes[0]).astype(np.float32)
    want = _ort(x, "linear", coord, "round_prefer_floor", sizes=shapes[1])
    np.testing.assert_allclose(_resize64(x, shapes[1], "linear", coord, ""), want, rtol=1e-5, atol=1e-5)


def _on_boundary(src, dst, coord: str, nearest: str) -> np.ndarray:
    """Outputs whose exact source coordinate lies within float32 error of a rounding boundary: there
    onnxruntime's float32 coordinate may round to either side (3 -> 1 under half_pixel_symmetric puts
    the output exactly on 1.0, which float32 computes as 0.99999994)."""
    boundary = Fraction(0) if nearest in ("floor", "ceil") else Fraction(1, 2)
    mask = np.zeros(dst, bool)
    for ax, (n, o, sc) in enumerate(zip(src, dst, axis_scales(None, dst, src))):
        if is_identity(o, n, sc):
            continue
        d = [(c - boundary) - round(c - boundary) for c in source_coordinates(o, n, sc, coord)]
        shape = [1] * len(dst)
        shape[ax] = o
        mask |= np.array([abs(v) < Fraction(1, 10**5) for v in d]).reshape(shape)
    return mask


@pytest.mark.parametrize("nearest", NEAREST)
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("coord", COORDS)
def test_nearest_matches_onnxruntime(coord, shapes, nearest, rng):
    x = rng.standard_normal(shapes[0]).astype(np.float32)
    want = _ort(x, "nearest", coord, nearest, sizes=shapes[1])
    got = _resize64(x, shapes[1], "nearest", coord, nearest).astype(np.float32)
    edge = _on_boundary(shapes[0], shapes[1], coord, nearest)
    np.testing.assert_array_equal(got[~edge], want[~edge])


def test_most_nearest_outputs_are_compared():
    masks = [_on_boundary(a, b, c, m) for a, b in SHAPES for c in COORDS for m in NEAREST]
    assert sum(m.sum() for m in masks) < 0.2 * sum(m.size for m in masks)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("coord", [c for c in COORDS if c != "align_corners"])  # ORT rounds that length first
def test_scales_match_onnxruntime(coord, mode, rng):
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    scales = (1.0, 1.0, 1.7, 0.6)
    out = tuple(int(np.floor(n * s)) for n, s in zip(x.shape, scales))
    want = _ort(x, mode, coord, "round_prefer_ceil", scales=scales)
    got = _resize64(x, out, mode, coord, "round_prefer_ceil", scales=scales)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _resize_net(shape, out, mode: ResizeMode, coord: str, scales=None) -> Network:
    net = Network("r")
    net.add_input("x", shape)
    layer = net.add_layer(ResizeParams(out, mode, coord, "round_prefer_ceil", scales), ["x"], name="r")
    net.mark_output(layer.outputs[0])
    return net


@pytest.mark.parametrize("mode", [ResizeMode.NEAREST, ResizeMode.LINEAR])
@pytest.mark.parametrize("coord", COORDS)
def test_reference_kernel_and_gpu_tables_use_the_shared_maths(coord, mode, rng):
    shape, out = (1, 2, 5, 7), (1, 2, 11, 4)
    net = _resize_net(shape, out, mode, coord)
    x = rng.standard_normal(shape).astype(np.float32)
    ref = execute(net, {"x": x})[net.outputs[0]]
    np.testing.assert_allclose(ref, _resize64(x, out, mode.value, coord, "round_prefer_ceil"), rtol=1e-5, atol=1e-6)

    low = lower(net, net.layers, list(net.outputs))
    for d in (2, 3):
        c = source_coordinates(out[d], shape[d], axis_scales(None, out, shape)[d], coord)
        if mode is ResizeMode.NEAREST:
            np.testing.assert_array_equal(low.slots[f"r/near{d}"].const, nearest_indices(c, "round_prefer_ceil",
                                                                                         shape[d]))
        else:
            lo, hi, frac = linear_taps(c, shape[d])
            np.testing.assert_array_equal(low.slots[f"r/lo{d}"].const, lo)
            np.testing.assert_array_equal(low.slots[f"r/hi{d}"].const, hi)
            np.testing.assert_array_equal(low.slots[f"r/fr{d}"].const, frac.astype(np.float32))


def test_non_positive_scales_are_refused_by_both_backends():
    # The GPU lowering used to divide by the scale unchecked (ZeroDivisionError); the reference's
    # refusal is the right behaviour, and the GPU now falls back so that the reference reports it.
    net = _resize_net((1, 1, 4, 4), (1, 1, 4, 4), ResizeMode.LINEAR, "half_pixel", scales=(1.0, 1.0, 0.0, 1.0))
    ok, why = supports(net.layers[0], net)
    assert not ok and "must be positive" in why
    with pytest.raises(UnsupportedError, match="must be positive"):
        execute(net, {"x": np.ones((1, 1, 4, 4), np.float32)})
