"""Models ONNX Runtime refuses are refused by hetrt too, with a ParserError naming node and field
(audit finding 6); onnx's own checker cannot crash hetrt."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from engine.builder import BuilderConfig, build_from_onnx
from engine.ir.errors import ParserError
from engine.ir.logger import Logger, Severity
from engine.onnx_parser import parse

from .models import conv_model, mlp_model, ops_model

QUIET = Logger(Severity.ERROR)


def _ort_refuses(model: onnx.ModelProto) -> bool:
    ort = pytest.importorskip("onnxruntime")
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:
        return True
    return False


def _node(model, name):
    return next(n for n in model.graph.node if n.name == name)


def _attr(node, name):
    return next(a for a in node.attribute if a.name == name)


@pytest.mark.parametrize("value", [-(2**40), -2, 2, 2**40])
def test_gemm_trans_b_must_be_a_flag(value):
    m = mlp_model()
    _attr(_node(m, "fc1"), "transB").i = value
    if abs(value) > 2**31:
        assert _ort_refuses(m)  # ONNX Runtime reads small values as true; hetrt wants the flag 0 or 1
    with pytest.raises(ParserError, match=r"node 'fc1'.*'transB'"):
        parse(m)


@pytest.mark.parametrize("dtype", [np.bool_, np.float16, np.float64, np.int64])
def test_initializer_of_the_wrong_type_is_refused(dtype):
    """A bool/float16 conv weight where float is required was built anyway."""
    m = conv_model()
    w = m.graph.initializer[0]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w).astype(dtype), w.name))
    assert _ort_refuses(m)
    with pytest.raises(ParserError, match="not a valid ONNX model"):
        parse(m)


@pytest.mark.parametrize("elem", [TensorProto.FLOAT16, TensorProto.INT64, TensorProto.DOUBLE])
def test_declared_output_type_is_honoured(elem):
    m = conv_model()
    m.graph.output[0].type.tensor_type.elem_type = elem
    assert _ort_refuses(m)
    with pytest.raises(ParserError, match="graph output 'y'|not a valid ONNX model"):
        parse(m)


def test_declared_output_type_checked_after_conversion():
    from engine.ir.dtypes import DataType
    from engine.onnx_parser import _check_declared_dtype

    vi = onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1])
    with pytest.raises(ParserError, match="graph output 'y' is declared FLOAT16, but the graph computes float32"):
        _check_declared_dtype(vi, DataType.FLOAT)


@pytest.mark.parametrize(("node", "attr", "value", "says"), [
    ("avgpool", "kernel_shape", [0, 3], "must be positive"),
    ("avgpool", "strides", [1, -1], "must be positive"),
    ("avgpool", "count_include_pad", 7, "must be 0 or 1"),
    ("leaky", "alpha", float("nan"), "must be finite"),
])
def test_attribute_ranges_name_node_and_attribute(node, attr, value, says):
    m = ops_model()
    a = _attr(_node(m, node), attr)
    if isinstance(value, list):
        a.ints[:] = value
    elif isinstance(value, float):
        a.f = value
    else:
        a.i = value
    with pytest.raises(ParserError, match=rf"node '{node}'.*attribute '{attr}'.*{says}"):
        parse(m)


def test_non_utf8_string_attribute_is_a_parser_error_not_an_internal_error():
    m = ops_model()
    _attr(_node(m, "pad"), "mode").s = b"\xffreflect"
    with pytest.raises(ParserError, match=r"node 'pad'.*attribute 'mode'.*not UTF-8") as e:
        parse(m)
    assert "internal error" not in str(e.value)


def test_pad_constant_value_must_be_a_scalar():
    m = ops_model()
    pad = _node(m, "pad")
    pad.input.append("bn_s")  # a 4-element float tensor as constant_value: ONNX Runtime fails to run it
    with pytest.raises(ParserError, match=r"node 'pad'.*constant_value must be a scalar"):
        parse(m)


def test_a_crash_of_onnx_shape_inference_is_a_parser_error():
    """A pooling window larger than its input makes onnx's C++ shape inference abort the process
    (an assertion in a later Slice); hetrt runs that check in a child and reports the model."""
    m = ops_model()
    _attr(_node(m, "avgpool"), "kernel_shape").ints[0] = 100
    with pytest.raises(ParserError, match="malformed|not a valid ONNX model"):
        parse(m)


def test_valid_models_still_build_and_match():
    for m in (conv_model(), mlp_model(), ops_model()):
        build_from_onnx(m, BuilderConfig(), QUIET)
