"""DepthToSpace (both modes) and SpaceToDepth against ONNX Runtime on fresh random data, and their
refusals by name."""

from __future__ import annotations

import numpy as np
import onnx.defs
import pytest
from onnx import TensorProto, helper

from backends.reference import execute
from engine.ir.errors import ParserError
from engine.onnx_parser import parse

F32 = TensorProto.FLOAT


def _model(op: str, shape, out_shape, opset: int = 17, **attrs):
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", F32, shape)],
                              [helper.make_tensor_value_info("y", F32, out_shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("op,shape,out,attrs", [
    ("DepthToSpace", (2, 12, 3, 5), (2, 3, 6, 10), {"blocksize": 2}),
    ("DepthToSpace", (2, 12, 3, 5), (2, 3, 6, 10), {"blocksize": 2, "mode": "CRD"}),
    ("DepthToSpace", (1, 27, 2, 2), (1, 3, 6, 6), {"blocksize": 3, "mode": "DCR"}),
    ("SpaceToDepth", (2, 3, 6, 10), (2, 12, 3, 5), {"blocksize": 2}),
    ("SpaceToDepth", (1, 2, 9, 6), (1, 18, 3, 2), {"blocksize": 3}),
])
def test_matches_onnxruntime(op, shape, out, attrs):
    ort = pytest.importorskip("onnxruntime")
    model = _model(op, shape, out, **attrs)
    x = np.random.default_rng().standard_normal(shape).astype(np.float32)
    got = execute(parse(model), {"x": x})["y"]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, want)  # pure data movement: exact


def test_round_trip_is_the_identity():
    """SpaceToDepth orders channels as (block row, block column, channel): DCR undoes it."""
    x = np.random.default_rng().standard_normal((2, 3, 6, 4)).astype(np.float32)
    down = execute(parse(_model("SpaceToDepth", x.shape, (2, 12, 3, 2), blocksize=2)), {"x": x})["y"]
    up = execute(parse(_model("DepthToSpace", down.shape, x.shape, blocksize=2, mode="DCR")), {"x": down})["y"]
    np.testing.assert_array_equal(up, x)


def test_space_to_depth_crd_mode_is_undone_by_depth_to_space_crd():
    """SpaceToDepth's mode attribute (added in a recent opset)."""
    schema = onnx.defs.get_schema("SpaceToDepth")
    if "mode" not in schema.attributes:
        pytest.skip("this onnx has no SpaceToDepth mode attribute")
    opset = schema.since_version
    x = np.random.default_rng().standard_normal((2, 3, 6, 4)).astype(np.float32)
    down = execute(parse(_model("SpaceToDepth", x.shape, (2, 12, 3, 2), opset=opset, blocksize=2, mode="CRD")),
                   {"x": x})["y"]
    want = x.reshape(2, 3, 3, 2, 2, 2).transpose(0, 1, 3, 5, 2, 4).reshape(2, 12, 3, 2)
    np.testing.assert_array_equal(down, want)
    up = execute(parse(_model("DepthToSpace", down.shape, x.shape, blocksize=2, mode="CRD")), {"x": down})["y"]
    np.testing.assert_array_equal(up, x)


@pytest.mark.parametrize("op,shape,out,attrs,says", [
    ("DepthToSpace", (1, 6, 2, 2), (1, 1, 4, 4), {"blocksize": 2}, "not divisible by blocksize"),
    ("SpaceToDepth", (1, 2, 5, 4), (1, 8, 2, 2), {"blocksize": 2}, "not divisible by blocksize"),
    ("DepthToSpace", (1, 8, 2, 2), (1, 2, 4, 4), {"blocksize": 2, "mode": "XYZ"}, "DCR or CRD"),
])
def test_bad_attributes_are_refused_by_name(op, shape, out, attrs, says):
    with pytest.raises(ParserError, match=says):
        parse(_model(op, shape, out, **attrs))
