"""The network executor: feed checks, observer, freeing, the FP16 convention, INT8 refusal, speed."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from ref_resnet import resnet50
from refhelp import assert_close, ort_single, randn, rng

from backends.reference import execute, run_layer
from backends.reference.kernels import KERNELS
from engine.ir.dtypes import DataType, Precision
from engine.ir.errors import ExecutionError, UnsupportedError
from engine.ir.layers import (
    ActivationType,
    ConvolutionParams,
    IdentityParams,
    LayerKind,
    PoolingType,
    ReduceOp,
    ReduceParams,
    ResizeParams,
    ShuffleParams,
    SliceParams,
)
from engine.ir.network import Network


def _small_net(seed: int = 0) -> tuple[Network, dict[str, np.ndarray]]:
    g = rng(seed)
    net = Network("small")
    net.add_input("x", (1, 3, 8, 8))
    net.add_input("ids", (4,), DataType.INT32)
    c = net.add_convolution("x", randn(g, 4, 3, 3, 3), randn(g, 4), padding=(1, 1), name="conv")
    r = net.add_activation(c, ActivationType.RELU, name="relu")
    p = net.add_pooling(r, PoolingType.MAX, (2, 2), name="pool")
    s = net.add_layer(ReduceParams(ReduceOp.SUM, (0,), keep_dims=False), ["ids"], name="isum").outputs[0]
    net.mark_output(p)
    net.mark_output(s)
    feeds = {"x": randn(g, 1, 3, 8, 8), "ids": g.integers(-9, 9, size=4).astype(np.int32)}
    return net, feeds


def test_outputs_and_order():
    net, feeds = _small_net()
    out = execute(net, feeds)
    assert list(out) == ["pool", "isum"]
    assert out["pool"].shape == (1, 4, 4, 4) and out["pool"].dtype == np.float32
    assert out["isum"].dtype == np.int32 and out["isum"] == feeds["ids"].sum()


@pytest.mark.parametrize("change,match", [
    (lambda f: f.pop("x"), r"missing input\(s\) \['x'\]"),
    (lambda f: f.update(y=np.zeros(1, np.float32)), r"unknown input\(s\) \['y'\]"),
    (lambda f: f.update(x=np.zeros((1, 3, 8, 9), np.float32)),
     r"'x'.*expected shape \(1, 3, 8, 8\), got \(1, 3, 8, 9\)"),
    (lambda f: f.update(x=np.zeros((1, 3, 8, 8), np.float16)), r"'x'.*expected dtype float32, got float16"),
    (lambda f: f.update(ids=np.zeros(4, np.int64)), r"'ids'.*expected dtype int32, got int64"),
])
def test_bad_feeds_are_refused(change, match):
    net, feeds = _small_net()
    change(feeds)
    with pytest.raises(ExecutionError, match=match):
        execute(net, feeds)


def test_observer_sees_every_layer_in_order_and_intermediates_are_freed():
    net, feeds = _small_net()
    seen, refs = [], {}

    def observer(layer, outs):
        gc.collect()
        seen.append((layer.name, [o.shape for o in outs], {k: r() is None for k, r in refs.items()}))
        refs[layer.name] = weakref.ref(outs[0])

    out = execute(net, feeds, observer=observer)
    assert [s[0] for s in seen] == ["conv", "relu", "pool", "isum"]
    assert seen[0][1] == [(1, 4, 8, 8)]
    # conv's output is dead once relu has run; relu's once pool has run; pool's output is kept.
    assert seen[2][2]["conv"] is True
    assert seen[3][2] == {"conv": True, "relu": True, "pool": False}
    assert out["pool"] is refs["pool"]()


def test_inputs_and_weights_are_not_mutated():
    net, feeds = _small_net()
    before = {k: v.copy() for k, v in feeds.items()}
    kernel = net.layer("conv").weights["kernel"].copy()
    execute(net, feeds, precision_of=lambda layer: Precision.FP16)
    assert all(np.array_equal(before[k], feeds[k]) for k in feeds)
    assert np.array_equal(kernel, net.layer("conv").weights["kernel"])


def test_fp16_convention_rounds_inputs_weights_and_outputs():
    """An FP16 convolution: fp16-rounded input and weights, fp32 arithmetic, fp16 output."""
    g = rng(40)
    x, w, b = randn(g, 1, 4, 9, 9) * 3, randn(g, 5, 4, 3, 3), randn(g, 5)
    net = Network()
    net.add_input("x", x.shape)
    net.mark_output(net.add_convolution("x", w, b, padding=(1, 1), name="conv"))
    got = execute(net, {"x": x}, precision_of=lambda layer: Precision.FP16)["conv"]
    assert got.dtype == np.float16
    r = [a.astype(np.float16).astype(np.float32) for a in (x, w, b)]
    want = ort_single("Conv", r, {"pads": [1, 1, 1, 1]}, const_inputs=[1, 2])[0].astype(np.float16)
    # the same up to one fp16 rounding step (summation order may differ)
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-3, atol=1e-3)
    exact32 = execute(net, {"x": x})["conv"]
    assert not np.array_equal(got.astype(np.float32), exact32)  # the fp16 path really rounds


def test_mixed_precision_hand_off():
    net, feeds = _small_net(1)
    precisions = {"conv": Precision.FP16, "relu": Precision.FP32, "pool": Precision.FP16}
    dtypes = {}

    def observer(layer, outs):
        dtypes[layer.name] = outs[0].dtype

    out = execute(net, feeds, precision_of=lambda layer: precisions.get(layer.name, Precision.FP32),
                  observer=observer)
    assert dtypes == {"conv": np.float16, "relu": np.float32, "pool": np.float16, "isum": np.int32}
    ref = execute(net, feeds)["pool"]
    assert_close(out["pool"], ref, rtol=1e-2, atol=1e-2, check_dtype=False)


def test_layer_precision_is_the_default():
    net, feeds = _small_net(2)
    net.layer("relu").precision = Precision.FP16
    dtypes = {}
    execute(net, feeds, observer=lambda layer, outs: dtypes.update({layer.name: outs[0].dtype}))
    assert dtypes["conv"] == np.float32 and dtypes["relu"] == np.float16


def test_int8_is_refused_not_computed_in_float():
    net, feeds = _small_net()
    with pytest.raises(UnsupportedError, match=r"layer relu \(activation\): .* no INT8 kernel"):
        execute(net, feeds, precision_of=lambda layer: Precision.INT8 if layer.name == "relu" else Precision.FP32)
    layer = net.layer("conv")
    layer.precision = Precision.INT8
    with pytest.raises(UnsupportedError, match="conv"):
        run_layer(layer, [feeds["x"]])


def test_run_layer_standalone():
    g = rng(41)
    x, w = randn(g, 2, 3, 5, 5), randn(g, 6, 3, 1, 1)
    net = Network()
    net.add_input("x", x.shape)
    conv = net.add_layer(ConvolutionParams(6, (1, 1), (1, 1), (0, 0), (0, 0), (1, 1)), ["x"], {"kernel": w})
    (y,) = run_layer(conv, [x])
    want = np.einsum("nchw,kc->nkhw", x.astype(np.float64), w[:, :, 0, 0].astype(np.float64))
    assert_close(y, want.astype(np.float32))


def test_resnet50_fp32_and_fp16_sanity():
    """A whole ResNet-50 runs in both precisions (bench/bench_engine.py measures its speed)."""
    net = resnet50()
    net.validate()
    x = randn(rng(42), 1, 3, 224, 224)
    y = next(iter(execute(net, {"image": x}).values()))
    assert y.shape == (1, 1000) and np.isfinite(y).all() and y.std() > 0
    y16 = next(iter(execute(net, {"image": x}, precision_of=lambda layer: Precision.FP16).values()))
    assert y16.dtype == np.float16
    assert_close(y16, y, rtol=0.05, atol=0.05 * float(np.abs(y).max()), check_dtype=False)


def test_outputs_never_alias_inputs_or_weights():
    x = randn(rng(43), 2, 3, 4)
    for params in (IdentityParams(), ShuffleParams(reshape=(6, 4)), SliceParams((0, 0, 0), (2, 3, 4), (1, 1, 1)),
                   ResizeParams((2, 3, 4))):
        net = Network()
        net.add_input("x", x.shape)
        net.mark_output(net.add_layer(params, ["x"], name="l").outputs[0])
        y = execute(net, {"x": x})["l"]
        assert not np.may_share_memory(y, x), params


def test_every_layer_kind_has_a_kernel():
    assert set(KERNELS) == set(LayerKind)
