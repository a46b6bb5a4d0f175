"""Refit: new weights through the folds (BN into conv, FC bias) equal a fresh build's, in place."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine import plan as plan_format
from engine.builder import Builder, BuilderConfig, build_from_onnx, build_serialized
from engine.ir.errors import BuildError, UnsupportedError
from engine.ir.network import Network
from engine.refit import RefitError, Refitter
from engine.runtime import Runtime

SHAPES = {"w1": (8, 3, 3, 3), "b1": (8,), "bn_g": (8,), "bn_b": (8,), "bn_m": (8,), "bn_v": (8,),
          "w2": (6, 8, 1, 1), "fc_w": (5, 6), "fc_b": (5,)}


@pytest.fixture
def rng():
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print(f"seed {seed}")
    return np.random.default_rng(seed)


def weights(rng) -> dict[str, np.ndarray]:
    w = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    w["bn_v"] = rng.uniform(0.5, 2.0, 8).astype(np.float32)
    return w


def model(w: dict[str, np.ndarray]) -> onnx.ModelProto:
    f = TensorProto.FLOAT
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("BatchNormalization", ["c1", "bn_g", "bn_b", "bn_m", "bn_v"], ["bn"], name="bn1"),
             helper.make_node("Relu", ["bn"], ["r"], name="relu1"),
             helper.make_node("Conv", ["r", "w2"], ["c2"], name="conv2"),
             helper.make_node("GlobalAveragePool", ["c2"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["fl"], name="flat"),
             helper.make_node("Gemm", ["fl", "fc_w", "fc_b"], ["y"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "refit_net", [helper.make_tensor_value_info("x", f, [2, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", f, [2, 5])],
                              [numpy_helper.from_array(v, k) for k, v in w.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(data: bytes, x: np.ndarray) -> np.ndarray:
    return Runtime().deserialize(data).create_execution_context().execute({"x": x})["y"]


@pytest.mark.parametrize("fp16", [False, True])
def test_refit_equals_fresh_build(rng, fp16):
    old, new = weights(rng), weights(rng)
    config = BuilderConfig(fp16=fp16, refittable=True)
    engine = Runtime().deserialize(build_from_onnx(model(old), config))
    assert sum(1 for la in engine._contents.network.layers if la.kind.value == "convolution") == 2  # BN folded
    ctx = engine.create_execution_context()  # created before the refit: must see the new weights
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    before = ctx.execute({"x": x})["y"]
    refitter = Refitter(engine)
    for name, value in new.items():
        refitter.set_named_weights(name, value)
    assert refitter.get_missing() == []
    changed = refitter.refit()
    assert changed  # the folded conv, the second conv and the FC layer
    fresh_data = build_from_onnx(model(new), BuilderConfig(fp16=fp16))
    fresh = _run(fresh_data, x)
    got = ctx.execute({"x": x})["y"]
    assert not np.allclose(got, before)
    if fp16:
        np.testing.assert_allclose(got.astype(np.float32), fresh.astype(np.float32), rtol=1e-3,
                                   atol=1e-3 * np.abs(fresh).max())
    np.testing.assert_array_equal(got, fresh)  # the same folds replayed: bit-identical
    fresh_net = plan_format.deserialize(fresh_data).network
    for la in engine._contents.network.layers:
        for k, w in la.weights.items():
            np.testing.assert_array_equal(w, fresh_net.layer(la.name).weights[k])
    # the rewritten plan runs the same in a new engine and stays refittable
    again = refitter.serialize()
    np.testing.assert_array_equal(_run(again, x), fresh)
    assert plan_format.deserialize(again).refit is not None


def test_bn_of_a_folded_conv_needs_its_group(rng):
    old, new = weights(rng), weights(rng)
    engine = Runtime().deserialize(build_from_onnx(model(old), BuilderConfig(refittable=True)))
    refitter = Refitter(engine)
    refitter.set_named_weights("bn_v", new["bn_v"])
    assert refitter.get_missing() == ["b1", "bn_b", "bn_g", "bn_m", "w1"]
    with pytest.raises(RefitError, match="needs these weights too.*b1, bn_b"):
        refitter.refit()
    for k in ("b1", "bn_b", "bn_g", "bn_m", "w1"):
        refitter.set_named_weights(k, new[k])
    refitter.refit()
    mixed = {**old, **{k: new[k] for k in ("b1", "bn_b", "bn_g", "bn_m", "bn_v", "w1")}}
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(engine.create_execution_context().execute({"x": x})["y"],
                                  _run(build_from_onnx(model(mixed)), x))


def test_fc_bias_by_layer_and_role(rng):
    old, new = weights(rng), weights(rng)
    engine = Runtime().deserialize(build_from_onnx(model(old), BuilderConfig(refittable=True)))
    refitter = Refitter(engine)
    refitter.set_weights("fc", "bias", new["fc_b"])
    assert refitter.get_missing() == ["fc_w"]
    refitter.set_named_weights("fc_w", old["fc_w"])
    assert refitter.refit() == ["fc"]
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(engine.create_execution_context().execute({"x": x})["y"],
                                  _run(build_from_onnx(model({**old, "fc_b": new["fc_b"]})), x))


def test_wrong_name_shape_dtype_are_refused(rng):
    w = weights(rng)
    refitter = Refitter(build_from_onnx(model(w), BuilderConfig(refittable=True)))
    assert refitter.get_all() == sorted(SHAPES)
    with pytest.raises(RefitError, match="'nope' is not a refittable weight"):
        refitter.set_named_weights("nope", w["b1"])
    with pytest.raises(RefitError, match=r"'w1' have shape \(8, 3, 1, 1\), the plan's are \(8, 3, 3, 3\)"):
        refitter.set_named_weights("w1", w["w1"][:, :, :1, :1].copy())
    with pytest.raises(RefitError, match="'b1' have dtype float64, the plan's are float32"):
        refitter.set_named_weights("b1", w["b1"].astype(np.float64))
    with pytest.raises(RefitError, match="no layer 'conv9'"):
        refitter.set_weights("conv9", "kernel", w["w1"])
    with pytest.raises(RefitError, match="has no weights 'gamma'"):
        refitter.set_weights("conv1", "gamma", w["w1"])
    with pytest.raises(RefitError, match="computed from ONNX initializers bn_b, bn_g, bn_m, bn_v"):
        refitter.set_weights("bn1", "scale", w["bn_g"])
    with pytest.raises(RefitError, match="NaN"):
        refitter.set_named_weights("b1", np.full(8, np.nan, np.float32))
    with pytest.raises(RefitError, match="no weights were set"):
        refitter.refit()


def test_network_api_build_refits_by_layer_and_role(rng):
    def net(k1, b1, scale, shift) -> Network:
        n = Network("api")
        n.add_input("x", (1, 4, 6, 6))
        c = n.add_convolution("x", k1, b1, padding=(1, 1), name="conv")
        from engine.ir.layers import ScaleMode, ScaleParams

        s = n.add_layer(ScaleParams(ScaleMode.CHANNEL), [c], {"scale": scale, "shift": shift}, name="affine")
        n.mark_output(s.outputs[0])
        return n

    def params():
        return (rng.standard_normal((5, 4, 3, 3)).astype(np.float32), rng.standard_normal(5).astype(np.float32),
                rng.standard_normal(5).astype(np.float32), rng.standard_normal(5).astype(np.float32))

    old, new = params(), params()
    contents = Builder().build(net(*old), BuilderConfig(refittable=True))
    assert [(la.name, la.origin) for la in contents.network.layers] == [("conv + affine", ["conv", "affine"])]
    refitter = Refitter(plan_format.serialize(contents))
    assert refitter.get_all() == ["affine:scale", "affine:shift", "conv:bias", "conv:kernel"]
    refitter.set_weights("affine", "scale", new[2])
    assert refitter.get_missing() == ["affine:shift", "conv:bias", "conv:kernel"]
    for (layer, role), v in zip([("conv", "kernel"), ("conv", "bias"), ("affine", "shift")], (new[0], new[1], new[3])):
        refitter.set_weights(layer, role, v)
    refitter.refit()
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    fresh = build_serialized(net(*new))
    out = Runtime().deserialize(refitter.serialize()).create_execution_context().execute({"x": x})
    want = Runtime().deserialize(fresh).create_execution_context().execute({"x": x})
    for k in want:
        np.testing.assert_array_equal(out[k], want[k])


def test_not_refittable_refused(rng):
    data = build_from_onnx(model(weights(rng)))
    with pytest.raises(RefitError, match="not built refittable"):
        Refitter(data)
    assert plan_format.deserialize(data).refit is None


def test_int8_refit_keeps_calibration_and_requantizes_kernels(rng, tmp_path):
    from engine.ir.dtypes import Precision
    from engine.quantization import make_calibrator

    old, new = weights(rng), weights(rng)
    batches = [{"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    cache = str(tmp_path / "m.calib")
    config = BuilderConfig(int8=True, refittable=True, calibrator=make_calibrator("minmax", batches),
                           calibration_cache=cache)
    engine = Runtime().deserialize(build_from_onnx(model(old), config))
    int8 = [la for la in engine._contents.network.layers if la.precision is Precision.INT8]
    assert int8 and all(la.weights["kernel"].dtype == np.int8 for la in int8 if "kernel" in la.weights)
    refitter = Refitter(engine)
    for name, value in new.items():
        refitter.set_named_weights(name, value)
    refitter.refit()
    # a fresh build with the new weights and the same (recorded) activation scales
    fresh = build_from_onnx(model(new), BuilderConfig(int8=True, calibration_cache=cache))
    x = batches[0]["x"]
    np.testing.assert_array_equal(engine.create_execution_context().execute({"x": x})["y"], _run(fresh, x))
    fresh_net = plan_format.deserialize(fresh).network
    for la in engine._contents.network.layers:
        for k, w in la.weights.items():
            np.testing.assert_array_equal(w, fresh_net.layer(la.name).weights[k], err_msg=f"{la.name} {k}")


def test_explicit_qdq_refittable_refused(rng):
    from engine.ir.layers import DequantizeParams, QuantizeParams

    net = Network("qdq")
    net.add_input("x", (1, 4))
    q = net.add_layer(QuantizeParams(axis=1), ["x"], {"scale": np.float32([0.1])}, name="q")
    d = net.add_layer(DequantizeParams(axis=1), q.outputs, {"scale": np.float32([0.1])}, name="dq")
    net.mark_output(d.outputs[0])
    with pytest.raises(BuildError, match="explicitly quantized"):
        Builder().build(net, BuilderConfig(int8=True, refittable=True))


def test_dla_layers_are_not_refitted(rng):
    old, new = weights(rng), weights(rng)
    config = BuilderConfig(fp16=True, refittable=True, platform="orin-agx-64gb", default_device="dla", dla_core=0,
                           gpu_fallback=True)
    data = build_from_onnx(model(old), config)
    contents = plan_format.deserialize(data)
    dla = [la.name for la in contents.network.layers if la.device == "dla"]
    assert dla
    refitter = Refitter(data)
    for name, value in new.items():
        refitter.set_named_weights(name, value)
    with pytest.raises(UnsupportedError, match="run on the DLA.*refits GPU layers only"):
        refitter.refit()
