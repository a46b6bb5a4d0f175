"""GPU lowering without CUDA: support decisions, layouts and the launch list of a real model."""

from __future__ import annotations

from backends.gpu.backend import split_segments
from backends.gpu.lower import lower, parse_tactic, supports
from engine.builder import Builder, BuilderConfig
from engine.layers import PoolingParams, PoolingType
from engine.logger import Logger, Severity
from engine.models import zoo
from engine.network import Network
from engine.onnx_parser import parse


def test_resnet18_lowers_to_one_segment_of_fused_convolutions():
    net = Builder(Logger(Severity.ERROR)).build(parse(zoo.resnet(18), batch=1), BuilderConfig(fp16=True)).network
    segs = split_segments(net, [la.name for la in net.layers])
    assert len(segs) == 1 and segs[0][0]
    low = lower(net, segs[0][1], list(net.outputs))
    kinds = [op.kind for op in low.ops]
    # 20 convs + the FC as a 1x1 conv; the max pool, and the global average pool as a block reduction
    assert kinds.count("conv") == 21 and kinds.count("pool") == 1 and kinds.count("gpool") == 1
    # NHWC inside: only the input conversion, the flatten and the output leave that layout
    assert kinds.count("gen") <= 3
    assert all(low.slots[op.info["y"]].layout == "nhwc" for op in low.ops if op.kind == "pool")
    assert set(low.outputs) == set(net.outputs)


def test_unsupported_layer_has_a_reason():
    net = Network("t")
    net.add_input("x", (1, 4, 8, 8))
    layer = net.add_layer(PoolingParams(PoolingType.LP, (2, 2), (2, 2)), ["x"])
    ok, why = supports(layer, net)
    assert not ok and "Lp" in why


def test_tactic_names_round_trip():
    from backends.gpu.kernels.conv import TILES, ConvTactic

    for t in TILES:
        tac = ConvTactic(t, 4)
        assert parse_tactic(tac.name) == tac
    assert parse_tactic("nonsense") is None
