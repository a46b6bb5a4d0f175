"""The reference INT8 kernels and dla_sim's functional units give identical integers."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import int8_conv_layer

from backends.reference import int8
from dla_sim import conv_core, pdp, sdp
from dla_sim.config import get_config
from dla_sim.ops import ConvOp, CubeDesc, PdpOp, Precision, Requant, SdpOp
from engine.ir import int8_annotation as annotation
from engine.ir.dtypes import Precision as P
from engine.ir.int8_math import bias_params, quantize, requant_params, round_half_away
from engine.ir.layers import PoolingParams, PoolingType
from engine.ir.network import Layer

CFG = get_config("nv_full")
I8 = Precision.INT8


@pytest.mark.parametrize("seed,relu", [(0, True), (1, True), (2, False)])
def test_conv_bias_relu_matches_conv_core_and_sdp(seed, relu):
    rng = np.random.default_rng(seed)
    n, c, h, w, k = 1, 16, 10, 9, 24
    wt = rng.normal(size=(k, c, 3, 3)).astype(np.float32)
    bias = (rng.normal(size=k) * 4).astype(np.float32)
    x = rng.normal(size=(n, c, h, w)).astype(np.float32)
    s_in, s_out = np.float32(0.025), np.float32(0.08)
    s_w = (np.abs(wt).reshape(k, -1).max(1) / 127).astype(np.float32)
    layer = int8_conv_layer(wt, bias, s_in, s_w, s_out, relu=relu)
    ours = np.rint(int8.run_layer(layer, [x], P.INT8)[0] / s_out).astype(np.int64)

    xq, wq = quantize(x, s_in), quantize(wt, s_w, axis=0)
    s_acc = np.float64(s_in) * s_w.astype(np.float64)
    b16, bshift = bias_params(round_half_away(bias / s_acc))
    sc, sh = requant_params(s_acc / np.float64(s_out))
    cin = CubeDesc(n=n, c=c, h=h, w=w, precision=I8)
    cout = CubeDesc(n=n, c=k, h=h, w=w, precision=I8)
    conv = ConvOp(input=cin, output=cout, kernel=(3, 3), pad=(1, 1, 1, 1), has_bias=True)
    acc = conv_core.accumulate(conv, xq, wq, cfg=CFG)
    op = SdpOp(input=cout.with_(precision=I8), output=cout, bias="per_channel", bias_shift=bshift,
               activation="relu" if relu else "none",
               out_requant=Requant(scale=tuple(int(v) for v in sc), shift=tuple(int(v) for v in sh)))
    dla = sdp.run(op, acc, b16, cfg=CFG).astype(np.int64)
    np.testing.assert_array_equal(ours, dla)
    assert np.abs(dla).max() > 20  # the comparison is not between two all-zero cubes


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pooling_matches_pdp(mode):
    rng = np.random.default_rng(4)
    s = np.float32(0.05)
    x = rng.normal(size=(1, 8, 8, 8)).astype(np.float32) * 3
    kind = PoolingType.MAX if mode == "max" else PoolingType.AVERAGE
    layer = Layer("p", PoolingParams(kind, window=(3, 3), stride=(2, 2), pre_padding=(1, 1), post_padding=(1, 1),
                                     count_include_pad=True), ["x"], ["y"], {}, precision=P.INT8)
    annotation.write(layer, annotation.Int8Spec((s,), s))
    ours = np.rint(int8.run_layer(layer, [x], P.INT8)[0] / s).astype(np.int64)
    cin = CubeDesc(n=1, c=8, h=8, w=8, precision=I8)
    op = PdpOp(input=cin, output=CubeDesc(n=1, c=8, h=4, w=4, precision=I8), mode=mode, kernel=(3, 3),
               stride=(2, 2), pad=(1, 1, 1, 1), source="memory")
    dla = pdp.run(op, quantize(x, s), cfg=CFG).astype(np.int64)
    np.testing.assert_array_equal(ours, dla)
