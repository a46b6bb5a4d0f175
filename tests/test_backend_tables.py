"""Every layer kind has an entry in every backend's layer table: an implementation or a reason.

Walks each ``LayerKind`` through the reference tables (FP and INT8), the GPU tables (FP and
INT8), the DLA lowering tables (FP16 and INT8) and the DLA's support rules (through
``backends.dla.support.supports`` on one sample layer of each kind: every kind they accept has a
DLA lowering), and checks that the reference backend implements every kind the ONNX parser and
the optimizer can produce, by running a sample layer of each kind against numpy float64.
"""

from __future__ import annotations

import importlib
import pkgutil

import numpy as np
import pytest

import engine.onnx_parser
import engine.optimizer
import engine.plugin  # noqa: F401 (registers the bundled plugins the sample plugin layer uses)
from backends.dla.lower import DLA_INT8_LOWERINGS, DLA_LOWERINGS
from backends.dla.support import supports as dla_supports
from backends.gpu.lower import GPU_LOWERINGS, GpuLowering
from backends.gpu.lower import supports as gpu_supports
from backends.gpu.lower_int8 import INT8_LOWERINGS
from backends.reference import execute
from backends.reference.int8 import INT8_KERNELS
from backends.reference.kernels import KERNELS
from backends.table import Unsupported, check_complete, implemented, lookup
from dla_sim.config import ORIN
from engine.ir.dtypes import DataType, Precision
from engine.ir.errors import UnsupportedError
from engine.ir.layers import (
    ActivationParams,
    ActivationSpec,
    ActivationType,
    CastParams,
    ConcatenationParams,
    ConvolutionParams,
    DeconvolutionParams,
    DequantizeParams,
    ElementWiseOp,
    ElementWiseParams,
    FullyConnectedParams,
    GatherParams,
    IdentityParams,
    LayerKind,
    LayerParams,
    LRNParams,
    MatrixMultiplyParams,
    NormalizationParams,
    PaddingParams,
    ParametricReLUParams,
    PluginParams,
    PointwiseParams,
    PointwiseStep,
    PoolingParams,
    PoolingType,
    QuantizeParams,
    ReduceOp,
    ReduceParams,
    ResizeMode,
    ResizeParams,
    ScaleMode,
    ScaleParams,
    ShuffleParams,
    SliceParams,
    SoftMaxParams,
    SplitParams,
    UnaryOp,
    UnaryParams,
)
from engine.ir.network import Network

TABLES = {"reference": KERNELS, "reference INT8": INT8_KERNELS, "GPU": GPU_LOWERINGS, "GPU INT8": INT8_LOWERINGS,
          "DLA": DLA_LOWERINGS, "DLA INT8": DLA_INT8_LOWERINGS}
X = (1, 8, 6, 6)  # the sample layers' main input


