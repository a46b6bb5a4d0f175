"""ONNX parser: build-time folding, external data, opset handling, error messages, numerics vs onnxruntime."""

from __future__ import annotations

import logging
import os

import numpy as np
import onnx
import onnx.defs
import pytest
from onnx import TensorProto, helper, numpy_helper

from backends.reference import execute
from engine.ir.errors import ExecutionError, ParserError, UnsupportedError
from engine.ir.layers import LayerKind
from engine.onnx_backend import HetrtBackend
from engine.onnx_parser import MAX_OPSET, parse
from engine.onnx_parser.loader import MAX_ACCEPTED_OPSET
from engine.onnx_parser.registry import CONVERTERS

# Converter modules of the float op set (quantization ops are covered by their own tests).
CORE_MODULES = {"ops_conv", "ops_depth", "ops_einsum", "ops_math", "ops_pointwise", "ops_recurrent", "ops_shape",
                "ops_tensor"}

ort = pytest.importorskip("onnxruntime")

F32 = TensorProto.FLOAT
LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def make_model(nodes, inputs, outputs, initializers=(), opset=17, name="m"):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    # Outputs given without a shape get the one onnx's shape inference finds (the checker wants one).
    if all(o.type.tensor_type.HasField("shape") for o in model.graph.output):
        return model
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for out in model.graph.output:
        if not out.type.tensor_type.HasField("shape") and out.name in types:
            out.type.CopyFrom(types[out.name])
    return model


def vi(name, shape, elem=F32):
    return helper.make_tensor_value_info(name, elem, shape)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def run_ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def run_hetrt(model, feeds, **kw):
    net = parse(model, **kw)
    out = execute(net, feeds)
    return net, [out[o.name] for o in model.graph.output]


def assert_close(got, want, rtol=1e-5, atol=1e-5):
    for g, w in zip(got, want):
        assert g.shape == w.shape
        scale = max(1.0, float(np.abs(w).max()) if w.size else 1.0)
        np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol, atol=atol * scale)


rng = np.random.default_rng(0)


def rand(*shape):
    return rng.standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------------------------------------- folding


