"""Activation, ParametricReLU, Scale, ElementWise, Unary and fused Pointwise chains."""

from __future__ import annotations

import numpy as np
import pytest
from refhelp import assert_close, assert_fp16_close, ort_single, randn, rng, run_single, seed_of
from scipy import special

from engine.ir.dtypes import Precision
from engine.ir.layers import (
    ActivationParams,
    ActivationSpec,
    ActivationType,
    ElementWiseOp,
    ElementWiseParams,
    ParametricReLUParams,
    PointwiseParams,
    PointwiseStep,
    ScaleMode,
    ScaleParams,
    UnaryOp,
    UnaryParams,
)

A = ActivationType
# activation -> (alpha, beta, ONNX op, ONNX attributes or None for a float64 formula)
ACTIVATIONS = {
    A.RELU: (0.0, 0.0, "Relu", {}),
    A.LEAKY_RELU: (0.13, 0.0, "LeakyRelu", {"alpha": 0.13}),
    A.CLIP: (-0.7, 1.1, "Clip", None),
    A.SIGMOID: (0.0, 0.0, "Sigmoid", {}),
    A.TANH: (0.0, 0.0, "Tanh", {}),
    A.HARD_SIGMOID: (0.3, 0.45, "HardSigmoid", {"alpha": 0.3, "beta": 0.45}),
    A.HARD_SWISH: (0.0, 0.0, "HardSwish", {}),
    A.SILU: (0.0, 0.0, None, None),
    A.GELU_ERF: (0.0, 0.0, "Gelu", {"approximate": "none"}),
    A.GELU_TANH: (0.0, 0.0, "Gelu", {"approximate": "tanh"}),
    A.SOFTPLUS: (0.0, 0.0, "Softplus", {}),
    A.SOFTSIGN: (0.0, 0.0, "Softsign", {}),
    A.ELU: (0.8, 0.0, "Elu", {"alpha": 0.8}),
    A.SELU: (1.67, 1.05, "Selu", {"alpha": 1.67, "gamma": 1.05}),
    A.CELU: (0.6, 0.0, "Celu", {"alpha": 0.6}),
    A.THRESHOLDED_RELU: (0.4, 0.0, "ThresholdedRelu", {"alpha": 0.4}),
    A.MISH: (0.0, 0.0, "Mish", {}),
}


def test_every_activation_is_covered():
    assert set(ACTIVATIONS) == set(ActivationType)


def _activation_oracle(t: ActivationType, x: np.ndarray) -> np.ndarray:
    alpha, beta, op, attrs = ACTIVATIONS[t]
    if t is A.CLIP:
        return ort_single("Clip", [x, np.float32(alpha), np.float32(beta)], const_inputs=[1, 2])[0]
    if t is A.SILU:
        x64 = x.astype(np.float64)
        return (x64 / (1.0 + np.exp(-x64))).astype(np.float32)
    return ort_single(op, [x], attrs)[0]


@pytest.mark.parametrize("t", list(ActivationType))
def test_activation_matches_oracle(t):
    g = rng(seed_of("act", t))
    x = (randn(g, 3, 4, 5, 6) * 4).astype(np.float32)
    alpha, beta, _, _ = ACTIVATIONS[t]
    want = _activation_oracle(t, x)
    params = ActivationParams(ActivationSpec(t, alpha, beta))
    assert_close(run_single(params, [x])[0], want, rtol=2e-5)
    assert_fp16_close(run_single(params, [x], precision=Precision.FP16)[0], want)


def test_parametric_relu_broadcast_slope():
    g = rng(1)
    x, slope = randn(g, 2, 5, 4, 3), randn(g, 5, 1, 1)
    want = ort_single("PRelu", [x, slope], const_inputs=[1])[0]
    assert_close(run_single(ParametricReLUParams(), [x], {"slope": slope})[0], want)


@pytest.mark.parametrize("mode", list(ScaleMode))
@pytest.mark.parametrize("parts", [("scale",), ("shift",), ("power",), ("scale", "shift"), ("scale", "shift", "power")])
def test_scale(mode, parts):
    g = rng(seed_of(mode, parts))
    x = randn(g, 2, 3, 4, 5)
    shape = {ScaleMode.UNIFORM: (1,), ScaleMode.CHANNEL: (3,), ScaleMode.ELEMENTWISE: (3, 4, 5)}[mode]
    w = {"scale": randn(g, *shape), "shift": randn(g, *shape),
         "power": g.integers(1, 4, size=shape).astype(np.float32)}
    w = {k: v for k, v in w.items() if k in parts}
    bshape = {ScaleMode.UNIFORM: (1, 1, 1, 1), ScaleMode.CHANNEL: (1, 3, 1, 1),
              ScaleMode.ELEMENTWISE: (1, 3, 4, 5)}[mode]
    c = {k: v.astype(np.float64).reshape(bshape) for k, v in w.items()}
    want = (x * c.get("scale", 1.0) + c.get("shift", 0.0)) ** c.get("power", 1.0)
    got = run_single(ScaleParams(mode), [x], w)[0]
    assert_close(got, want.astype(np.float32))


