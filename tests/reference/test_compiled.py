"""The optional numba-compiled kernels of the reference backend (``ops.compiled``).

Each compiled kernel is checked against a float64 oracle written here on fresh seeded random
data, the whole backend is run with the compiled path on and off (``HETRT_NO_JIT``) on small
MobileNetV2 / EfficientNet-B0 networks, and the fallbacks (numba missing, disabled, failing) are
exercised. Tests of the compiled path skip where numba is not installed.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import onnxruntime as ort
import pytest
from refhelp import rng, seed_of

from backends.reference import execute
from backends.reference.ops import channels_last, compiled
from engine.ir.dtypes import DataType
from engine.ir.layers import ActivationSpec, ActivationType, ConvolutionParams
from engine.ir.network import Network
from engine.models.zoo import efficientnet_b0, mobilenet_v2
from engine.onnx_parser import parse
from engine.optimizer import optimize


def _use(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if path == "compiled":
        pytest.importorskip("numba")
        monkeypatch.delenv("HETRT_NO_JIT", raising=False)
    else:
        monkeypatch.setenv("HETRT_NO_JIT", "1")
    compiled.reset()
    assert compiled.enabled() == (path == "compiled")


@pytest.fixture(params=["compiled", "numpy"])
def path(request, monkeypatch):
    """Runs a test once with the compiled kernels and once with the numpy path forced."""
    _use(request.param, monkeypatch)
    yield request.param
    compiled.reset()


@pytest.fixture
def jit(monkeypatch):
    """The compiled path only (skips without numba)."""
    _use("compiled", monkeypatch)
    yield compiled.kernels()
    compiled.reset()


def dw64(x, w, stride, pre, post):
    """Depthwise y[n, c, o] = sum_t x_pad[n, c, o*s + t] * w[c, 0, t] in float64 (NCHW, direct)."""
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0), (pre[0], post[0]), (pre[1], post[1])])
    kh, kw = w.shape[2:]
    ho = (xp.shape[2] - kh) // stride[0] + 1
    wo = (xp.shape[3] - kw) // stride[1] + 1
    y = np.zeros((x.shape[0], x.shape[1], ho, wo))
    for i in range(kh):
        for j in range(kw):
            tap = xp[:, :, i:i + (ho - 1) * stride[0] + 1:stride[0], j:j + (wo - 1) * stride[1] + 1:stride[1]]
            y += tap * w[:, 0, i, j].astype(np.float64)[None, :, None, None]
    return y


def act64(y: np.ndarray, spec: ActivationSpec | None) -> np.ndarray:
    if spec is None:
        return y
    with np.errstate(over="ignore"):
        return _act64(y, spec.type, spec)


def _act64(y: np.ndarray, t: ActivationType, spec: ActivationSpec) -> np.ndarray:
    if t == ActivationType.RELU:
        return np.maximum(y, 0.0)
    if t == ActivationType.CLIP:
        return np.clip(y, spec.alpha, spec.beta)
    if t == ActivationType.SIGMOID:
        return 1.0 / (1.0 + np.exp(-y))
    if t == ActivationType.SILU:
        return y / (1.0 + np.exp(-y))
    if t == ActivationType.TANH:
        return np.tanh(y)
    raise AssertionError(t)


def close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-5) -> None:
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=rtol * scale)


ACTS = [None, ActivationSpec(ActivationType.RELU), ActivationSpec(ActivationType.CLIP, 0.0, 6.0),
        ActivationSpec(ActivationType.CLIP, -0.5, 0.75), ActivationSpec(ActivationType.SIGMOID),
        ActivationSpec(ActivationType.SILU), ActivationSpec(ActivationType.TANH)]

# (N, C, H, W, kernel, stride, pre, post)
DW_CASES = [
    (1, 7, 11, 9, (3, 3), (1, 1), (1, 1), (1, 1)),
    (2, 5, 13, 12, (3, 3), (2, 2), (1, 1), (1, 1)),
    (1, 9, 15, 17, (5, 5), (2, 2), (2, 2), (2, 2)),
    (2, 6, 10, 13, (5, 5), (1, 1), (2, 2), (2, 2)),
    (1, 4, 12, 10, (7, 7), (1, 1), (3, 3), (3, 3)),
    (2, 3, 9, 11, (7, 7), (2, 2), (3, 2), (2, 3)),
    (1, 33, 8, 7, (3, 3), (2, 2), (0, 0), (1, 1)),  # TF-style "same": asymmetric padding
    (1, 6, 10, 13, (3, 5), (2, 1), (0, 2), (1, 1)),
    (1, 17, 5, 4, (5, 5), (1, 1), (2, 2), (2, 2)),  # kernel wider than the image
    (1, 3, 9, 8, (1, 3), (1, 1), (0, 0), (0, 0)),
    (2, 5, 7, 9, (3, 3), (1, 2), (2, 0), (0, 2)),
]


def _layout(x: np.ndarray, layout: str) -> np.ndarray:
    if layout == "nchw":
        return x
    if layout == "nhwc":
        return channels_last.from_nhwc(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    n, c, h, wd = x.shape  # inside a row_bordered buffer, read in place
    interior, rows = channels_last.row_bordered(n, h, wd, c, x.dtype)
    rows[...] = x.transpose(0, 2, 3, 1).reshape(n, h * wd, c)
    return channels_last.from_nhwc(interior)


@pytest.mark.parametrize("case", DW_CASES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "bordered"])
def test_compiled_depthwise_matches_float64(jit, case, layout):
    n, c, h, wd, kernel, stride, pre, post = case
    g = rng(seed_of("jit-dw", case, layout))
    x = g.standard_normal((n, c, h, wd)).astype(np.float32)
    w = g.standard_normal((c, 1, *kernel)).astype(np.float32)
    b = g.standard_normal(c).astype(np.float32)
    ref = dw64(x, w, stride, pre, post)
    xin = _layout(x, layout)
    if layout == "bordered":
        src, r0 = compiled._bordered_source(xin)  # read in place: one image, or the whole buffer
        assert np.shares_memory(src, xin) and r0 == (channels_last.ROW_BORDER if n > 1 else 0)
    for spec in ACTS:
        got, fused = compiled.depthwise(xin, w, b, spec, stride, pre, post, (1, 1), ref.shape[2:])
        assert got.shape == ref.shape and got.dtype == np.float32
        assert channels_last.is_channels_last(got)
        want = ref + b.astype(np.float64)[None, :, None, None]
        if spec is not None and spec.type == ActivationType.TANH:
            assert not fused  # left to the numpy epilogue
        else:
            assert fused
            want = act64(want, spec)
        close(got, want)


def test_compiled_depthwise_declines_what_it_does_not_cover(jit):
    g = rng(seed_of("jit-decline"))
    x = g.standard_normal((1, 4, 9, 9)).astype(np.float32)
    w = g.standard_normal((4, 1, 3, 3)).astype(np.float32)
    assert compiled.depthwise(x, w, None, None, (1, 1), (2, 2), (2, 2), (2, 2), (9, 9)) is None  # dilated
    x16, w16 = x.astype(np.float16), w.astype(np.float16)
    assert compiled.depthwise(x16, w16, None, None, (1, 1), (1, 1), (1, 1), (1, 1), (9, 9)) is None


@pytest.mark.parametrize("spec", ACTS[1:6], ids=lambda s: f"{s.type.value}{s.alpha}")
def test_compiled_activations_match_float64(jit, spec):
    g = rng(seed_of("jit-act", spec.type.value, spec.alpha))
    x = (g.standard_normal(4099) * 30).astype(np.float32)  # saturating and tiny values too
    x[:5] = [0.0, -0.0, 1e-30, -87.0, 88.0]
    y = x.copy()
    assert compiled.activate_inplace(y, spec)
    close(y, act64(x.astype(np.float64), spec))
    want = act64(x.astype(np.float64), spec)
    nz = np.abs(want) > 1e-30
    np.testing.assert_allclose(y[nz], want[nz], rtol=2e-6)  # relative, even where values are tiny


@pytest.mark.parametrize("t", [ActivationType.SIGMOID, ActivationType.SILU, ActivationType.RELU])
def test_compiled_activations_keep_nan_and_inf(jit, t):
    """NaN stays NaN; +-inf and huge values give the limits (SiLU(-inf) excepted: -inf * 0)."""
    x = np.array([np.nan, np.inf, 1e4, -1e4, 0.5] + ([-np.inf] if t != ActivationType.SILU else []),
                 dtype=np.float32)
    y = x.copy()
    assert compiled.activate_inplace(y, ActivationSpec(t))
    assert np.isnan(y[0])
    want = act64(x[1:].astype(np.float64), ActivationSpec(t))
    np.testing.assert_allclose(y[1:], want, rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("n, k, spec", [(1, 24, ActivationType.SILU), (2, 40, ActivationType.SIGMOID),
                                        (3, 7, ActivationType.CLIP), (2, 16, None)])
def test_conv_epilogue_paths_match_float64(path, n, k, spec):
    """1x1 (bias folded into the GEMM) and 3x3 convolutions: the compiled bias + activation pass
    and the numpy epilogue agree with the float64 oracle."""
    g = rng(seed_of("jit-epi", n, k, spec))
    act = ActivationSpec(spec, 0.0, 6.0) if spec is not None else None
    for c, kernel, pad in ((5, (1, 1), 0), (31, (1, 1), 0), (6, (3, 3), 1)):
        x = g.standard_normal((n, c, 9, 11)).astype(np.float32)
        w = g.standard_normal((k, c, *kernel)).astype(np.float32)
        b = g.standard_normal(k).astype(np.float32)
        net = Network("one")
        net.add_input("x", x.shape, DataType.FLOAT)
        layer = net.add_layer(ConvolutionParams(k, kernel, (1, 1), (pad, pad), (pad, pad), (1, 1), 1, activation=act),
                              ["x"], {"kernel": w, "bias": b}, name="c")
        net.mark_output(layer.outputs[0])
        got = execute(net, {"x": x})[layer.outputs[0]]
        y = np.zeros((n, k, 9, 11))
        xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0), (pad, pad), (pad, pad)])
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                y += np.einsum("nchw,kc->nkhw", xp[:, :, i:i + 9, j:j + 11], w[:, :, i, j].astype(np.float64))
        close(got, act64(y + b.astype(np.float64)[None, :, None, None], act))


@pytest.mark.parametrize("spec", [ActivationSpec(ActivationType.CLIP, 0.0, 6.0), ActivationSpec(ActivationType.SILU),
                                  ActivationSpec(ActivationType.TANH), None], ids=str)
@pytest.mark.parametrize("case", DW_CASES[:6], ids=str)
def test_depthwise_layer_both_paths_match_float64(path, case, spec):
    n, c, h, wd, kernel, stride, pre, post = case
    g = rng(seed_of("jit-dw-layer", case))
    x = g.standard_normal((n, c, h, wd)).astype(np.float32)
    w = g.standard_normal((c, 1, *kernel)).astype(np.float32)
    b = g.standard_normal(c).astype(np.float32)
    net = Network("one")
    net.add_input("x", x.shape, DataType.FLOAT)
    layer = net.add_layer(ConvolutionParams(c, kernel, stride, pre, post, (1, 1), c, activation=spec),
                          ["x"], {"kernel": w, "bias": b}, name="dw")
    net.mark_output(layer.outputs[0])
    got = execute(net, {"x": x})[layer.outputs[0]]
    close(got, act64(dw64(x, w, stride, pre, post) + b.astype(np.float64)[None, :, None, None], spec))


@pytest.mark.parametrize("model", [lambda: mobilenet_v2(image=48, classes=10, width=0.5, seed=3),
                                   lambda: efficientnet_b0(image=48, classes=10, seed=5)],
                         ids=["mobilenet_v2", "efficientnet_b0"])
def test_networks_compiled_equals_numpy_and_onnxruntime(monkeypatch, model):
    pytest.importorskip("numba")
    m = model()
    net = optimize(parse(m, batch=2)).network
    x = rng(seed_of("jit-net", m.graph.name)).standard_normal((2, 3, 48, 48)).astype(np.float32)
    outs = {}
    for p in ("numpy", "compiled"):
        _use(p, monkeypatch)
        outs[p] = execute(net, {net.inputs[0]: x})[net.outputs[0]]
    compiled.reset()
    scale = float(np.abs(outs["numpy"]).max())
    np.testing.assert_allclose(outs["compiled"], outs["numpy"], rtol=1e-5, atol=1e-5 * scale)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(outs["compiled"], want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_env_disables_the_compiled_path(monkeypatch):
    monkeypatch.setenv("HETRT_NO_JIT", "1")
    compiled.reset()
    try:
        assert not compiled.enabled()
        x = rng(1).standard_normal((1, 3, 5, 5)).astype(np.float32)
        w = rng(2).standard_normal((3, 1, 3, 3)).astype(np.float32)
        assert compiled.depthwise(x, w, None, None, (1, 1), (1, 1), (1, 1), (1, 1), (5, 5)) is None
        assert not compiled.activate_inplace(x, ActivationSpec(ActivationType.SILU))
    finally:
        compiled.reset()


def test_missing_numba_falls_back_silently(monkeypatch):
    monkeypatch.delenv("HETRT_NO_JIT", raising=False)
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba raises ImportError
    monkeypatch.delitem(sys.modules, "backends.reference.ops.jit_kernels", raising=False)
    compiled.reset()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert not compiled.enabled()
    finally:
        compiled.reset()


def test_failing_kernel_warns_once_and_falls_back(jit, monkeypatch):
    """A compiled kernel that raises (e.g. compilation failing) switches the whole compiled path
    off with one warning; the layer is computed by numpy, correctly."""
    def broken(*args):
        raise RuntimeError("no code generated")

    monkeypatch.setattr(jit, "depthwise", broken)
    g = rng(seed_of("jit-broken"))
    x = g.standard_normal((1, 5, 8, 9)).astype(np.float32)
    w = g.standard_normal((5, 1, 3, 3)).astype(np.float32)
    net = Network("one")
    net.add_input("x", x.shape, DataType.FLOAT)
    layer = net.add_layer(ConvolutionParams(5, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 5,
                                            activation=ActivationSpec(ActivationType.SILU)), ["x"], {"kernel": w},
                          name="dw")
    net.mark_output(layer.outputs[0])
    with pytest.warns(RuntimeWarning, match="compiled reference kernels failed") as record:
        got = execute(net, {"x": x})[layer.outputs[0]]
        execute(net, {"x": x})
    assert len(record) == 1
    assert not compiled.enabled()
    close(got, act64(dw64(x, w, (1, 1), (1, 1), (1, 1)), ActivationSpec(ActivationType.SILU)))
