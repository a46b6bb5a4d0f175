"""The "gemv" tactic of a 1x1 convolution on few rows (``conv_src.gemv_conv`` through its real
launcher ``conv.conv2d_gemv``) run on the CPU through the CUDA emulator, on fresh random data,
against float64 numpy within fp16 tolerance; padded output channels must come back zero. Also the
lowering: the tactic gives a ``conv_gemv`` op only where it applies.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emu import EmulatedModule, compiler
from gpu_reference import act_ref, assert_close

from backends.gpu.kernels import conv as convk
from backends.gpu.kernels.conv import GEMV_MAX_ROWS, ConvGeometry, gemv_eligible
from backends.gpu.kernels.conv_src import CONV_SRC
from backends.gpu.layout import pack_conv_weights, pad_channels

pytestmark = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")


@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> EmulatedModule:
    return EmulatedModule(CONV_SRC, tmp_path_factory.mktemp("emu_gemv"), opt="-O1")


@pytest.mark.parametrize("n,c,k,act,residual", [
    (1, 96, 4, (5, 0.0, 0.0), False),  # EfficientNet's first SE reduce: SiLU
    (2, 20, 72, (4, 0.0, 0.0), False),  # an SE expand: sigmoid, channels not a multiple of 8
    (3, 300, 13, (1, 0.0, 0.0), True),  # a longer reduction than 32 lanes x 8, residual, ReLU
    (64, 40, 24, (0, 0.0, 0.0), True),  # the most rows the tactic takes
])
def test_gemv_matches_float64(emu, monkeypatch, rng, n, c, k, act, residual):
    g = ConvGeometry(n, 1, 1, c, k, 1, 1)
    assert gemv_eligible(g)
    x = rng.uniform(-1, 1, (n, 1, 1, c)).astype(np.float16)
    w = (rng.standard_normal((k, c, 1, 1)) / np.sqrt(c)).astype(np.float16)
    b = np.zeros(g.kp, np.float32)
    b[:k] = rng.standard_normal(k)
    res = rng.uniform(-1, 1, (n, 1, 1, k)).astype(np.float16) if residual else None
    y = np.full((n, 1, 1, g.kp), np.float16(np.nan))
    monkeypatch.setattr(convk, "get_function",
                        lambda src, name, **kw: lambda grid, block, args: emu.run(name, grid, block[0], args))
    convk.conv2d_gemv(pad_channels(x), pack_conv_weights(w.astype(np.float32)).astype(np.float16), b, y, g, act,
                      None if res is None else pad_channels(res))
    ref = x.reshape(n, c).astype(np.float64) @ w.reshape(k, c).astype(np.float64).T + b[:k]
    if res is not None:
        ref = ref + res.reshape(n, k)
    assert not y[..., k:].view(np.uint16).any(), "padded channels must be written as zeros"
    assert_close(y.reshape(n, g.kp)[:, :k].astype(np.float64), act_ref(ref, *act))


def test_gemv_eligibility():
    assert gemv_eligible(ConvGeometry(8, 1, 1, 1280, 1000, 1, 1))
    assert gemv_eligible(ConvGeometry(1, 7, 7, 320, 1280, 1, 1))  # 49 pixels
    assert not gemv_eligible(ConvGeometry(GEMV_MAX_ROWS + 1, 1, 1, 64, 64, 1, 1))
    assert not gemv_eligible(ConvGeometry(1, 3, 3, 64, 64, 3, 3, (1, 1), (1, 1)))
    assert not gemv_eligible(ConvGeometry(1, 4, 4, 64, 64, 1, 1, (2, 2)))


def test_gemv_tactic_lowers_to_its_op_only_where_it_applies():
    from backends.gpu.lower import lower
    from engine.ir.dtypes import Precision
    from engine.ir.layers import ActivationSpec, ActivationType, ConvolutionParams
    from engine.ir.network import Network

    def net_of(n: int) -> Network:
        net = Network("se_fc")
        x = net.add_input("x", (n, 40, 1, 1))
        params = ConvolutionParams(10, (1, 1), (1, 1), (0, 0), (0, 0), (1, 1), 1,
                                   ActivationSpec(ActivationType.SILU))
        rng = np.random.default_rng(0)
        layer = net.add_layer(params, [x], {"kernel": rng.standard_normal((10, 40, 1, 1)).astype(np.float32),
                                            "bias": rng.standard_normal(10).astype(np.float32)}, name="fc1")
        layer.precision = Precision.FP16
        net.mark_output(layer.outputs[0])
        return net

    small, large = net_of(2), net_of(GEMV_MAX_ROWS + 1)
    kinds = [op.kind for op in lower(small, small.layers, list(small.outputs), {"fc1": "gemv"}).ops]
    assert "conv_gemv" in kinds and "conv" not in kinds
    kinds = [op.kind for op in lower(large, large.layers, list(large.outputs), {"fc1": "gemv"}).ops]
    assert "conv_gemv" not in kinds and "conv" in kinds  # too many rows: the heuristic tile
