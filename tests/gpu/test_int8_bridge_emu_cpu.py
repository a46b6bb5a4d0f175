"""Fused INT8 -> FP16 boundaries, run on the CPU through the CUDA emulator bit for bit against the
kernels they replace, on fresh random int8 data:

* ``Int8Lowering.lower_int8_bridge``: an FP16 element-wise layer between INT8 layers (an INT8
  squeeze-excitation's ``x * gate``) as one int8 -> int8 kernel instead of dequantize, the FP16
  layer and quantize for the consumer;
* ``Int8Lowering.float_of``: an int8 result read only by FP16 convolutions dequantized straight to
  NHWC fp16 instead of to float32 and then converted.
"""

from __future__ import annotations

import int8_nets as nets
import numpy as np
import pytest
from cuda_emu import EmulatedModule, compiler

from backends.gpu.kernels import gen
from backends.gpu.lower import lower
from backends.gpu.lower_int8 import Int8Lowering
from engine.ir.dtypes import Precision
from engine.ir.layers import ConvolutionParams, ElementWiseOp
from engine.ir.network import Network

pytestmark = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")


def _run_gen(low, labels: list[str], feeds: dict[str, np.ndarray], tmp_path) -> dict[str, np.ndarray]:
    """Run the generated kernels of ``labels`` in op order on buffers of every slot they touch."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    prelude_extra = gen.GEN_PRELUDE[len(gen.COMMON_SRC):]  # sgnf: the emulator's shim has its own
    emu = EmulatedModule(low.source.replace(prelude_extra, "\n", 1), tmp_path)
    bufs = dict(feeds)
    for op in low.ops:
        if op.label not in labels:
            continue
        for name in op.args:
            if name not in bufs:
                s = low.slots[name]
                bufs[name] = np.full(s.phys_shape, 0x55 if s.dtype == "int8" else 0, np.dtype(s.dtype))
        emu.launch(op.kernel, op.grid[0] * 256, [bufs[a] for a in op.args])
    return bufs


@pytest.mark.parametrize("op", [ElementWiseOp.PROD, ElementWiseOp.SUM, ElementWiseOp.SUB, ElementWiseOp.DIV])
@pytest.mark.parametrize("gate_first", [False, True])
def test_bridge_equals_the_three_kernels(rng, tmp_path, monkeypatch, op, gate_first):
    net = nets.se_net(rng, op, gate_first)
    fused = lower(net, net.layers, list(net.outputs))
    with monkeypatch.context() as m:
        m.setattr(Int8Lowering, "lower_int8_bridge", lambda self, layer: False)
        plain = lower(net, net.layers, list(net.outputs))
    # besides the network output's dequantization, one kernel instead of three
    fused_gen = [o.label for o in fused.ops if o.kind == "gen" and o.label != "dequant_project"]
    plain_gen = [o.label for o in plain.ops if o.kind == "gen" and o.label != "dequant_project"]
    assert fused_gen == ["se_mul_int8"], fused_gen
    assert len(plain_gen) == 3 and "se_mul" in plain_gen, plain_gen
    t = net.layers[1].outputs[0]
    # the int8 output of the expand conv (NHWC16, zero channel padding) and a float32 gate
    qname = next(o for o in fused.ops if o.label == "se_mul_int8").args[1 + int(gate_first)]
    slot = fused.slots[qname]
    q = np.zeros(slot.phys_shape, np.int8)
    q[..., :40] = rng.integers(-128, 128, size=q[..., :40].shape, dtype=np.int8)
    gate = rng.uniform(-2, 2, (2, 40, 1, 1)).astype(np.float32)
    if op is ElementWiseOp.DIV:
        gate = np.where(np.abs(gate) < 0.05, 0.5, gate).astype(np.float32)
    feeds = {qname: q, "gate": gate}
    got = _run_gen(fused, fused_gen, feeds, tmp_path / "f")
    want = _run_gen(plain, plain_gen, feeds, tmp_path / "p")
    out_f = next(o for o in fused.ops if o.label == "se_mul_int8").writes[0]
    out_p = next(o for o in plain.ops if o.label == f"quant_{t}").writes[0]
    assert fused.slots[out_f].phys_shape == plain.slots[out_p].phys_shape
    assert np.abs(want[out_p].astype(int)).max() > 10, "a near-zero result proves little"
    np.testing.assert_array_equal(got[out_f], want[out_p])


def test_bridge_needs_a_single_int8_consumer(rng):
    """A second reader of the element-wise result (here a network output) keeps the three kernels."""
    net = nets.se_net(rng, ElementWiseOp.PROD, False)
    net.mark_output(net.layers[1].outputs[0])
    low = lower(net, net.layers, list(net.outputs))
    assert "se_mul_int8" not in [o.label for o in low.ops]


def test_dequantize_straight_to_nhwc_equals_two_kernels(rng, tmp_path, monkeypatch):
    """conv8 (SiLU, int8 out) read only by an FP16 1x1 convolution (an SE gate's FC, say)."""
    net = Network("dq")
    net.add_input("x", (2, 24, 5, 5))
    a, _ = nets.add_conv8(net, rng, "x", 40, 1, act=nets.SILU, name="reduce")
    fc = net.add_layer(ConvolutionParams(num_output_maps=24, kernel=(1, 1), stride=(1, 1), pre_padding=(0, 0),
                                         post_padding=(0, 0), dilation=(1, 1)), [a.outputs[0]],
                       {"kernel": rng.normal(size=(24, 40, 1, 1)).astype(np.float32)}, name="gate_fc")
    fc.precision = Precision.FP16
    net.mark_output(fc.outputs[0])
    t = a.outputs[0]
    fused = lower(net, net.layers, list(net.outputs))
    with monkeypatch.context() as m:
        m.setattr(Int8Lowering, "_read_as_nhwc_only", lambda self, tensor: False)
        plain = lower(net, net.layers, list(net.outputs))
    fused_gen = [o.label for o in fused.ops if o.kind == "gen" and t in o.label]
    plain_gen = [o.label for o in plain.ops if o.kind == "gen" and t in o.label]
    assert fused_gen == [f"dequant_{t}"] and plain_gen == [f"dequant_{t}", f"to_nhwc_{t}"]
    assert (fused.slots[t].layout, fused.slots[t].dtype) == ("nhwc", "float16")
    qname = next(o for o in fused.ops if o.label == f"dequant_{t}").args[1]
    q = np.zeros(fused.slots[qname].phys_shape, np.int8)
    q[..., :40] = rng.integers(-128, 128, size=q[..., :40].shape, dtype=np.int8)
    got = _run_gen(fused, fused_gen, {qname: q}, tmp_path / "f")[t]
    want = _run_gen(plain, plain_gen, {qname: q}, tmp_path / "p")[f"{t}@nhwc"]
    assert got.shape == want.shape and np.abs(want.view(np.float16)).max() > 0
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