def pytorch_flatten_model(seed: int = 1):
    """x (N,3,4,4) → Shape → Gather(0) → Unsqueeze → Concat([n, -1]) → Reshape → MatMul W."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"], name="unsqueeze"),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"], name="reshape"),
        helper.make_node("MatMul", ["flat", "W"], ["y"], name="fc"),
    ]
    inits = [init("zero", np.array(0, np.int64)), init("axes0", np.array([0], np.int64)),
             init("minus1", np.array([-1], np.int64)),
             init("W", np.random.default_rng(seed).standard_normal((48, 5)).astype(np.float32))]
    return make_model(nodes, [vi("x", ["N", 3, 4, 4])], [vi("y", ["N", 5])], inits)


def test_dynamic_batch_shape_chain_folds_to_static_reshape():
    model = pytorch_flatten_model()
    net = parse(model, batch=2)
    kinds = [layer.kind for layer in net.layers]
    assert kinds == [LayerKind.SHUFFLE, LayerKind.FULLY_CONNECTED]
    assert net.layers[0].params.reshape == (2, 48)
    assert net.tensor("x").shape == (2, 3, 4, 4)
    assert net.layers[0].name == "reshape" and net.layers[0].origin == ["reshape"]
    x = rand(2, 3, 4, 4)
    _, got = run_hetrt(model, {"x": x}, batch=2)
    assert_close(got, run_ort(model, {"x": x}))


def test_input_shapes_override_and_unresolved_dim():
    model = pytorch_flatten_model()
    assert parse(model, input_shapes={"x": (3, 3, 4, 4)}).tensor("y").shape == (3, 5)
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    with pytest.raises(ParserError, match=r"graph input 'x' dim 2 \('H'\)"):
        parse(model)


def test_constant_of_shape_weights_fold_into_conv():
    nodes = [helper.make_node("ConstantOfShape", ["wshape"], ["w"], value=numpy_helper.from_array(
                 np.array([0.5], np.float32))),
             helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    model = make_model(nodes, [vi("x", [1, 2, 5, 5])], [vi("y", [1, 4, 5, 5])],
                       [init("wshape", np.array([4, 2, 3, 3], np.int64))])
    net = parse(model)
    assert [layer.kind for layer in net.layers] == [LayerKind.CONVOLUTION]
    assert np.all(net.layers[0].weights["kernel"] == 0.5)


def test_batchnorm_becomes_channel_scale_with_origin():
    c = 3
    inits = [init("g", rand(c)), init("b", rand(c)), init("mu", rand(c)),
             init("var", np.abs(rand(c)) + 0.1)]
    node = helper.make_node("BatchNormalization", ["x", "g", "b", "mu", "var"], ["y"], name="bn1", epsilon=1e-3)
    model = make_model([node], [vi("x", [2, c, 4, 4])], [vi("y", [2, c, 4, 4])], inits)
    x = rand(2, c, 4, 4)
    net, got = run_hetrt(model, {"x": x})
    assert net.layers[0].kind is LayerKind.SCALE and net.layers[0].origin == ["bn1"]
    assert_close(got, run_ort(model, {"x": x}))


def test_shape_output_of_static_tensor_is_a_constant_output():
    model = make_model([helper.make_node("Shape", ["x"], ["s"], start=1)], [vi("x", [2, 3, 4])],
                       [vi("s", [2], TensorProto.INT64)])
    net, got = run_hetrt(model, {"x": rand(2, 3, 4)})
    assert net.outputs == ["s"] and list(got[0]) == [3, 4]


# ----------------------------------------------------------------------------------------------- numerics


CASES = [
    ("conv_same_upper_strided", [helper.make_node("Conv", ["x", "w", "b"], ["y"], auto_pad="SAME_UPPER",
                                                  strides=[2, 2])],
     {"x": (1, 3, 7, 8)}, {"w": (4, 3, 3, 3), "b": (4,)}),
    ("conv_asym_pads_dilated_grouped", [helper.make_node("Conv", ["x", "w"], ["y"], pads=[0, 1, 2, 1],
                                                         dilations=[2, 1], group=2)],
     {"x": (1, 4, 9, 9)}, {"w": (6, 2, 3, 3)}),
    ("conv1d", [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1])], {"x": (2, 3, 10)}, {"w": (5, 3, 3)}),
    ("convtranspose_output_shape", [helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[3, 2],
                                                     output_shape=[10, 8])],
     {"x": (1, 1, 3, 3)}, {"w": (1, 2, 3, 3)}),
    ("convtranspose_pads_opad", [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2],
                                                  pads=[1, 0, 1, 1], output_padding=[1, 1])],
     {"x": (1, 2, 4, 4)}, {"w": (2, 3, 3, 3), "b": (3,)}),
    ("maxpool_ceil", [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                       ceil_mode=1)], {"x": (1, 2, 8, 8)}, {}),
    ("avgpool_pads_exclude", [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3],
                                               pads=[1, 1, 1, 1])], {"x": (1, 2, 6, 6)}, {}),
    ("gemm_transA_matrix_c", [helper.make_node("Gemm", ["a", "w", "c"], ["y"], transA=1, alpha=0.5, beta=2.0)],
     {"a": (4, 3)}, {"w": (4, 5), "c": (3, 5)}),
    ("gemm_transB_vector_c", [helper.make_node("Gemm", ["a", "w", "c"], ["y"], transB=1)],
     {"a": (3, 4)}, {"w": (5, 4), "c": (5,)}),
    ("matmul_runtime", [helper.make_node("MatMul", ["a", "b"], ["y"])], {"a": (2, 3, 4), "b": (4, 5)}, {}),
    ("softmax_v13_axis1", [helper.make_node("Softmax", ["x"], ["y"], axis=1)], {"x": (2, 3, 4)}, {}),
    ("layernorm", [helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=-2)],
     {"x": (2, 3, 4)}, {"s": (3, 4), "b": (3, 4)}),
    ("instancenorm", [helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"])],
     {"x": (2, 3, 4, 5)}, {"s": (3,), "b": (3,)}),
    ("prelu", [helper.make_node("PRelu", ["x", "s"], ["y"])], {"x": (2, 3, 4, 4)}, {"s": (3, 1, 1)}),
    ("mean3", [helper.make_node("Mean", ["a", "b", "c"], ["y"])], {"a": (2, 3), "b": (3,), "c": (2, 1)}, {}),
    ("gelu_tanh", [helper.make_node("Gelu", ["x"], ["y"], approximate="tanh")], {"x": (3, 4)}, {}),
]


@pytest.mark.parametrize("name,nodes,inputs,weights", CASES, ids=[c[0] for c in CASES])
def test_single_op_matches_onnxruntime(name, nodes, inputs, weights):
    feeds = {k: rand(*s) for k, s in inputs.items()}
    inits = [init(k, rand(*s)) for k, s in weights.items()]
    model = make_model(nodes, [vi(k, list(s)) for k, s in inputs.items()], [vi("y", None)], inits, opset=20)
    want = run_ort(model, feeds)
    _, got = run_hetrt(model, feeds)
    assert_close(got, want)


def test_slice_negative_steps_split_num_outputs_pad_axes():
    nodes = [
        helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["s"]),
        helper.make_node("Split", ["s"], ["p0", "p1", "p2"], axis=1, num_outputs=3),
        helper.make_node("Pad", ["p0", "pads", "", "padax"], ["y0"], mode="reflect"),
        helper.make_node("Resize", ["x", "", "scales"], ["y1"], mode="linear"),
    ]
    inits = [init("st", np.array([-1, 100], np.int64)), init("en", np.array([-100, 0], np.int64)),
             init("ax", np.array([3, 2], np.int64)), init("sp", np.array([-2, -1], np.int64)),
             init("pads", np.array([1, 2], np.int64)), init("padax", np.array([3], np.int64)),
             init("scales", np.array([1, 1, 2, 1.5], np.float32))]
    model = make_model(nodes, [vi("x", [1, 8, 6, 8])], [vi("y0", None), vi("y1", None), vi("p2", None)], inits,
                       opset=18)
    x = rand(1, 8, 6, 8)
    _, got = run_hetrt(model, {"x": x})
    assert_close(got, run_ort(model, {"x": x}))


def test_softmax_opset11_flattens_at_axis():
    model = make_model([helper.make_node("LogSoftmax", ["x"], ["y"], axis=1)], [vi("x", [2, 3, 4])],
                       [vi("y", [2, 3, 4])], opset=11)
    x = rand(2, 3, 4)
    _, got = run_hetrt(model, {"x": x})
    assert_close(got, run_ort(model, {"x": x}))


# ----------------------------------------------------------------------------------------------- files and opsets


def test_external_data_model_loads(tmp_path):
    model = pytorch_flatten_model()
    path = tmp_path / "ext.onnx"
    onnx.save_model(pytorch_flatten_model(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").exists()
    x = rand(1, 3, 4, 4)
    out = execute(parse(path), {"x": x})
    assert_close([out["y"]], run_ort(model, {"x": x}))
    shallow = onnx.load(str(path), load_external_data=False)
    with pytest.raises(ParserError, match="external file"):
        parse(shallow)


def test_not_an_onnx_file_names_the_file(tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x00\x01 definitely not protobuf \xff" * 10)
    with pytest.raises(ParserError, match="garbage.onnx"):
        parse(bad)
    with pytest.raises(ParserError, match="does not exist"):
        parse(tmp_path / "missing.onnx")


def test_opset9_light_model_parses_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="hetrt.onnx_parser"):
        net = parse(os.path.join(LIGHT, "light_squeezenet.onnx"))
    assert "converted to opset" in caplog.text
    assert net.count(LayerKind.CONVOLUTION) == 26
    assert net.inputs == ["data_0"]  # initializers listed as graph inputs are constants


def test_newer_opsets_change_only_types_of_claimed_ops():
    """Opsets MAX_OPSET+1..MAX_ACCEPTED_OPSET are accepted because claimed ops kept their attributes."""
    allowed_new_attrs = {
        "Range": {"stash_type"},  # only affects float16 accumulation; Range is folded in numpy here
        "Cast": {"round_mode"}, "CastLike": {"round_mode"},  # only for casts to float8e8m0 (rejected)
        "SpaceToDepth": {"mode"},  # DCR / CRD: the converter reads it (DCR, the older order, by default)
    }
    ops = [op for op, fn in CONVERTERS.items() if fn.__module__.rsplit(".", 1)[-1] in CORE_MODULES]
    assert len(ops) >= 100
    for op in ops:
        old = onnx.defs.get_schema(op, MAX_OPSET)
        new = onnx.defs.get_schema(op, MAX_ACCEPTED_OPSET)
        added = set(new.attributes) - set(old.attributes) - allowed_new_attrs.get(op, set())
        assert not added and set(old.attributes) <= set(new.attributes), (op, added)
        assert old.min_input == new.min_input and old.max_output == new.max_output, op


# ----------------------------------------------------------------------------------------------- errors


def test_unsupported_op_names_node_op_and_opset():
    model = make_model([helper.make_node("Hardmax", ["x"], ["y"], name="hm_3")], [vi("x", [2, 3])],
                       [vi("y", [2, 3])], opset=13)
    with pytest.raises(UnsupportedError, match=r"node 'hm_3' \(op Hardmax, domain ai.onnx, opset 13\): op type "
                                               r"Hardmax is not supported by hetrt"):
        parse(model)
    model = make_model([helper.make_node("Foo", ["x"], ["y"], name="conv_17")], [vi("x", [2, 3])],
                       [vi("y", [2, 3])], opset=13)
    with pytest.raises(UnsupportedError, match=r"node 'conv_17' \(op Foo, domain ai.onnx, opset 13\): op type Foo "
                                               r"is not an ONNX operator"):
        parse(model)


def test_foreign_domain_names_node():
    model = make_model([helper.make_node("Gelu", ["x"], ["y"], name="g", domain="com.microsoft")],
                       [vi("x", [2, 3])], [vi("y", [2, 3])])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(UnsupportedError, match=r"node 'g'.*domain 'com.microsoft'"):
        parse(model)


def test_dangling_input_names_node_and_tensor():
    model = make_model([helper.make_node("Relu", ["nowhere"], ["y"], name="r1")], [vi("x", [2])], [vi("y", [2])])
    with pytest.raises(ParserError, match=r"node 'r1' \(op Relu, opset 17\): input 'nowhere' is not a graph input"):
        parse(model)


def test_missing_initializer_for_weights_names_node_and_tensor():
    """Old exports list weights as graph inputs; without the initializer they are run-time values."""
    model = make_model([helper.make_node("Conv", ["x", "W"], ["y"], name="conv1")],
                       [vi("x", [1, 3, 5, 5]), vi("W", [2, 3, 3, 3])], [vi("y", [1, 2, 3, 3])])
    with pytest.raises(ParserError, match=r"node 'conv1' \(op Conv, opset 17\): input 1 'W' \(weights\) must be "
                                          r"known at build time.*graph input with no initializer"):
        parse(model)


def test_non_constant_reshape_shape_names_node_and_input():
    nodes = [helper.make_node("Cast", ["v"], ["shp"], to=TensorProto.INT64, name="to_int"),
             helper.make_node("Reshape", ["x", "shp"], ["y"], name="rs")]
    model = make_model(nodes, [vi("x", [2, 6]), vi("v", [2])], [vi("y", None)])
    with pytest.raises(ParserError, match=r"node 'rs' \(op Reshape, opset 17\): input 1 'shp' \(shape\).*"
                                          r"computed at run time by node 'to_int'"):
        parse(model)


def test_maxpool_indices_output_rejected():
    model = make_model([helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2], name="mp")],
                       [vi("x", [1, 1, 4, 4])], [vi("y", None), vi("idx", None, TensorProto.INT64)])
    with pytest.raises(UnsupportedError, match=r"node 'mp'.*Indices"):
        parse(model)


def test_backend_rejects_wrong_input_shape_and_dtype():
    model = pytorch_flatten_model()
    rep = HetrtBackend.prepare(model)
    with pytest.raises(ExecutionError, match="input 'x'.*shape"):
        rep.run([rand(1, 3, 4, 5)])
    with pytest.raises(ExecutionError, match="input 'x'.*element type"):
        rep.run([rand(1, 3, 4, 4).astype(np.float64)])
    out = rep.run([rand(2, 3, 4, 4)])  # symbolic batch: built for the fed shape
    assert out[0].shape == (2, 5)


def test_backend_binds_parameter_inputs_at_build_time():
    model = make_model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
                       [vi("x", [2, 6]), vi("shape", [2], TensorProto.INT64)], [vi("y", None)])
    rep = HetrtBackend.prepare(model)
    x = rand(2, 6)
    for target in ([3, 4], [4, -1]):
        y = rep.run([x, np.array(target, np.int64)])[0]
        np.testing.assert_array_equal(y, x.reshape(target))


def test_conformance_lists_name_every_claimed_op():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from onnx_conformance_lists import EXCLUDE, NODE_INCLUDE

    core = {op for op, fn in CONVERTERS.items() if fn.__module__.rsplit(".", 1)[-1] in CORE_MODULES}
    assert core <= set(NODE_INCLUDE), sorted(core - set(NODE_INCLUDE))
    assert set(NODE_INCLUDE) - core <= {"Upsample"}
    assert all(reason for _, reason in EXCLUDE)
