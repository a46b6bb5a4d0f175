"""Optimization profiles (engine.ir.profiles) and what they change in the parsed network (onnx_parser.dynamic)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from graphs import vit_like
from onnx import TensorProto, helper, numpy_helper

from backends.reference import execute
from engine.builder import BuilderConfig, build_from_onnx
from engine.ir.errors import BuildError, ExecutionError
from engine.ir.logger import Logger, Severity
from engine.ir.profiles import OptimizationProfile
from engine.onnx_parser import parse
from engine.onnx_parser.dynamic import analyze_profile, check_profile, model_input_dims
from engine.plan import deserialize_with_header

ort = pytest.importorskip("onnxruntime")


def conv_net() -> onnx.ModelProto:
    """Dynamic batch and spatial dims: conv → relu → global pool → flatten via Shape arithmetic."""
    rng = np.random.default_rng(3)
    n = helper.make_node
    nodes = [n("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             n("Relu", ["c"], ["r"]),
             n("GlobalAveragePool", ["r"], ["p"]),
             n("Shape", ["p"], ["s"]),
             n("Gather", ["s", "i0"], ["bn"], axis=0),
             n("Unsqueeze", ["bn", "ax0"], ["b1"]),
             n("Concat", ["b1", "minus1"], ["flat"], axis=0),
             n("Reshape", ["p", "flat"], ["y"])]
    inits = [numpy_helper.from_array(v, k) for k, v in {
        "w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "b": rng.standard_normal(4).astype(np.float32),
        "i0": np.array(0, np.int64), "ax0": np.array([0], np.int64), "minus1": np.array([-1], np.int64)}.items()]
    graph = helper.make_graph(nodes, "convnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                               ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def profile() -> OptimizationProfile:
    return OptimizationProfile().set_shape("x", (1, 3, 32, 32), (4, 3, 64, 64), (8, 3, 128, 128))


def test_profile_rejects_bad_ranges_and_names_input_dim_value_and_range():
    with pytest.raises(BuildError, match=r"input 'x' dim 2: need min <= opt <= max, got 32, 16, 64"):
        OptimizationProfile().set_shape("x", (1, 3, 32), (1, 3, 16), (1, 3, 64))
    with pytest.raises(BuildError, match="differ in rank"):
        OptimizationProfile().set_shape("x", (1, 3), (1, 3, 4), (1, 3, 4))
    p = profile()
    p.check({"x": (8, 3, 128, 32)})
    with pytest.raises(ExecutionError, match=r"input 'x' dim 2 = 129 is outside the optimization profile's range "
                                             r"\[32, 128\]"):
        p.check({"x": (2, 3, 129, 64)})
    with pytest.raises(ExecutionError, match=r"input 'x': shape \(2, 3\) has rank 2"):
        p.check({"x": (2, 3)})
    assert p.shapes["x"].dynamic_dims == (0, 2, 3) and not p.is_static
    assert OptimizationProfile.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_check_profile_against_declared_dims():
    model = conv_net()
    assert model_input_dims(model) == {"x": ("N", 3, "H", "W")}
    check_profile(model, profile())
    with pytest.raises(BuildError, match=r"input 'x' dim 1 is fixed to 3 by the model; the profile gives "
                                         r"min/opt/max \(3, 3, 4\)"):
        check_profile(model, OptimizationProfile().set_shape("x", (1, 3, 8, 8), (1, 3, 8, 8), (1, 4, 8, 8)))
    with pytest.raises(BuildError, match=r"not inputs of the model"):
        check_profile(model, OptimizationProfile().set_shape("z", (1,), (1,), (1,)))
    two = vit_like()
    two.graph.input.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["N", 4]))
    p = OptimizationProfile().set_shape("x", (1, 3, 32, 32), (2, 3, 32, 32), (4, 3, 32, 32))
    with pytest.raises(BuildError, match=r"input 'x2' has dynamic dim 0 \('N'\) but the optimization profile"):
        check_profile(two, p)
    p.set_shape("x2", (1, 4), (3, 4), (4, 4))
    with pytest.raises(BuildError, match=r"dim 'N' is shared by input 'x' dim 0 .* give both the same range"):
        check_profile(two, p)


def test_analysis_finds_dynamic_dims_and_shape_specialised_layers():
    result = analyze_profile(conv_net(), profile())
    assert result.same_structure
    assert result.dynamic["x"] == (0, 2, 3) and result.dynamic["y"] == (0,)
    assert result.dynamic["p"] == (0,)  # pooled: only the batch stays dynamic
    assert result.shapes["max"]["c"] == (8, 4, 128, 128)
    assert result.specialised == {"Reshape_7": "its parameters depend on the input shapes"}
    assert result.dynamic_reason("x") == ("dynamic dimension 0 of tensor 'x'; give min = opt = max to keep it "
                                          "on the DLA")
    assert result.dynamic_reason("w") is None


def test_analysis_flags_constants_folded_from_the_batch():
    """ViT's class token, broadcast to the batch by Expand, folds into a batch-sized constant."""
    p = OptimizationProfile().set_shape("x", (1, 3, 32, 32), (2, 3, 32, 32), (4, 3, 32, 32))
    result = analyze_profile(vit_like(), p)
    weights = [k for k, why in result.specialised.items() if "weights" in why]
    assert len(weights) == 1 and weights[0].startswith("Concat")
    assert result.dynamic["y"] == (0,)


