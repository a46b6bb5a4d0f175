"""The network IR: validated parameters, shape inference, JSON round trips of every layer kind."""

from __future__ import annotations

import numpy as np
import pytest

from engine.ir.dtypes import DataType
from engine.ir.errors import NetworkError
from engine.ir.layers import (
    PARAMS_BY_KIND,
    ActivationSpec,
    ActivationType,
    ConcatenationParams,
    ConvolutionParams,
    DeconvolutionParams,
    ElementWiseOp,
    ElementWiseParams,
    LayerKind,
    MatrixMultiplyParams,
    PointwiseParams,
    PointwiseStep,
    PoolingParams,
    PoolingType,
    ShuffleParams,
    SliceParams,
    SplitParams,
    matmul_shape,
    params_from_dict,
)
from engine.ir.network import Network

RNG = np.random.default_rng(0)


def conv_params(k=4, kernel=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1), groups=1, **kw):
    return ConvolutionParams(num_output_maps=k, kernel=kernel, stride=stride, pre_padding=pads[:2],
                             post_padding=pads[2:], dilation=dilation, groups=groups, **kw)


@pytest.mark.parametrize("size,k,s,pre,post,d", [(7, 3, 1, 1, 1, 1), (8, 3, 2, 0, 1, 1), (9, 3, 2, 2, 2, 2),
                                                 (5, 1, 1, 0, 0, 1), (11, 5, 3, 1, 0, 2)])
def test_convolution_output_size_matches_jax(size, k, s, pre, post, d):
    import jax

    x = RNG.standard_normal((1, 2, size, size)).astype(np.float32)
    w = RNG.standard_normal((3, 2, k, k)).astype(np.float32)
    ref = jax.lax.conv_general_dilated(x, w, (s, s), [(pre, post), (pre, post)], rhs_dilation=(d, d))
    n = Network()
    t = n.add_input("x", x.shape)
    layer = n.add_layer(conv_params(3, (k, k), (s, s), (pre, pre, post, post), (d, d)), [t], {"kernel": w})
    assert n.tensor(layer.outputs[0]).shape == ref.shape


def test_deconvolution_output_size_formula():
    n = Network()
    x = n.add_input("x", (1, 4, 5, 6))
    p = DeconvolutionParams(num_output_maps=6, kernel=(3, 3), stride=(2, 2), pre_padding=(1, 0),
                            post_padding=(1, 0), dilation=(1, 1), output_padding=(1, 0), groups=2)
    layer = n.add_layer(p, [x], {"kernel": RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)})
    # stride*(in-1) + output_padding + dilation*(k-1) + 1 - pads
    assert n.tensor(layer.outputs[0]).shape == (1, 6, 2 * 4 + 1 + 2 + 1 - 2, 2 * 5 + 0 + 2 + 1 - 0)


def test_pooling_ceil_mode_drops_window_starting_in_padding():
    n = Network()
    x = n.add_input("x", (1, 1, 5, 5))
    p = PoolingParams(PoolingType.MAX, window=(2, 2), stride=(2, 2), pre_padding=(1, 1), post_padding=(1, 1),
                      ceil_mode=True)
    layer = n.add_layer(p, [x])
    # padded 7, (7-2)/2 ceil = 3 -> 4 windows, the last one starts at 6 >= 5+1 so it is dropped
    assert n.tensor(layer.outputs[0]).shape == (1, 1, 3, 3)
    g = n.add_layer(PoolingParams(PoolingType.AVERAGE, global_pool=True), [x])
    assert n.tensor(g.outputs[0]).shape == (1, 1, 1, 1)


@pytest.mark.parametrize("a,b", [((2, 3), (3, 4)), ((3,), (3, 4)), ((5, 2, 3), (3,)), ((1, 4, 2, 3), (6, 1, 3, 5)),
                                 ((3,), (3,))])
def test_matmul_shape_matches_numpy(a, b):
    assert matmul_shape(a, b) == np.matmul(np.ones(a), np.ones(b)).shape


def test_matmul_incompatible_shapes_are_rejected():
    n = Network()
    a = n.add_input("a", (2, 3))
    b = n.add_input("b", (4, 5))
    with pytest.raises(NetworkError, match="incompatible"):
        n.add_layer(MatrixMultiplyParams(), [a, b])


@pytest.mark.parametrize("params,weights,match", [
    (conv_params(groups=3), {"kernel": np.ones((4, 1, 3, 3), np.float32)}, "groups"),
    (conv_params(), {"kernel": np.ones((4, 2, 3, 3), np.float32)}, "kernel weights shape"),
    (conv_params(), {}, "missing weights 'kernel'"),
    (conv_params(stride=(0, 1)), {"kernel": np.ones((4, 4, 3, 3), np.float32)}, "stride"),
    (conv_params(kernel=(3,)), {"kernel": np.ones((4, 4, 3), np.float32)}, "spatial dims"),
    (conv_params(residual=True), {"kernel": np.ones((4, 4, 3, 3), np.float32)}, "second input"),
])
def test_bad_convolution_parameters_name_the_layer(params, weights, match):
    n = Network()
    x = n.add_input("x", (1, 4, 8, 8))
    with pytest.raises(NetworkError, match=match) as e:
        n.add_layer(params, [x], weights, name="bad_conv")
    assert "bad_conv" in str(e.value)


def test_elementwise_broadcasting_and_comparison_dtype():
    n = Network()
    a = n.add_input("a", (2, 1, 4))
    b = n.add_input("b", (3, 1))
    s = n.add_elementwise(a, b, "sum")
    assert s.shape == (2, 3, 4) and s.dtype is DataType.FLOAT
    c = n.tensor(n.add_layer(ElementWiseParams(ElementWiseOp.GREATER), [a, b]).outputs[0])
    assert c.dtype is DataType.BOOL
    with pytest.raises(NetworkError, match="do not broadcast"):
        n.add_elementwise(a, n.add_input("c", (5,)), "sum")