def _w(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _sample(kind: LayerKind, rng: np.random.Generator) -> tuple[LayerParams, list[tuple[int, ...]], dict]:
    """Parameters, input shapes and weights of one small layer of ``kind``."""
    conv = dict(kernel=(3, 3), stride=(1, 1), pre_padding=(1, 1), post_padding=(1, 1), dilation=(1, 1))
    relu = ActivationSpec(ActivationType.RELU)
    samples = {
        LayerKind.CONVOLUTION: (ConvolutionParams(4, **conv), [X], {"kernel": _w(rng, 4, 8, 3, 3), "bias": _w(rng, 4)}),
        LayerKind.DECONVOLUTION: (DeconvolutionParams(4, **conv), [X], {"kernel": _w(rng, 8, 4, 3, 3)}),
        LayerKind.POOLING: (PoolingParams(PoolingType.MAX, (2, 2), (2, 2), (0, 0), (0, 0), (1, 1)), [X], {}),
        LayerKind.ACTIVATION: (ActivationParams(ActivationSpec(ActivationType.SIGMOID)), [X], {}),
        LayerKind.PARAMETRIC_RELU: (ParametricReLUParams(), [X], {"slope": _w(rng, 1, 8, 1, 1)}),
        LayerKind.SCALE: (ScaleParams(ScaleMode.CHANNEL), [X], {"scale": _w(rng, 8), "shift": _w(rng, 8)}),
        LayerKind.ELEMENTWISE: (ElementWiseParams(ElementWiseOp.SUM), [X, X], {}),
        LayerKind.UNARY: (UnaryParams(UnaryOp.ABS), [X], {}),
        LayerKind.LRN: (LRNParams(3, 1e-2, 0.75), [X], {}),
        LayerKind.MATRIX_MULTIPLY: (MatrixMultiplyParams(), [(1, 8, 6, 6), (1, 8, 6, 5)], {}),
        LayerKind.FULLY_CONNECTED: (FullyConnectedParams(5, relu), [(4, 8)], {"kernel": _w(rng, 5, 8)}),
        LayerKind.SOFTMAX: (SoftMaxParams(1), [X], {}),
        LayerKind.CONCATENATION: (ConcatenationParams(1), [X, X], {}),
        LayerKind.SHUFFLE: (ShuffleParams(first_perm=(0, 2, 3, 1)), [X], {}),
        LayerKind.SLICE: (SliceParams((0, 0, 1, 1), (1, 4, 4, 4), (1, 2, 1, 1)), [X], {}),
        LayerKind.SPLIT: (SplitParams(1, (3, 5)), [X], {}),
        LayerKind.RESIZE: (ResizeParams((1, 8, 12, 12), ResizeMode.LINEAR), [X], {}),
        LayerKind.REDUCE: (ReduceParams(ReduceOp.MEAN, (2, 3)), [X], {}),
        LayerKind.PADDING: (PaddingParams((0, 0, 1, 2), (0, 0, 2, 1)), [X], {}),
        LayerKind.CONSTANT: (IdentityParams(), [], {}),  # built with Network.add_constant
        LayerKind.GATHER: (GatherParams(1), [X], {"indices": np.array([3, 0, 7], np.int64)}),
        LayerKind.CAST: (CastParams(DataType.HALF), [X], {}),
        LayerKind.NORMALIZATION: (NormalizationParams((2, 3)), [X], {"scale": _w(rng, 1, 8, 1, 1)}),
        LayerKind.IDENTITY: (IdentityParams(), [X], {}),
        LayerKind.POINTWISE: (PointwiseParams((PointwiseStep("elementwise", "prod", operand_input=1),
                                               PointwiseStep("activation", "relu"))), [X, X], {}),
        LayerKind.QUANTIZE: (QuantizeParams(), [X], {"scale": np.array(0.05, np.float32)}),
        LayerKind.DEQUANTIZE: (DequantizeParams(), [X], {"scale": np.array(0.05, np.float32)}),
        LayerKind.PLUGIN: (PluginParams("Reorg", "1", "hetrt", (("stride", "int", 2),)), [X], {}),
    }
    if kind in RECURRENT_GATES:
        return None, [], {}  # see sample_network
    return samples[kind]


RECURRENT_GATES = {LayerKind.RNN: 1, LayerKind.GRU: 3, LayerKind.LSTM: 4}


def sample_network(kind: LayerKind, rng: np.random.Generator) -> Network:
    """A network of one layer of ``kind`` (after ``Network.add_layer``'s validation)."""
    params, shapes, weights = _sample(kind, rng)
    net = Network(f"one_{kind.value}")
    if kind is LayerKind.CONSTANT:
        net.mark_output(net.add_constant(_w(rng, 2, 3), name="c"))
        return net
    if kind in RECURRENT_GATES:  # built with Network.add_recurrent (it resolves the activations)
        g, h = RECURRENT_GATES[kind], 4
        x = net.add_input("x0", (5, 2, 3))
        for t in net.add_recurrent(kind.value, x, _w(rng, 1, g * h, 3), _w(rng, 1, g * h, h), _w(rng, 1, 2 * g * h),
                                   name="l"):
            net.mark_output(t)
        return net
    dtypes = [DataType.INT8 if kind is LayerKind.DEQUANTIZE else DataType.FLOAT] * len(shapes)
    names = [net.add_input(f"x{i}", s, d).name for i, (s, d) in enumerate(zip(shapes, dtypes))]
    layer = net.add_layer(params, names, weights, name="l")
    for t in layer.outputs:
        net.mark_output(t)
    return net


@pytest.fixture
def rng() -> np.random.Generator:
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print(f"seed {seed}")
    return np.random.default_rng(seed)


@pytest.mark.parametrize("backend", sorted(TABLES))
def test_every_kind_has_an_entry_in_every_table(backend):
    table = TABLES[backend]
    check_complete(table, backend)
    for kind in LayerKind:
        entry = table[kind]
        if isinstance(entry, Unsupported):
            assert entry.reason.strip(), (backend, kind)
        else:
            assert callable(entry) or isinstance(entry, GpuLowering), (backend, kind, entry)


def test_tables_say_what_each_backend_runs():
    assert implemented(KERNELS) == frozenset(LayerKind)
    assert implemented(INT8_KERNELS) == {LayerKind.CONVOLUTION, LayerKind.FULLY_CONNECTED, LayerKind.POOLING,
                                         LayerKind.QUANTIZE, LayerKind.DEQUANTIZE}
    assert implemented(GPU_LOWERINGS) == frozenset(LayerKind) - {LayerKind.QUANTIZE, LayerKind.DEQUANTIZE,
                                                                  LayerKind.RNN, LayerKind.LSTM, LayerKind.GRU,
                                                                  LayerKind.PLUGIN}
    assert implemented(INT8_LOWERINGS) == {LayerKind.CONVOLUTION, LayerKind.FULLY_CONNECTED, LayerKind.POOLING}
    assert implemented(DLA_LOWERINGS) == frozenset(LayerKind) - {
        LayerKind.GATHER, LayerKind.NORMALIZATION, LayerKind.CAST, LayerKind.PADDING, LayerKind.QUANTIZE,
        LayerKind.DEQUANTIZE, LayerKind.PLUGIN, LayerKind.RNN, LayerKind.LSTM, LayerKind.GRU}
    assert implemented(DLA_INT8_LOWERINGS) == {LayerKind.CONVOLUTION, LayerKind.FULLY_CONNECTED, LayerKind.POOLING}


def test_unsupported_needs_a_reason_and_lookup_reports_it():
    with pytest.raises(ValueError):
        Unsupported("  ")
    with pytest.raises(ValueError, match="identity"):
        check_complete({k: Unsupported("x") for k in LayerKind if k is not LayerKind.IDENTITY}, "partial")
    net = sample_network(LayerKind.SOFTMAX, np.random.default_rng(0))
    with pytest.raises(UnsupportedError, match=r"layer l \(softmax\): INT8 softmax has no GPU kernel"):
        lookup(INT8_LOWERINGS, net.layers[0], "GPU INT8")
    net = sample_network(LayerKind.GATHER, np.random.default_rng(0))
    with pytest.raises(UnsupportedError, match=r"layer l \(gather\): no DLA lowering for gather: Gather: no DLA"):
        lookup(DLA_LOWERINGS, net.layers[0], "DLA")


def test_dla_support_rules_accept_only_lowered_kinds():
    """Every kind the support rules can accept has a DLA lowering; every kind they never accept is refused."""
    from backends.dla.support import NO_DLA, RULES
    assert set(RULES) - set(NO_DLA) <= implemented(DLA_LOWERINGS)
    assert set(NO_DLA) | (set(LayerKind) - set(RULES)) == set(LayerKind) - implemented(DLA_LOWERINGS)


@pytest.mark.parametrize("kind", list(LayerKind), ids=lambda k: k.value)
def test_every_kind_through_every_backend(kind, rng):
    net = sample_network(kind, rng)
    layer = net.layers[0]
    assert layer.kind is kind
    layer.precision = Precision.FP16  # the GPU's NHWC kernels are fp16
    ok, why = gpu_supports(layer, net)
    assert ok or why.strip(), kind
    assert ok == (not isinstance(GPU_LOWERINGS[kind], Unsupported)), (kind, why)
    for precision in (Precision.FP16, Precision.INT8):
        s = dla_supports(layer, net, precision, ORIN)
        assert s.ok or s.reason.strip(), (kind, precision)
        if s.ok:  # the support rules accept only kinds the DLA lowering implements
            assert not isinstance(DLA_LOWERINGS[kind], Unsupported), (kind, precision)


def _parser_kinds() -> set[LayerKind]:
    """Kinds whose parameter classes the ONNX parser or the optimizer construct."""
    kinds: set[LayerKind] = set()
    for pkg in (engine.onnx_parser, engine.optimizer):
        mods = [pkg] + [importlib.import_module(f"{pkg.__name__}.{m.name}")
                        for m in pkgutil.walk_packages(pkg.__path__) if not m.ispkg]
        for mod in mods:
            for value in vars(mod).values():
                if isinstance(value, type) and issubclass(value, LayerParams) and value is not LayerParams:
                    kinds.add(value.kind)
    return kinds


def test_reference_implements_every_kind_the_parser_produces():
    kinds = _parser_kinds()
    assert {LayerKind.CONVOLUTION, LayerKind.RESIZE, LayerKind.QUANTIZE} <= kinds  # the walk finds them
    assert kinds <= implemented(KERNELS)


def _float64(kind: LayerKind, layer, xs: list[np.ndarray]) -> list[np.ndarray]:
    """Independent float64 results for the sample layers whose maths is one numpy line."""
    if kind is LayerKind.CONSTANT:
        return [layer.weights["value"].astype(np.float64)]
    x = xs[0].astype(np.float64)
    w = {k: v.astype(np.float64) for k, v in layer.weights.items()}
    if kind is LayerKind.ACTIVATION:
        return [1 / (1 + np.exp(-x))]
    if kind is LayerKind.SCALE:
        return [x * w["scale"][None, :, None, None] + w["shift"][None, :, None, None]]
    if kind is LayerKind.ELEMENTWISE:
        return [x + xs[1]]
    if kind is LayerKind.POINTWISE:
        return [np.maximum(x * xs[1], 0)]
    if kind is LayerKind.FULLY_CONNECTED:
        return [np.maximum(x @ w["kernel"].T, 0)]
    if kind is LayerKind.SOFTMAX:
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return [e / e.sum(axis=1, keepdims=True)]
    if kind is LayerKind.SHUFFLE:
        return [x.transpose(0, 2, 3, 1)]
    if kind is LayerKind.GATHER:
        return [x[:, [3, 0, 7]]]
    if kind is LayerKind.REDUCE:
        return [x.mean(axis=(2, 3), keepdims=True)]
    if kind is LayerKind.MATRIX_MULTIPLY:
        return [x @ xs[1]]
    return []


@pytest.mark.parametrize("kind", list(LayerKind), ids=lambda k: k.value)
def test_reference_runs_a_sample_of_every_kind(kind, rng):
    net = sample_network(kind, rng)
    layer = net.layers[0]
    feeds = {}
    for name in net.inputs:
        t = net.tensors[name]
        feeds[name] = (rng.integers(-100, 100, t.shape).astype(np.int8) if t.dtype is DataType.INT8
                       else rng.uniform(-2, 2, t.shape).astype(np.float32))
    out = execute(net, feeds)
    assert set(out) == set(net.outputs)
    for name in net.outputs:
        assert out[name].shape == net.tensors[name].shape
    for want, name in zip(_float64(kind, layer, [feeds[n] for n in net.inputs]), net.outputs):
        np.testing.assert_allclose(out[name].astype(np.float64), want, rtol=1e-5, atol=1e-5)