def test_analysis_reports_structure_that_changes_with_the_shape():
    """Padding to a multiple of 4 computed with Mod: no Pad layer at all when the width already is one."""
    n = helper.make_node
    nodes = [n("Shape", ["x"], ["s"]), n("Gather", ["s", "i1"], ["w"], axis=0),
             n("Mod", ["w", "four"], ["r"]), n("Sub", ["four", "r"], ["p0"]), n("Mod", ["p0", "four"], ["p"]),
             n("Unsqueeze", ["p", "ax0"], ["p1"]), n("Concat", ["zeros3", "p1"], ["pads"], axis=0),
             n("Pad", ["x", "pads"], ["y"])]
    inits = [numpy_helper.from_array(v, k) for k, v in {
        "i1": np.array(1, np.int64), "four": np.array(4, np.int64), "ax0": np.array([0], np.int64),
        "zeros3": np.zeros(3, np.int64)}.items()]
    graph = helper.make_graph(nodes, "pad4", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, "Wp"])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    result = analyze_profile(model, OptimizationProfile().set_shape("x", (2, 4), (2, 6), (2, 8)))
    assert not result.same_structure and "at min shapes" in result.structure_changes[0]


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (4, 3, 64, 64), (3, 3, 40, 96), (8, 3, 128, 128)])
def test_per_shape_specialisation_inside_the_profile_matches_onnxruntime(shape):
    """What the runtime does at set_input_shape: check the profile, specialise, run."""
    model = conv_net()
    profile().check({"x": shape})
    x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
    got = execute(parse(model, input_shapes={"x": shape}), {"x": x})["y"]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_builder_specialises_at_opt_and_records_profiles_in_the_plan():
    p2 = OptimizationProfile().set_shape("x", (1, 3, 16, 16), (2, 3, 16, 16), (2, 3, 16, 16))
    config = BuilderConfig(profiles=[profile(), p2])
    plan = build_from_onnx(conv_net(), config, Logger(Severity.ERROR))
    _, contents = deserialize_with_header(plan)
    assert contents.network.tensors["x"].shape == (4, 3, 64, 64)
    assert contents.build_config["profiles"] == [profile().to_dict(), p2.to_dict()]
    with pytest.raises(BuildError, match=r"outside optimization profile 0: input 'x' dim 0 = 9"):
        build_from_onnx(conv_net(), BuilderConfig(profiles=[profile()], input_shapes={"x": (9, 3, 64, 64)}))
    bad = OptimizationProfile().set_shape("x", (1, 2, 16, 16), (1, 2, 16, 16), (1, 2, 16, 16))
    with pytest.raises(BuildError, match="fixed to 3 by the model"):
        build_from_onnx(conv_net(), BuilderConfig(profiles=[bad]))


def test_specialiser_checks_the_profile_caches_per_shape_and_matches_onnxruntime():
    from engine.onnx_parser.dynamic import ShapeSpecialiser

    model = conv_net()
    small = OptimizationProfile().set_shape("x", (1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8))
    spec = ShapeSpecialiser(model, [profile(), small])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    shapes = [(1, 3, 32, 32), (4, 3, 64, 64), (3, 3, 40, 96), (8, 3, 128, 128), (4, 3, 64, 64)]
    for k, shape in enumerate(shapes):
        net = spec.network_for({"x": shape})
        assert net.tensors["x"].shape == shape
        x = np.random.default_rng(k).standard_normal(shape).astype(np.float32)
        want = sess.run(None, {"x": x})[0]
        np.testing.assert_allclose(execute(net, {"x": x})["y"], want, rtol=1e-4,
                                   atol=1e-4 * float(np.abs(want).max()))
    assert len(spec.records) == 4 and spec.records[(("x", (4, 3, 64, 64)),)].hits == 1
    assert all(r.parse_seconds > 0 for r in spec.records.values())
    assert spec.network_for({"x": (1, 3, 8, 8)}, profile=1).tensors["y"].shape == (1, 4)
    with pytest.raises(ExecutionError, match=r"input 'x' dim 3 = 16 is outside the optimization profile's range "
                                             r"\[8, 8\]"):
        spec.network_for({"x": (1, 3, 8, 16)}, profile=1)
    with pytest.raises(ExecutionError, match="optimization profile 2 does not exist"):
        spec.network_for({"x": (1, 3, 8, 8)}, profile=2)
    with pytest.raises(ExecutionError, match=r"no shape given for input\(s\) \['x'\]"):
        spec.network_for({})