def test_scale_channel_axis_last():
    g = rng(2)
    x, s, b = randn(g, 2, 3, 4), randn(g, 4), randn(g, 4)
    want = x.astype(np.float64) * s + b
    assert_close(run_single(ScaleParams(ScaleMode.CHANNEL, channel_axis=-1), [x], {"scale": s, "shift": b})[0],
                 want.astype(np.float32))


E = ElementWiseOp
ONNX_BINARY = {E.SUM: "Add", E.SUB: "Sub", E.PROD: "Mul", E.DIV: "Div", E.MAX: "Max", E.MIN: "Min",
               E.POW: "Pow", E.EQUAL: "Equal", E.GREATER: "Greater", E.LESS: "Less", E.AND: "And",
               E.OR: "Or", E.XOR: "Xor"}
SHAPES = [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (3, 1)), ((1, 4), (3, 1)), ((5,), (2, 1, 5)), ((2, 1, 4), ())]


def _binary_inputs(op, sa, sb, dtype, g):
    if op.is_logical:
        return g.random(sa) > 0.5, g.random(sb) > 0.5
    if dtype == np.int32:
        a = g.integers(-20, 20, size=sa).astype(np.int32)
        b = g.integers(-6, 7, size=sb).astype(np.int32)
        if op is E.POW:
            b = np.abs(b) % 4
        if op is E.DIV:
            b[b == 0] = 3
        return a, b
    a, b = randn(g, *sa), randn(g, *sb)
    if op is E.POW:
        a = np.abs(a) + 0.1
    if op is E.EQUAL:
        b = np.asarray(np.round(b))  # make equality happen
        a = np.round(a)
    return a, b


@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("op", list(ElementWiseOp))
def test_elementwise_float_and_bool(op, shapes):
    g = rng(seed_of(op, shapes))
    a, b = _binary_inputs(op, *shapes, np.float32, g)
    want = ort_single(ONNX_BINARY[op], [a, b])[0]
    got = run_single(ElementWiseParams(op), [a, b])[0]
    assert_close(got, want)
    if not op.is_logical:
        got16 = run_single(ElementWiseParams(op), [a, b], precision=Precision.FP16)[0]
        if op.is_comparison:
            # compared after rounding to fp16: the same result as comparing the rounded values
            a16, b16 = a.astype(np.float16), b.astype(np.float16)
            assert np.array_equal(got16, ort_single(ONNX_BINARY[op], [a16, b16])[0])
        else:
            assert_fp16_close(got16, want)


@pytest.mark.parametrize("op", [E.SUM, E.SUB, E.PROD, E.DIV, E.MAX, E.MIN, E.POW, E.EQUAL, E.GREATER, E.LESS])
def test_elementwise_int32(op):
    g = rng(seed_of("int", op))
    a, b = _binary_inputs(op, (4, 6), (6,), np.int32, g)
    want = ort_single(ONNX_BINARY[op], [a, b])[0]
    got = run_single(ElementWiseParams(op), [a, b])[0]
    assert got.dtype == want.dtype
    assert np.array_equal(got, want)


def test_integer_division_truncates_toward_zero():
    g = rng(5)
    a = g.integers(-50, 50, size=200).astype(np.int64)
    b = g.integers(1, 9, size=200).astype(np.int64) * g.choice([-1, 1], size=200)
    got = run_single(ElementWiseParams(E.DIV), [a, b])[0]
    assert np.array_equal(got, np.trunc(a / b).astype(np.int64))
    assert np.array_equal(got, ort_single("Div", [a, b])[0])


def test_integer_pow_negative_exponent():
    a = np.array([2, -1, 1, -1, 3, -2], dtype=np.int32)
    b = np.array([-1, -3, -2, -2, 2, 3], dtype=np.int32)
    got = run_single(ElementWiseParams(E.POW), [a, b])[0]
    want = np.trunc(a.astype(np.float64) ** b.astype(np.float64)).astype(np.int32)
    assert np.array_equal(got, want)


def test_bool_arithmetic_is_refused():
    """Shape inference refuses it when the layer is added (the kernel would refuse it too)."""
    from engine.ir.errors import NetworkError

    a = np.array([True, False])
    with pytest.raises(NetworkError, match="bool"):
        run_single(ElementWiseParams(E.SUM), [a, a])


U = UnaryOp
ONNX_UNARY = {U.ABS: "Abs", U.NEG: "Neg", U.SQRT: "Sqrt", U.EXP: "Exp", U.LOG: "Log", U.RECIPROCAL: "Reciprocal",
              U.FLOOR: "Floor", U.CEIL: "Ceil", U.ROUND: "Round", U.SIGN: "Sign", U.SIN: "Sin", U.COS: "Cos",
              U.TAN: "Tan", U.ASIN: "Asin", U.ACOS: "Acos", U.ATAN: "Atan", U.SINH: "Sinh", U.COSH: "Cosh",
              U.ERF: "Erf", U.NOT: "Not"}


