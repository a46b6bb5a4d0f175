"""FP16 networks compiled to dla_sim loadables match the reference backend's FP16 convention."""

from __future__ import annotations

import numpy as np
import pytest

from dla_sim import lut
from dla_sim.config import ORIN, XAVIER
from engine.ir.dtypes import DataType
from engine.ir.layers import (
    ActivationType,
    ConcatenationParams,
    DeconvolutionParams,
    FullyConnectedParams,
    LRNParams,
    MatrixMultiplyParams,
    ParametricReLUParams,
    PoolingParams,
    PoolingType,
    ScaleMode,
    ScaleParams,
    SliceParams,
    SplitParams,
    UnaryOp,
    UnaryParams,
)
from engine.ir.network import Network

from .nets import conv, rel_err, run_both

SEEDS = (11, 12)
TOL = 1e-2


def _check(net, cfg, seed, tol=TOL, layers=None):
    out, ref, stats, part = run_both(net, cfg, seed, layers)
    assert set(out) == {b.name for b in part.outputs}
    for name, y in out.items():
        assert y.dtype == np.float16
        assert y.shape == net.tensors[name].shape
        assert np.isfinite(y).all()
        assert np.abs(ref[name]).max() > 0
        assert rel_err(y, ref[name]) <= tol, (name, rel_err(y, ref[name]))
    assert stats.cycles > 0 and stats.energy_j > 0
    return out, ref, stats, part


def net_conv_bias_relu(rng):
    net = Network("conv_relu")
    x = net.add_input("x", (1, 16, 12, 12))
    y = conv(net, x, 32, 3, rng, pad=1, act="relu", name="c1")
    y = conv(net, y, 24, 3, rng, pad=1, name="c2")  # 12x12 output: Winograd on Xavier
    net.mark_output(net.add_activation(y, "relu", name="r2"))
    return net


def net_residual(rng):
    net = Network("residual")
    x = net.add_input("x", (1, 32, 8, 8))
    y = conv(net, x, 32, 3, rng, pad=1, act="relu", name="c1")
    y = conv(net, y, 32, 3, rng, pad=1, act="relu", residual=x, name="c2")
    z = conv(net, y, 32, 1, rng, name="c3")
    net.mark_output(net.add_elementwise(z, y, "sum", name="add"))
    return net


def net_pools(rng):
    net = Network("pools")
    x = net.add_input("x", (1, 16, 16, 16))
    y = conv(net, x, 32, 3, rng, pad=1, act="relu", name="c1")
    m = net.add_pooling(y, "max", (3, 3), (2, 2), (1, 1), name="maxpool")  # on the fly after c1
    a = net.add_layer(PoolingParams(PoolingType.AVERAGE, (3, 3), (1, 1), (1, 1), (1, 1), count_include_pad=True),
                      [m], name="avgpool")
    g = net.add_layer(PoolingParams(PoolingType.MAX, global_pool=True), a.outputs, name="gmax")  # off-line
    net.mark_output(a.outputs[0])
    net.mark_output(g.outputs[0])
    return net


def net_concat(rng):
    net = Network("concat")
    x = net.add_input("x", (1, 16, 8, 8))
    a = conv(net, x, 16, 1, rng, act="relu", name="b1")
    b = conv(net, x, 32, 3, rng, pad=1, act="relu", name="b2")
    cat = net.add_layer(ConcatenationParams(axis=1), [a, b, x], name="cat")
    y = conv(net, cat.outputs[0], 16, 1, rng, name="after")
    net.mark_output(y)
    return net


def net_concat_twice(rng):
    net = Network("concat_twice")
    x = net.add_input("x", (1, 16, 6, 6))
    a = conv(net, x, 16, 3, rng, pad=1, name="a")
    c1 = net.add_layer(ConcatenationParams(axis=1), [a, x], name="cat1")
    c2 = net.add_layer(ConcatenationParams(axis=1), [x, a], name="cat2")  # x and a again: BDMA copies
    net.mark_output(net.add_elementwise(c1.outputs[0], c2.outputs[0], "prod", name="mul"))
    return net


def net_1x1_depthwise(rng):
    net = Network("dw")
    x = net.add_input("x", (1, 32, 10, 10))
    y = conv(net, x, 32, 3, rng, pad=1, groups=32, act="relu", name="dw")
    y = conv(net, y, 48, 1, rng, name="pw")
    y = conv(net, y, 16, 3, rng, stride=2, dilation=2, pad=2, name="dil")
    net.mark_output(y)
    return net


