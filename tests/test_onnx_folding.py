"""Build-time folding of any ONNX op over known values, and the all-unsupported-nodes report."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from backends.reference import execute
from engine.ir.errors import UnsupportedError
from engine.ir.layers import LayerKind
from engine.onnx_parser import UnsupportedOpsError, parse

ort = pytest.importorskip("onnxruntime")

F32, I64 = TensorProto.FLOAT, TensorProto.INT64


def make_model(nodes, inputs, outputs, initializers=(), opset=17, extra_opsets=()):
    graph = helper.make_graph(nodes, "m", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])
    model.ir_version = 8
    return model


def vi(name, shape, elem=F32):
    return helper.make_tensor_value_info(name, elem, shape)


def const(name, value):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value)))


def run_ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def shape_arithmetic_model():
    """x (2, 5, 6): pad the last axis up to a multiple of 4 and reshape to windows, Swin-style.

    The pads come from Shape → Gather → Mod → Sub → Mod → ScatterND into a zero pads vector;
    Where/Equal/Range/Expand/ConstantOfShape build a (constant) additive mask of the padded
    shape. None of it may reach the network.
    """
    n = helper.make_node
    nodes = [
        n("Shape", ["x"], ["shp"]),
        const("i2", np.array(2, np.int64)), const("w", np.array(4, np.int64)),
        n("Gather", ["shp", "i2"], ["width"], axis=0),
        n("Mod", ["width", "w"], ["rem"]),
        n("Sub", ["w", "rem"], ["pad0"]),
        n("Mod", ["pad0", "w"], ["pad"]),  # (4 - 6 % 4) % 4 = 2
        n("ConstantOfShape", ["six"], ["zeros6"], value=numpy_helper.from_array(np.array([0], np.int64))),
        n("Unsqueeze", ["pad", "ax0"], ["pad1"]),
        n("ScatterND", ["zeros6", "idx5", "pad1"], ["pads"]),  # pads = [0,0,0, 0,0,pad]
        n("Pad", ["x", "pads"], ["xp"]),
        # Mask: Range over the padded width, Equal/Where mark padded columns, Expand to xp's shape.
        n("Shape", ["xp"], ["shp_p"]),
        n("Gather", ["shp_p", "i2"], ["wp"], axis=0),
        n("Range", ["zero", "wp", "one"], ["cols"]),
        n("Less", ["cols", "width"], ["inside"]),
        n("Equal", ["inside", "false"], ["outside"]),
        n("Where", ["outside", "neg", "zerof"], ["mask_row"]),
        n("Expand", ["mask_row", "shp_p"], ["mask"]),
        n("Add", ["xp", "mask"], ["xm"]),
        # Windows: (2, 5, 8) -> (2, 5, 2, 4) with the shape built from Shape/Div/Concat.
        n("Div", ["wp", "w"], ["nwin"]),
        n("Slice", ["shp_p", "s0", "s2"], ["lead"]),
        n("Unsqueeze", ["nwin", "ax0"], ["nwin1"]),
        n("Unsqueeze", ["w", "ax0"], ["w1"]),
        n("Concat", ["lead", "nwin1", "w1"], ["win_shape"], axis=0),
        n("Reshape", ["xm", "win_shape"], ["y"]),
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in {
        "six": np.array([6], np.int64), "ax0": np.array([0], np.int64), "idx5": np.array([[5]], np.int64),
        "zero": np.array(0, np.int64), "one": np.array(1, np.int64), "false": np.array(False),
        "neg": np.array(-100.0, np.float32), "zerof": np.array(0.0, np.float32),
        "s0": np.array([0], np.int64), "s2": np.array([2], np.int64)}.items()]
    return make_model(nodes, [vi("x", [2, 5, 6])], [vi("y", [2, 5, 2, 4])], inits)


def test_shape_arithmetic_with_any_onnx_op_folds_and_matches_onnxruntime():
    model = shape_arithmetic_model()
    net = parse(model)
    kinds = sorted({layer.kind for layer in net.layers})
    # Only the run-time path remains: Pad, the mask add (its operand a constant), the reshape.
    assert kinds == sorted({LayerKind.PADDING, LayerKind.ELEMENTWISE, LayerKind.SHUFFLE, LayerKind.CONSTANT})
    x = np.random.default_rng(1).standard_normal((2, 5, 6)).astype(np.float32)
    got = execute(net, {"x": x})["y"]
    want = run_ort(model, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert (got[..., 1, 2:] == -100.0).all()  # the padded columns really were masked


def test_if_on_a_known_condition_folds_with_its_outer_scope_values():
    then = helper.make_graph([helper.make_node("Add", ["k", "k"], ["r1"])], "then", [], [vi("r1", None, I64)])
    other = helper.make_graph([helper.make_node("Neg", ["k"], ["r2"])], "else", [], [vi("r2", None, I64)])
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "i0"], ["b"], axis=0),
             helper.make_node("Equal", ["b", "two"], ["c"]),
             helper.make_node("Mul", ["s", "one"], ["k"]),
             helper.make_node("If", ["c"], ["shape2"], then_branch=then, else_branch=other),
             helper.make_node("Div", ["shape2", "two"], ["shape3"]),
             helper.make_node("Reshape", ["x", "shape3"], ["y"])]
    inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in
             {"i0": 0, "two": 2, "one": 1}.items()]
    model = make_model(nodes, [vi("x", [2, 6])], [vi("y", [2, 6])], inits)
    net = parse(model)
    assert [layer.kind for layer in net.layers] == [LayerKind.SHUFFLE]
    x = np.random.default_rng(2).standard_normal((2, 6)).astype(np.float32)
    np.testing.assert_array_equal(execute(net, {"x": x})["y"], run_ort(model, {"x": x})[0])


def test_three_unsupported_ops_are_all_reported_with_domain_and_opset():
    """Hardmax feeds Mod (run-time input: not foldable), a com.microsoft op sits on a parallel branch."""
    n = helper.make_node
    nodes = [n("Hardmax", ["x"], ["h"], name="hm"),
             n("Mod", ["h", "m"], ["r"], name="mod_a", fmod=1),
             n("Relu", ["r"], ["rr"], name="relu_after"),  # supported, but depends on Mod: skipped
             n("FusedGemm", ["x", "x"], ["g"], name="fg", domain="com.microsoft"),
             n("Det", ["sq"], ["d"], name="det_1"),
             n("Add", ["rr", "g"], ["y"], name="add")]
    model = make_model(nodes, [vi("x", [3, 3]), vi("sq", [2, 3, 3])], [vi("y", [3, 3]), vi("d", [2])],
                       [numpy_helper.from_array(np.array(2.0, np.float32), "m")],
                       extra_opsets=[helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(UnsupportedOpsError) as info:
        parse(model)
    err = info.value
    assert isinstance(err, UnsupportedError)
    got = [(u.node, u.op_type, u.domain, u.opset) for u in err.nodes]
    assert got == [("hm", "Hardmax", "ai.onnx", 17), ("mod_a", "Mod", "ai.onnx", 17),
                   ("fg", "FusedGemm", "com.microsoft", 1), ("det_1", "Det", "ai.onnx", 17)]
    text = str(err)
    assert text.startswith("4 node(s) of the model use ops hetrt does not support")
    assert "node 'fg' (op FusedGemm, domain com.microsoft, opset 1): operators of domain 'com.microsoft'" in text
    assert "node 'det_1' (op Det, domain ai.onnx, opset 17): op type Det is not supported by hetrt" in text
    assert "relu_after" not in text and "'add'" not in text


def test_shape_of_a_tensor_behind_an_unsupported_op_still_folds():
    """Only the blocking op is reported: the Mod over its (statically known) shape folds."""
    n = helper.make_node
    nodes = [n("Hardmax", ["x"], ["h"], name="hm"),
             n("Shape", ["h"], ["s"], name="shape_h"),
             n("Mod", ["s", "big"], ["s2"], name="mod_shape"),
             n("Reshape", ["h", "s2"], ["y"], name="rs")]
    model = make_model(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])],
                       [numpy_helper.from_array(np.array([7, 7], np.int64), "big")])
    with pytest.raises(UnsupportedOpsError) as info:
        parse(model)
    assert [u.node for u in info.value.nodes] == ["hm"]


def test_random_ops_are_never_folded():
    nodes = [helper.make_node("RandomNormal", [], ["r"], shape=[2, 3], name="rn"),
             helper.make_node("Add", ["x", "r"], ["y"])]
    model = make_model(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])])
    with pytest.raises(UnsupportedOpsError, match=r"node 'rn' \(op RandomNormal, domain ai.onnx, opset 17\).*"
                                                  r"random values at run time"):
        parse(model)


def test_unsupported_feature_of_a_supported_op_is_listed_with_the_others():
    nodes = [helper.make_node("MaxPool", ["x"], ["p", "idx"], kernel_shape=[2, 2], strides=[2, 2],
                                name="mp"),
             helper.make_node("Hardmax", ["p"], ["y"], name="hm")]
    model = make_model(nodes, [vi("x", [1, 1, 4, 4])],
                       [vi("y", [1, 1, 2, 2]), vi("idx", [1, 1, 2, 2], I64)])
    with pytest.raises(UnsupportedOpsError) as info:
        parse(model)
    assert [u.node for u in info.value.nodes] == ["mp", "hm"]
    assert "Indices" in info.value.nodes[0].reason


def test_folded_values_keep_onnx_integer_semantics():
    """int64 arithmetic beyond float32's 24-bit mantissa stays exact when folded."""
    big = np.array([2**40 + 1], np.int64)
    nodes = [helper.make_node("Mul", ["a", "b"], ["c"]), helper.make_node("Sub", ["c", "a2"], ["d"]),
             helper.make_node("Add", ["x", "d"], ["y"])]
    inits = [numpy_helper.from_array(v, k) for k, v in
             {"a": big, "b": np.array([3], np.int64), "a2": 3 * big - 5}.items()]
    model = make_model(nodes, [vi("x", [1], I64)], [vi("y", [1], I64)], inits)
    net = parse(model)
    x = np.array([1], np.int64)
    np.testing.assert_array_equal(execute(net, {"x": x})["y"], [6])
    assert onnx.checker.check_model(model) is None


