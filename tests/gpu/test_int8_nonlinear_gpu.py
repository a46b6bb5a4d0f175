"""INT8 convolutions with SiLU / hard-swish epilogues on the GPU (``conv_igemm_s8`` and its split-K
epilogue, ``dwconv_s8``) against the reference INT8 kernels, bit for bit: dense, depthwise and fully
connected layers, every dense tactic, and an EfficientNet-style int8 chain. Fresh random data (the
seed is printed). Skipped without CUDA.

The epilogue takes an int8 result from float32 where its error bound decides the rounding, else
evaluates ``int8_rules.activation_value`` in float64 with the same IEEE steps as numpy; SiLU's
``exp`` is CUDA's, which may differ from numpy's in the last bit: that changes a result only for a
quotient within about 1e-16 of a rounding tie (or a float32 rounding midpoint), which random data
does not reach. Also the squeeze-excitation bridge (``Int8Lowering.lower_int8_bridge``, 16 channels
a thread) against the three kernels it replaces."""

from __future__ import annotations

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

import int8_nets as nets  # noqa: E402
from test_int8 import _check  # noqa: E402

from backends.gpu.backend import GpuPartition  # noqa: E402
from backends.gpu.kernels.conv import ConvGeometry  # noqa: E402
from backends.gpu.kernels.int8 import candidate_tactics8  # noqa: E402
from backends.gpu.lower_int8 import Int8Lowering  # noqa: E402
from engine.ir.layers import ElementWiseOp  # noqa: E402
from engine.ir.network import Network  # noqa: E402

pytestmark = pytest.mark.gpu

ACTS = [pytest.param(nets.SILU, id="silu"), pytest.param(nets.HSWISH, id="hswish")]


def _kinds(part) -> list[str]:
    return [op.kind for u in part.units if u.lowered for op in u.lowered.ops]


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("n,c,h,w,k,r,stride,pad,residual", [
    pytest.param(2, 32, 28, 28, 96, 1, 1, 0, False, id="effnet-1x1-expand"),
    pytest.param(2, 40, 14, 14, 40, 3, 1, 1, True, id="3x3-residual"),
    pytest.param(1, 3, 32, 32, 32, 3, 2, 1, False, id="stem-stride2-c3"),
    pytest.param(1, 320, 7, 7, 1280, 1, 1, 0, False, id="effnet-head-1x1"),
    pytest.param(3, 5, 9, 7, 6, 3, 1, 1, True, id="odd-channels"),
])
def test_int8_nonlinear_conv_bit_exact(rng, act, n, c, h, w, k, r, stride, pad, residual):
    part = _check(*nets.conv_net(rng, n, c, h, w, k, r, stride, pad, act, residual))
    assert "conv8" in _kinds(part)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("n,c,h,w,r,stride,pad,residual,f32", [
    pytest.param(2, 96, 56, 56, 3, 2, 1, False, False, id="effnet-3x3-stride2"),
    pytest.param(2, 240, 28, 28, 5, 1, 2, False, False, id="effnet-5x5-c240"),
    pytest.param(2, 40, 14, 14, 3, 1, 1, True, False, id="3x3-residual"),
    pytest.param(1, 20, 9, 9, 3, 1, 1, False, True, id="float-output"),
])
def test_int8_nonlinear_depthwise_bit_exact(rng, act, n, c, h, w, r, stride, pad, residual, f32):
    part = _check(*nets.dw_net(rng, n, c, h, w, r, stride, pad, 1, act, residual, None if f32 else "auto"))
    assert _kinds(part).count("dwconv8") == 1


def test_int8_silu_conv_float_output(rng):
    _check(*nets.conv_net(rng, 2, 20, 6, 6, 10, 3, 1, 1, nets.SILU, False, s_out=None))


@pytest.mark.parametrize("float_out", [False, True])
def test_int8_silu_fc_bit_exact(rng, float_out):
    _check(*nets.fc_net(rng, 8, 1280, 1000, nets.SILU, float_out))


def test_int8_silu_conv_every_tactic(rng):
    """Every tile and split-K variant (splitk_epilogue_s8) gives the same integers."""
    net, feeds = nets.conv_net(rng, 2, 96, 14, 14, 80, 3, 1, 1, nets.SILU, True)
    tactics = candidate_tactics8(ConvGeometry(2, 14, 14, 96, 80, 3, 3, (1, 1), (1, 1)))
    assert any(t.splits > 1 for t in tactics)
    for t in tactics:
        _check(net, feeds, {"conv": t.name})


def test_int8_silu_block_stays_on_device(rng):
    """expand 1x1 (SiLU) -> depthwise 3x3 (SiLU) -> project 1x1 + residual, int8 between the layers."""
    net = Network("silu_block")
    net.add_input("x", (2, 24, 20, 20))
    e, se = nets.add_conv8(net, rng, "x", 144, 1, act=nets.SILU, name="expand")
    d, sd = nets.add_dw8(net, rng, e.outputs[0], 3, 1, 1, act=nets.SILU, s_in=se, name="dw")
    p, _ = nets.add_conv8(net, rng, d.outputs[0], 24, 1, act=None, s_in=sd, residual="x",
                          residual_scale=float(np.float32(4.0 / 127)), name="project")
    net.mark_output(p.outputs[0])
    part = _check(net, {"x": rng.normal(size=(2, 24, 20, 20)).astype(np.float32)})
    kinds = _kinds(part)
    assert kinds.count("conv8") == 2 and kinds.count("dwconv8") == 1, kinds


@pytest.mark.parametrize("op", [ElementWiseOp.PROD, ElementWiseOp.DIV])
@pytest.mark.parametrize("gate_first", [False, True])
def test_int8_se_bridge_equals_three_kernels(rng, monkeypatch, op, gate_first):
    """SiLU conv8 -> FP16 ``x op gate`` -> conv8: the fused int8 -> int8 bridge and the unfused
    dequantize / FP16 layer / quantize give the same output bits on the GPU."""
    net = nets.se_net(rng, op, gate_first, c=72)
    gate = rng.uniform(0.1, 1.0, (2, 72, 1, 1)).astype(np.float32)
    feeds = {"x": rng.normal(size=(2, 24, 9, 9)).astype(np.float32), "gate": gate}
    names = [la.name for la in net.layers]
    fused = GpuPartition(net, names)
    assert "se_mul_int8" in [op.label for u in fused.units if u.lowered for op in u.lowered.ops]
    got = fused.create_context().execute(feeds)
    with monkeypatch.context() as m:
        m.setattr(Int8Lowering, "lower_int8_bridge", lambda self, layer: False)
        plain = GpuPartition(net, names)
    want = plain.create_context().execute(feeds)
    out = net.outputs[0]
    np.testing.assert_array_equal(got[out].view(np.uint32), want[out].view(np.uint32))