def net_deconv(rng):
    net = Network("deconv")
    x = net.add_input("x", (1, 8, 5, 6))
    for name, k, s, maps, act in (("up2", 4, 2, 16, "relu"), ("up3", 3, 3, 16, None), ("same", 3, 1, 8, None)):
        w = (rng.standard_normal((8, maps, k, k)) / np.sqrt(8 * k)).astype(np.float32)
        from engine.ir.layers import ActivationSpec

        p = DeconvolutionParams(num_output_maps=maps, kernel=(k, k), stride=(s, s), pre_padding=(0, 0),
                                post_padding=(0, 0), dilation=(1, 1),
                                activation=ActivationSpec(ActivationType(act)) if act else None)
        layer = net.add_layer(p, [x], {"kernel": w, "bias": (0.1 * rng.standard_normal(maps)).astype(np.float32)},
                              name=name)
        net.mark_output(layer.outputs[0])
    return net


def net_fc(rng):
    net = Network("fc")
    x = net.add_input("x", (2, 64))
    w = (rng.standard_normal((40, 64)) / 8).astype(np.float32)
    from engine.ir.layers import ActivationSpec

    fc = net.add_layer(FullyConnectedParams(40, ActivationSpec(ActivationType.RELU)), [x],
                       {"kernel": w, "bias": np.ones(40, np.float32) * 0.1}, name="fc")
    b = net.add_constant((rng.standard_normal((40, 24)) / 6).astype(np.float32), name="B")
    mm = net.add_layer(MatrixMultiplyParams(), [fc.outputs[0], b], name="mm")
    net.mark_output(mm.outputs[0])
    return net


def net_pointwise(rng):
    net = Network("pointwise")
    x = net.add_input("x", (1, 16, 6, 6))
    y = net.add_layer(ScaleParams(ScaleMode.CHANNEL), [x], {"scale": rng.standard_normal(16).astype(np.float32),
                                                           "shift": rng.standard_normal(16).astype(np.float32)},
                      name="bn").outputs[0]
    y = net.add_layer(ParametricReLUParams(), [y], {"slope": (0.1 * rng.random((16, 1, 1))).astype(np.float32)},
                      name="prelu").outputs[0]
    c = net.add_constant(rng.standard_normal((1, 16, 1, 1)).astype(np.float32), name="cst")
    y = net.add_elementwise(c, y, "sub", name="csub")
    y = net.add_elementwise(y, net.add_constant(rng.standard_normal((1, 16, 6, 6)).astype(np.float32), name="m"),
                            "max", name="cmax")
    y = net.add_layer(UnaryParams(UnaryOp.ABS), [y], name="abs").outputs[0]
    y = net.add_activation(y, "leaky_relu", alpha=0.2, name="leaky")
    net.mark_output(net.add_activation(y, "clip", alpha=0.0, beta=2.0, name="relu6ish"))
    return net


def net_windows(rng):
    net = Network("windows")
    x = net.add_input("x", (1, 48, 8, 8))
    s = net.add_layer(SliceParams(start=(0, 16, 1, 2), size=(1, 32, 6, 5), step=(1, 1, 1, 1)), [x], name="slice")
    y = conv(net, s.outputs[0], 16, 3, rng, pad=1, name="after_slice")
    sp = net.add_layer(SplitParams(axis=1, sizes=(16, 32)), [x], name="split")
    z = conv(net, sp.outputs[1], 16, 1, rng, name="after_split")
    net.mark_output(y)
    net.mark_output(z)
    net.mark_output(sp.outputs[0])
    return net


BUILDERS = {f.__name__[4:]: f for f in (net_conv_bias_relu, net_residual, net_pools, net_concat, net_concat_twice,
                                         net_1x1_depthwise, net_deconv, net_fc, net_pointwise, net_windows)}


@pytest.mark.parametrize("cfg", [XAVIER, ORIN], ids=["xavier", "orin"])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_fp16_network_matches_reference(name, seed, cfg):
    net = BUILDERS[name](np.random.default_rng(seed + 100))
    _check(net, cfg, seed)