def _unary_input(op: UnaryOp, g) -> np.ndarray:
    if op is U.NOT:
        return g.random((3, 7)) > 0.5
    x = randn(g, 3, 7) * 2
    if op in (U.SQRT, U.LOG, U.RECIPROCAL):
        x = np.abs(x) + 0.05
    elif op in (U.ASIN, U.ACOS):
        x = np.tanh(x)
    elif op is U.ROUND:
        x = np.concatenate([x, np.arange(-5, 5, dtype=np.float32)[None].repeat(3, 0) + 0.5], axis=1)
    elif op is U.SIGN:
        x[0, :3] = 0.0
    return x.astype(np.float32)


def test_every_unary_is_covered():
    assert set(ONNX_UNARY) == set(UnaryOp)


@pytest.mark.parametrize("op", list(UnaryOp))
def test_unary_matches_onnxruntime(op):
    x = _unary_input(op, rng(seed_of("unary", op)))
    want = ort_single(ONNX_UNARY[op], [x])[0]
    got = run_single(UnaryParams(op), [x])[0]
    assert_close(got, want, rtol=2e-6 if op is not U.ERF else 1e-5)
    if op is not U.NOT:
        assert_fp16_close(run_single(UnaryParams(op), [x], precision=Precision.FP16)[0],
                          ort_single(ONNX_UNARY[op], [x.astype(np.float16).astype(np.float32)])[0])


def test_round_is_half_to_even():
    x = np.arange(-6, 6, dtype=np.float32) + 0.5
    got = run_single(UnaryParams(U.ROUND), [x])[0]
    # independent oracle: the even neighbour of each exact half
    lo = np.floor(x)
    want = np.where(lo % 2 == 0, lo, lo + 1).astype(np.float32)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("op", [U.ABS, U.NEG, U.SIGN])
def test_unary_on_integers(op):
    x = rng(seed_of("iu", op)).integers(-9, 9, size=(4, 5)).astype(np.int32)
    assert np.array_equal(run_single(UnaryParams(op), [x])[0], ort_single(ONNX_UNARY[op], [x])[0])


def _chain_oracle(x, y, w):
    x, y, w = (a.astype(np.float64) for a in (x, y, w))
    v = x * w                                   # elementwise prod with a weight
    v = v + y                                   # elementwise sum with input 1
    v = np.where(v >= 0, v, 0.2 * v)            # leaky relu
    v = np.abs(v)                               # unary abs
    return y - v                                # reversed sub


def test_pointwise_chain_matches_step_by_step_oracle():
    g = rng(21)
    x, y, w = randn(g, 2, 3, 4), randn(g, 3, 4), randn(g, 1, 4)
    steps = (PointwiseStep("elementwise", "prod", operand_weight="w"),
             PointwiseStep("elementwise", "sum", operand_input=1),
             PointwiseStep("activation", "leaky_relu", alpha=0.2),
             PointwiseStep("unary", "abs"),
             PointwiseStep("elementwise", "sub", operand_input=1, reverse=True))
    got = run_single(PointwiseParams(steps), [x, y], {"w": w})[0]
    want = _chain_oracle(x, y, w)
    assert_close(got, want.astype(np.float32))
    assert_fp16_close(run_single(PointwiseParams(steps), [x, y], {"w": w}, precision=Precision.FP16)[0],
                      want.astype(np.float32))


@pytest.mark.parametrize("t", [A.SIGMOID, A.GELU_ERF, A.MISH, A.HARD_SWISH, A.SELU])
def test_pointwise_activation_steps_equal_activation_layers(t):
    g = rng(seed_of("pw", t))
    x, b = randn(g, 4, 9), randn(g, 9)
    alpha, beta, _, _ = ACTIVATIONS[t]
    steps = (PointwiseStep("elementwise", "div", operand_weight="b", reverse=True),
             PointwiseStep("activation", t.value, alpha=alpha, beta=beta),
             PointwiseStep("unary", "exp"))
    got = run_single(PointwiseParams(steps), [x], {"b": b})[0]
    want = np.exp(_activation_oracle(t, (b.astype(np.float64) / x).astype(np.float32)).astype(np.float64))
    assert_close(got, want.astype(np.float32), rtol=5e-5)


def test_gelu_formula_independent_of_onnxruntime():
    x = randn(rng(9), 50) * 3
    x64 = x.astype(np.float64)
    want = 0.5 * x64 * (1 + special.erf(x64 / np.sqrt(2)))
    assert_close(run_single(ActivationParams(ActivationSpec(A.GELU_ERF)), [x])[0], want.astype(np.float32))
