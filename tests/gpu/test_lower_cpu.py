"""GPU lowering without CUDA: support decisions, layouts and the launch list of a real model."""

from __future__ import annotations

from backends.gpu.backend import split_segments
from backends.gpu.lower import lower, parse_tactic, supports
from engine.builder import Builder, BuilderConfig
from engine.ir.layers import PoolingParams, PoolingType
from engine.ir.logger import Logger, Severity
from engine.ir.network import Network
from engine.models import zoo
from engine.onnx_parser import parse


def test_resnet18_lowers_to_one_segment_of_fused_convolutions():
    net = Builder(Logger(Severity.ERROR)).build(parse(zoo.resnet(18), batch=1), BuilderConfig(fp16=True)).network
    segs = split_segments(net, [la.name for la in net.layers])
    assert len(segs) == 1 and segs[0][0]
    low = lower(net, segs[0][1], list(net.outputs))
    kinds = [op.kind for op in low.ops]
    # 20 convs + the FC as a 1x1 conv; the max pool, and the global average pool as a block reduction
    assert kinds.count("conv") == 21 and kinds.count("pool") == 1 and kinds.count("gpool") == 1
    # the 7x7 stride-2 stem on 3 channels reads the input's 2x2 space-to-depth: 4x4 stride 1 on 12
    assert low.ops[0].kind == "s2d" and low.slots[low.ops[0].writes[0]].phys_shape == (1, 112, 112, 16)
    stem = next(op for op in low.ops if op.kind == "conv").info["geom"]
    assert (stem.c, stem.r, stem.s, stem.stride, stem.p, stem.q) == (12, 4, 4, (1, 1), 112, 112)
    # NHWC inside: only the flatten and the output leave that layout
    assert kinds.count("gen") <= 2
    assert all(low.slots[op.info["y"]].layout == "nhwc" for op in low.ops if op.kind == "pool")
    assert set(low.outputs) == set(net.outputs)


def test_unsupported_layer_has_a_reason():
    net = Network("t")
    net.add_input("x", (1, 4, 8, 8))
    layer = net.add_layer(PoolingParams(PoolingType.LP, (2, 2), (2, 2)), ["x"])
    ok, why = supports(layer, net)
    assert not ok and "Lp" in why


def test_tactic_names_round_trip():
    from backends.gpu.kernels.conv import TILES, TILES_WG, ConvTactic
    from backends.gpu.kernels.int8 import TILES8, Tactic8, parse_tactic8

    for t in TILES + TILES_WG:
        tac = ConvTactic(t, 4)
        assert parse_tactic(tac.name) == tac
    for t8 in TILES8:
        assert parse_tactic8(Tactic8(t8, 2).name) == Tactic8(t8, 2)
    assert parse_tactic("nonsense") is None
    # tiles the module does not compile, the other kernel's prefix, no splits, a non-canonical spelling
    for bad in ("igemm_100x64_w2x2_s4_k1", "igemm_128x256x32_w2x4_s3_k1", "s8igemm_64x64_w2x2_s4_k1",
                "igemm_64x64_w2x2_s4_k0", "igemm_64x64_w2x2_s4_k01", "wgmma_128x128x64_w2x4_s3_k1",
                "igemm_128x128x64_w8x1_s3_k1", "wgmma_128x128_w8x1_s3_k1"):
        assert parse_tactic(bad) is None, bad
    assert parse_tactic8("igemm_64x64_w2x2_s4_k1") is None


def test_a_wgmma_tactic_falls_back_where_wgmma_cannot_run():
    """A plan timed on a Hopper GPU names wgmma tiles; where they cannot run (no sm_90 device here)
    the lowering takes the heuristic tile for that layer instead of failing at launch."""
    from backends.gpu.kernels.conv import TILES_WG, ConvTactic, wgmma_usable

    net = Builder(Logger(Severity.ERROR)).build(parse(zoo.resnet(18), batch=1), BuilderConfig(fp16=True)).network
    segs = split_segments(net, [la.name for la in net.layers])
    convs = [la.name for la in net.layers if la.kind.value == "convolution"]
    wg = ConvTactic(TILES_WG[0]).name
    low = lower(net, segs[0][1], list(net.outputs), tactics={name: wg for name in convs})
    tiles = [op.info["tactic"].tile for op in low.ops if op.kind == "conv"]
    assert tiles and all((t in TILES_WG) == wgmma_usable() for t in tiles)
