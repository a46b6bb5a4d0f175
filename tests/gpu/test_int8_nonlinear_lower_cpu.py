"""INT8 SiLU / hard-swish lowering without CUDA: dense, depthwise and fully connected layers with
these epilogues get the INT8 GPU ops (no host fallback) with the non-linear epilogue's constants,
per-channel s_acc = s_in * s_w[k] and the output scale, and their int8 result flows on to the next
INT8 layer."""

from __future__ import annotations

import int8_nets as nets
import numpy as np
import pytest

from backends.gpu.kernels.int8 import NONLINEAR_FLAGS, DeviceEpilogue
from backends.gpu.layout import round_up
from backends.gpu.lower import lower, supports
from engine.ir import int8_annotation as annotation
from engine.ir.network import Network


def _s_acc(layer) -> np.ndarray:
    spec = annotation.read(layer)
    return np.float64(spec.input_scales[0]) * spec.kernel_scales.astype(np.float64)


@pytest.mark.parametrize("act", [nets.SILU, nets.HSWISH], ids=["silu", "hard_swish"])
@pytest.mark.parametrize("depthwise", [False, True], ids=["dense", "depthwise"])
@pytest.mark.parametrize("residual", [False, True], ids=["", "res"])
def test_nonlinear_convolution_lowers_to_the_int8_kernel(act, depthwise, residual):
    rng = np.random.default_rng([int(depthwise), int(residual), len(act.type.value)])
    if depthwise:
        net, _ = nets.dw_net(rng, 2, 40, 9, 9, 3, 1, 1, 1, act, residual)
    else:
        net, _ = nets.conv_net(rng, 2, 24, 8, 8, 40, 3, 1, 1, act, residual)
    layer = net.layers[0]
    assert supports(layer, net) == (True, "")
    low = lower(net, net.layers, list(net.outputs))
    op = next(op for op in low.ops if op.label == layer.name)
    assert op.kind == ("dwconv8" if depthwise else "conv8")
    e = op.info["epi"]
    assert e.nonlinear == act.type.value and e.quantized and e.osc is None and not e.relu
    assert e.sout == float(annotation.read(layer).output_scale)
    np.testing.assert_array_equal(e.sacc, _s_acc(layer))
    assert (e.rsc is not None) == residual and e.bias is not None
    assert low.slots[op.info["y"]].dtype == "int8" and op.info["ldy"] == 48
    dev = DeviceEpilogue.upload(e, np)
    assert dev.flags & 12 == NONLINEAR_FLAGS[act.type.value] and dev.sout == e.sout
    np.testing.assert_array_equal(dev.sacc, e.sacc)


@pytest.mark.parametrize("depthwise", [False, True], ids=["dense", "depthwise"])
def test_nonlinear_float_output(depthwise):
    rng = np.random.default_rng(3)
    if depthwise:
        net, _ = nets.dw_net(rng, 1, 20, 6, 6, 3, 1, 1, 1, nets.SILU, False, None)
    else:
        net, _ = nets.conv_net(rng, 1, 8, 6, 6, 20, 3, 1, 1, nets.SILU, False, None)
    op = next(op for op in lower(net, net.layers, list(net.outputs)).ops if op.kind in ("conv8", "dwconv8"))
    e = op.info["epi"]
    assert e.nonlinear == "silu" and not e.quantized and e.sout is None
    assert op.info["ldy"] == round_up(20, 8)
    assert DeviceEpilogue.upload(e, np).sout == 0.0  # the kernel's float-output signal


def test_silu_block_keeps_int8_between_layers():
    """expand 1x1 (SiLU) -> depthwise 3x3 (SiLU) -> project 1x1: int8 tensors, no float round trip."""
    rng = np.random.default_rng(4)
    net = Network("silu_block")
    net.add_input("x", (2, 16, 10, 10))
    e, se = nets.add_conv8(net, rng, "x", 64, 1, act=nets.SILU, name="expand")
    d, sd = nets.add_dw8(net, rng, e.outputs[0], 3, 1, 1, act=nets.SILU, s_in=se, name="dw")
    p, _ = nets.add_conv8(net, rng, d.outputs[0], 16, 1, act=None, s_in=sd, name="project")
    net.mark_output(p.outputs[0])
    assert all(supports(la, net)[0] for la in net.layers)
    low = lower(net, net.layers, list(net.outputs))
    by = {op.label: op for op in low.ops}
    assert [by[n].kind for n in ("expand", "dw", "project")] == ["conv8", "dwconv8", "conv8"]
    assert by["dw"].reads[0] == f"{e.outputs[0]}@q8" and by["project"].reads[0] == f"{d.outputs[0]}@q8"
    assert not any(op.label.startswith("dequant_" + e.outputs[0]) for op in low.ops)
