"""ONNX Einsum through the parser (reductions, transposes, batched products) against numpy's einsum
in float64 and ONNX Runtime, on fresh random data; and the cases it refuses by name."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from backends.reference import execute
from engine.ir.errors import UnsupportedError
from engine.ir.layers import LayerKind
from engine.onnx_parser import parse
from engine.onnx_parser.ops_einsum import parse_equation

F32 = TensorProto.FLOAT

CASES = [
    ("ij,jk->ik", [(5, 7), (7, 3)]),
    ("bij,bjk->bik", [(2, 5, 7), (2, 7, 3)]),
    ("bhqd,bhkd->bhqk", [(2, 3, 5, 4), (2, 3, 6, 4)]),  # attention scores
    ("bhqk,bhkd->bhqd", [(2, 3, 5, 6), (2, 3, 6, 4)]),
    ("bhwc,bhkc->bhwk", [(2, 4, 5, 8), (2, 4, 3, 8)]),
    ("nchw,kc->nkhw", [(2, 6, 3, 4), (5, 6)]),  # a 1x1 convolution
    ("abc,cd->abd", [(3, 4, 5), (5, 2)]),
    ("bnhd,hde->bne", [(2, 3, 4, 5), (4, 5, 6)]),  # two labels contracted at once
    ("ij->ji", [(4, 6)]),
    ("ij->i", [(4, 6)]),
    ("ijk->", [(3, 4, 2)]),
    ("i,i->", [(7,), (7,)]),
    ("i,j->ij", [(4,), (3,)]),  # outer product
    ("ij,ij->ij", [(3, 4), (3, 4)]),  # element-wise: a batched 1x1 product
    ("ij,kj->", [(3, 4), (5, 4)]),  # labels summed in one operand before the product
    ("...ij,...jk->...ik", [(2, 3, 4, 5), (2, 3, 5, 6)]),
    ("...ij,jk", [(3, 4, 5), (5, 2)]),  # implicit output with an ellipsis
    ("ij,jk", [(4, 5), (5, 3)]),  # implicit: labels used once, alphabetically
    ("ba,ca", [(4, 5), (3, 5)]),  # implicit output 'bc'
    ("ij,jk,kl->il", [(3, 4), (4, 5), (5, 2)]),
    ("ab,bc,ca->", [(3, 4), (4, 5), (5, 3)]),
]


def _model(equation: str, shapes: list[tuple[int, ...]], const_last: bool = False):
    names = [f"x{i}" for i in range(len(shapes))]
    rng = np.random.default_rng()
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    inputs = [helper.make_tensor_value_info(n, F32, s) for n, s in zip(names, shapes)]
    inits = []
    if const_last:
        inputs.pop()
        inits.append(numpy_helper.from_array(arrays[-1], names[-1]))
    out_shape = np.einsum(equation, *arrays).shape
    node = helper.make_node("Einsum", names, ["y"], equation=equation)
    graph = helper.make_graph([node], "einsum", inputs, [helper.make_tensor_value_info("y", F32, out_shape)],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = dict(zip(names[:len(inputs)], arrays))
    return model, feeds, arrays


@pytest.mark.parametrize("equation,shapes", CASES)
def test_einsum_matches_numpy_and_onnxruntime(equation, shapes):
    model, feeds, arrays = _model(equation, shapes)
    net = parse(model)
    assert LayerKind.GATHER not in {la.kind for la in net.layers}
    got = execute(net, feeds)["y"].astype(np.float64)
    want = np.einsum(equation, *[a.astype(np.float64) for a in arrays])
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(want).max()))
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got, sess.run(None, feeds)[0], rtol=1e-5, atol=1e-5 * max(1.0, np.abs(want).max()))


def test_attention_einsum_is_one_batched_product():
    net = parse(_model("bhqd,bhkd->bhqk", [(2, 3, 5, 4), (2, 3, 6, 4)])[0])
    kinds = [la.kind for la in net.layers]
    assert kinds.count(LayerKind.MATRIX_MULTIPLY) == 1 and LayerKind.REDUCE not in kinds


def test_constant_operand_is_a_weight():
    model, feeds, arrays = _model("nchw,kc->nkhw", [(2, 6, 3, 4), (5, 6)], const_last=True)
    got = execute(parse(model), feeds)["y"]
    np.testing.assert_allclose(got, np.einsum("nchw,kc->nkhw", *arrays), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("equation,shapes,out,says", [
    ("ii->i", [(3, 3)], (3,), "repeated in one operand"),
    ("ij,jk->ik", [(3, 4), (5, 2)], (3, 2), "label 'j' has sizes 4 and 5"),
])
def test_unsupported_equations_are_refused_by_name(equation, shapes, out, says):
    names = [f"x{i}" for i in range(len(shapes))]
    node = helper.make_node("Einsum", names, ["y"], equation=equation)
    graph = helper.make_graph([node], "einsum", [helper.make_tensor_value_info(n, F32, s)
                                                 for n, s in zip(names, shapes)],
                              [helper.make_tensor_value_info("y", F32, out)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with pytest.raises(UnsupportedError, match=says):
        parse(model)


@pytest.mark.parametrize("equation,ranks,says", [
    ("ij,jk->iz", [2, 2], "names a label no operand has"),
    ("ij,jk,kl->il", [2, 2], "3 operands"),
    ("ijk->ij", [2], "does not label"),
    ("ij->ii", [2], "distinct labels"),
    ("i...j...->i", [4], "does not fit"),
])
def test_malformed_equations_name_the_fault(equation, ranks, says):
    """ONNX's checker refuses these models first; the parser's own check says the same."""
    with pytest.raises(ValueError, match=says):
        parse_equation(equation, ranks)


def test_integer_einsum_is_unsupported():
    node = helper.make_node("Einsum", ["a", "b"], ["y"], equation="ij,jk->ik")
    graph = helper.make_graph([node], "einsum", [helper.make_tensor_value_info(n, TensorProto.INT32, (2, 2))
                                                 for n in "ab"],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, (2, 2))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with pytest.raises(UnsupportedError, match="only float operands"):
        parse(model)


def test_parse_equation_expands_ellipses_right_aligned():
    terms, out = parse_equation("...ij,j...->...i", [4, 2])
    assert [len(t) for t in terms] == [4, 2] and len(out) == 3
    # the first operand's two ellipsis dims; the second's one is the last of them
    assert terms[0][:2] == out[:2] and terms[1][1:] == out[1:2] and out[2] == "i"