def test_fusions_and_addressing_happen():
    """Conv+relu+pool fuse into one hardware layer; concat costs no op; a doubled part gets a BDMA copy."""
    rng = np.random.default_rng(0)
    _, _, stats, _ = _check(net_pools(rng), XAVIER, 0)
    units = [(t.unit, t.layer) for t in stats.trace]
    assert ("pdp", "maxpool") in units
    groups = {}
    for t in stats.trace:
        groups.setdefault(t.start_cycles, []).append(t.unit)
    assert ["conv", "sdp", "pdp"] in groups.values()
    _, _, stats, _ = _check(net_concat(rng), XAVIER, 0)
    assert "cat" not in {t.layer for t in stats.trace}
    _, _, stats, _ = _check(net_concat_twice(rng), XAVIER, 0)
    assert sum(t.unit == "bdma" for t in stats.trace) == 2
    _, _, stats, _ = _check(net_conv_bias_relu(rng), XAVIER, 0)
    assert "r2" not in {t.layer for t in stats.trace}  # folded into c2's SDP


@pytest.mark.parametrize("act", ["sigmoid", "tanh"])
def test_lut_activations_within_stated_error(act):
    rng = np.random.default_rng(5)
    net = Network("lut")
    x = net.add_input("x", (1, 16, 8, 8))
    net.mark_output(net.add_activation(x, act, name="act"))
    out, ref, _, _ = run_both(net, XAVIER, 7)
    build = lut.sigmoid_lut() if act == "sigmoid" else lut.tanh_lut()
    xin = np.random.default_rng(7).standard_normal((1, 16, 8, 8)).astype(np.float16).astype(np.float64)
    exact = 1 / (1 + np.exp(-xin)) if act == "sigmoid" else np.tanh(xin)
    err = np.abs(out["act"].astype(np.float64) - exact)
    bound = build.max_abs_error + np.spacing(np.float16(1.0)).astype(np.float64)  # + fp16 output rounding
    assert err.max() <= bound
    assert rel_err(out["act"], ref["act"]) <= 2 * bound
    del rng


def test_lrn_within_stated_error():
    from dla_sim import cdp
    from dla_sim.ops import CdpOp, CubeDesc

    net = Network("lrn")
    x = net.add_input("x", (1, 32, 6, 6))
    net.mark_output(net.add_layer(LRNParams(size=5, alpha=1e-2, beta=0.75, bias=2.0), [x], name="lrn").outputs[0])
    out, ref, _, _ = run_both(net, XAVIER, 3)
    op = CdpOp(input=CubeDesc(c=32, h=6, w=6), output=CubeDesc(c=32, h=6, w=6), local_size=5, alpha=1e-2,
               beta=0.75, k=2.0)
    bound = cdp.lrn_build(op).max_rel_error + 2.0 ** -10
    assert rel_err(out["lrn"], ref["lrn"]) <= bound + TOL / 10


def test_batch_of_two_through_fc_and_input_dtype_half():
    net = net_fc(np.random.default_rng(1))
    out, ref, _, part = run_both(net, XAVIER, 4)
    assert part.inputs[0].format.value == "kCHW16"
    assert rel_err(out["mm"], ref["mm"]) <= TOL
    assert net.tensors["x"].dtype is DataType.FLOAT


def test_partition_boundaries_inside_a_network():
    """A sub-partition: its inputs are the tensors it reads from outside, its outputs what leaves."""
    from backends.dla import DlaBackend
    from backends.reference.executor import execute
    from engine.ir.dtypes import Precision

    net = net_residual(np.random.default_rng(2))
    seen = {}
    xin = np.random.default_rng(9).standard_normal((1, 32, 8, 8)).astype(np.float32)
    ref = execute(net, {"x": xin}, precision_of=lambda la: Precision.FP16,
                  observer=lambda la, outs: seen.update(zip(la.outputs, outs)))
    be = DlaBackend(XAVIER, 1)
    part = be.compile(net, ["c2", "c3"], Precision.FP16)
    assert {b.name for b in part.inputs} == {"c1", "x"}
    assert {b.name for b in part.outputs} == {"c2", "c3"}
    out, _ = be.execute(part, {"c1": seen["c1"], "x": xin})
    assert rel_err(out["c2"], seen["c2"]) <= TOL and rel_err(out["c3"], seen["c3"]) <= TOL
    del ref
