"""INT8 lowering without CUDA: which INT8 layers get GPU kernels, where int8 tensors stay int8, and
why the others fall back."""

from __future__ import annotations

import int8_nets as nets
import numpy as np

from backends.gpu.kernels.int8 import MAX_KTOT, epilogue_params
from backends.gpu.lower import lower, supports
from engine.layers import ActivationSpec, ActivationType
from engine.quantization import annotation


def test_chain_keeps_int8_between_int8_layers():
    net, _ = nets.chain_net(np.random.default_rng(0))
    low = lower(net, net.layers, list(net.outputs))
    kinds = [(op.kind, op.label) for op in low.ops]
    assert [k for k, _ in kinds].count("conv8") == 3 and ("pool8", "p") in kinds
    # c2 reads c1's int8 tensor twice (input and residual) without a round trip through float
    c2 = next(op for op in low.ops if op.label == "c2")
    assert c2.reads[0] == c2.reads[2] == "c1@q8"
    assert low.slots["c1@q8"].layout == "nhwc16" and low.slots["c1@q8"].phys_shape == (2, 12, 12, 32)
    # c3 takes the pool output at another scale: dequantize, then quantize with its own scale
    assert [lb for _, lb in kinds if lb.startswith(("quant_", "dequant_"))] == ["quant_x", "dequant_p", "quant_p",
                                                                                 "dequant_c1"]


def test_fc_rows_layout_and_float_output():
    net, _ = nets.fc_net(np.random.default_rng(1), 8, 100, 10, None, float_out=True)
    low = lower(net, net.layers, list(net.outputs))
    assert low.slots["x@q8_0"].layout == "rows16" and low.slots["x@q8_0"].phys_shape == (8, 112)
    op = next(op for op in low.ops if op.kind == "conv8")
    assert op.info["ldy"] == 10 and op.info["epi"].osc is None and op.info["epi"].sacc.dtype == np.float64


def test_unsupported_int8_layers_fall_back_with_a_reason():
    rng = np.random.default_rng(2)
    net, _ = nets.conv_net(rng, 1, 8, 6, 6, 8, 3, 1, 1)
    layer = net.layers[0]
    layer.params = type(layer.params)(**{**layer.params.__dict__,
                                         "activation": ActivationSpec(ActivationType.SIGMOID)})
    ok, why = supports(layer, net)
    assert not ok and "sigmoid" in why
    big, _ = nets.fc_net(rng, 1, MAX_KTOT + 16, 4)
    ok, why = supports(big.layers[0], big)
    assert not ok and "int32" in why


def test_epilogue_params_follow_the_reference_rounding():
    net, _ = nets.conv_net(np.random.default_rng(3), 1, 8, 6, 6, 8, 3, 1, 1, nets.CLIP6, True)
    layer = net.layers[0]
    spec = annotation.read(layer)
    e = epilogue_params(layer, layer.params.activation, spec.input_scales[1])
    assert e.relu and e.bias.dtype == np.int64 and 0 <= e.clipq <= 127
    assert e.osc.max() <= 32767 and e.osh.min() >= 0 and e.rsc is not None