def test_a_later_parse_error_is_reported_after_the_unsupported_nodes():
    """The unsupported nodes stay the headline; the error conversion met afterwards is appended."""
    nodes = [helper.make_node("Hardmax", ["x"], ["h"], name="hm"),
             helper.make_node("Cast", ["v"], ["shp"], to=I64, name="to_int"),
             helper.make_node("Reshape", ["x", "shp"], ["y"], name="rs")]
    model = make_model(nodes, [vi("x", [2, 6]), vi("v", [2])], [vi("h", [2, 6]), vi("y", [3, 4])])
    with pytest.raises(UnsupportedOpsError, match=r"(?s)node 'hm' \(op Hardmax.*conversion then stopped at: "
                                                  r"node 'rs' \(op Reshape, opset 17\): input 1 'shp'") as info:
        parse(model)
    assert [u.node for u in info.value.nodes] == ["hm"]


def test_identity_of_a_constant_shares_its_constant_layer():
    w = numpy_helper.from_array(np.random.default_rng(4).standard_normal((2, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Identity", ["w"], ["w2"]), helper.make_node("Add", ["x", "w"], ["a"]),
             helper.make_node("Mul", ["a", "w2"], ["y"])]
    model = make_model(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])], [w])
    net = parse(model)
    assert [layer.kind for layer in net.layers].count(LayerKind.CONSTANT) == 1
    x = np.random.default_rng(5).standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_allclose(execute(net, {"x": x})["y"], run_ort(model, {"x": x})[0], rtol=1e-6)