def test_shuffle_slice_split_concat_shapes():
    n = Network()
    x = n.add_input("x", (2, 3, 4))
    y = n.add_layer(ShuffleParams(first_perm=(0, 2, 1), reshape=(2, 12)), [x])
    assert n.tensor(y.outputs[0]).shape == (2, 12)
    with pytest.raises(NetworkError, match="cannot reshape"):
        n.add_layer(ShuffleParams(reshape=(5, 5)), [x])
    s = n.add_layer(SliceParams(start=(1, 2, 3), size=(1, 2, 2), step=(1, -1, -2)), [x])
    assert n.tensor(s.outputs[0]).shape == (1, 2, 2)
    with pytest.raises(NetworkError, match="axis 2"):
        n.add_layer(SliceParams(start=(0, 0, 3), size=(1, 1, 2), step=(1, 1, 1)), [x])
    sp = n.add_layer(SplitParams(axis=1, sizes=(1, 2)), [x])
    assert [n.tensor(t).shape for t in sp.outputs] == [(2, 1, 4), (2, 2, 4)]
    c = n.add_layer(ConcatenationParams(axis=-1), [x, x])
    assert n.tensor(c.outputs[0]).shape == (2, 3, 8)


def test_undefined_input_duplicate_names_and_validate():
    n = Network()
    x = n.add_input("x", (1, 2))
    with pytest.raises(NetworkError, match="'nope' is not defined"):
        n.add_activation("nope", "relu")
    n.add_activation(x, "relu", name="r")
    with pytest.raises(NetworkError, match="already used"):
        n.add_activation(x, "relu", name="r")
    with pytest.raises(NetworkError, match="no marked outputs"):
        n.validate()
    n.mark_output("r")
    n.validate()


def test_sort_restores_topological_order_and_detects_cycles():
    n = Network()
    x = n.add_input("x", (1, 4))
    a = n.add_activation(x, "relu", name="a")
    n.add_activation(a, "sigmoid", name="b")
    n.mark_output("b")
    n.layers.reverse()
    n.sort()
    assert [la.name for la in n.layers] == ["a", "b"]
    n.layers[0].inputs = ["b"]
    with pytest.raises(NetworkError, match="cycle"):
        n.sort()


def _example_params():
    """One instance of every layer kind, with nested values where the kind has them."""
    from engine.ir import layers as L
    from engine.ir import plugin_registry

    relu6 = ActivationSpec(ActivationType.CLIP, 0.0, 6.0)
    return [
        conv_params(activation=relu6, residual=False),
        DeconvolutionParams(2, (2, 2), (2, 2), (0, 0), (0, 0), (1, 1), (1, 1), 1, relu6),
        PoolingParams(PoolingType.AVERAGE, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), True, True),
        L.ActivationParams(relu6), L.ParametricReLUParams(), L.ScaleParams(L.ScaleMode.CHANNEL),
        ElementWiseParams(ElementWiseOp.POW), L.UnaryParams(L.UnaryOp.ERF), L.LRNParams(5, 1e-4, 0.75, 2.0),
        MatrixMultiplyParams(True, False), L.FullyConnectedParams(10, relu6), L.SoftMaxParams(1, True),
        ConcatenationParams(1, True), ShuffleParams((1, 0), (4,), None), SliceParams((0,), (2,), (1,)),
        SplitParams(0, (1, 1)), L.ResizeParams((1, 1, 4, 4), L.ResizeMode.LINEAR, "align_corners", "floor",
                                               (1.0, 1.0, 2.0, 2.0)),
        L.ReduceParams(L.ReduceOp.LOG_SUM_EXP, (1, 2), False), L.PaddingParams((0, 1), (1, 0), L.PaddingMode.REFLECT),
        L.ConstantParams(), L.GatherParams(1), L.CastParams(DataType.HALF), L.NormalizationParams((-1,), 1e-6),
        L.IdentityParams(),
        PointwiseParams((PointwiseStep("activation", "relu"), PointwiseStep("elementwise", "sum", operand_input=1),
                         PointwiseStep("elementwise", "prod", operand_weight="c0", reverse=True))),
        L.QuantizeParams(axis=1), L.DequantizeParams(axis=0),
        *_recurrent_examples(),
        L.PluginParams("Reorg", "1", "hetrt", (("stride", "int", 2), ("s", "floats", (0.5, 1.0)),
                                               ("a", "array", plugin_registry.PluginArray("int32", (2,), (1, 2))))),
    ]


def _recurrent_examples():
    from engine.ir.recurrent import make_params

    return [make_params("rnn", 4, "reverse", ["LeakyRelu"], [0.2], clip=3.0, layout=1),
            make_params("lstm", 4, "bidirectional", runtime_inputs=("sequence_lens", "initial_c"), input_forget=True),
            make_params("gru", 4, activations=["HardSigmoid", "Tanh"], linear_before_reset=True)]


def test_every_layer_kind_round_trips_through_json():
    import json

    examples = _example_params()
    assert {p.kind for p in examples} == set(LayerKind) == set(PARAMS_BY_KIND)
    for p in examples:
        data = json.loads(json.dumps(p.to_dict()))
        assert params_from_dict(p.kind.value, data) == p


def test_params_from_dict_rejects_unknown_fields_and_enums():
    with pytest.raises(ValueError, match="unknown fields"):
        params_from_dict("identity", {"bogus": 1})
    with pytest.raises(ValueError):
        params_from_dict("not_a_kind", {})
    with pytest.raises(ValueError, match="unknown enum"):
        params_from_dict("unary", {"op": {"$enum": "Evil", "v": "x"}})
