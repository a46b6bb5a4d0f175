"""INT8 lowering without CUDA: which INT8 layers get GPU kernels, where int8 tensors stay int8, and
why the others fall back."""

from __future__ import annotations

import int8_nets as nets
import numpy as np
import pytest

from backends.gpu.kernels.conv import ConvGeometry
from backends.gpu.kernels.int8 import MAX_KTOT, epilogue_params
from backends.gpu.lower import lower, supports
from backends.gpu.space_to_depth import space_to_depth_conv, space_to_depth_kernel
from engine.ir import int8_annotation as annotation
from engine.ir.layers import ActivationSpec, ActivationType


def test_chain_keeps_int8_between_int8_layers():
    net, _ = nets.chain_net(np.random.default_rng(0))
    low = lower(net, net.layers, list(net.outputs))
    kinds = [(op.kind, op.label) for op in low.ops]
    assert [k for k, _ in kinds].count("conv8") == 3 and ("pool8", "p") in kinds
    # c2 reads c1's int8 tensor twice (input and residual) without a round trip through float
    c2 = next(op for op in low.ops if op.label == "c2")
    assert c2.reads[0] == c2.reads[2] == "c1@q8"
    assert low.slots["c1@q8"].layout == "nhwc16" and low.slots["c1@q8"].phys_shape == (2, 12, 12, 32)
    # c3 takes the pool output at another scale: requantized int8 -> int8 in one launch (the float
    # path's steps, lowering/int8_gather.py); c1, an output, is dequantized
    assert [lb for _, lb in kinds if lb.startswith(("quant_", "dequant_", "gather8_"))] == [
        "quant_x", "gather8_p", "dequant_c1"]


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


def _conv_int(x: np.ndarray, w: np.ndarray, stride: int, pad: tuple[int, int], p: int, q: int) -> np.ndarray:
    """Exact integer convolution (int64), zero padding on top/left ``pad`` and wherever reads fall outside."""
    n, c, h, wd = x.shape
    k, _, r, s = w.shape
    big = np.zeros((n, c, pad[0] + stride * p + r, pad[1] + stride * q + s), np.int64)
    big[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + wd] = x
    out = np.zeros((n, k, p, q), np.int64)
    for i in range(r):
        for j in range(s):
            patch = big[:, :, i:i + stride * p:stride, j:j + stride * q:stride]
            out += np.einsum("nchw,kc->nkhw", patch, w[:, :, i, j].astype(np.int64))
    return out


def _space_to_depth(x: np.ndarray, h2: int, w2: int) -> np.ndarray:
    """quant_nchw_s8's s2d mapping: channel (v * 2 + u) * C + c of pixel (i, j) = x[c, 2i + v, 2j + u]."""
    n, c, h, w = x.shape
    out = np.zeros((n, 4 * c, h2, w2), x.dtype)
    for v in range(2):
        for u in range(2):
            blk = x[:, :, v::2, u::2]
            out[:, (v * 2 + u) * c:(v * 2 + u + 1) * c, :blk.shape[2], :blk.shape[3]] = blk
    return out


@pytest.mark.parametrize("c,h,w,r,pad", [(3, 32, 32, 7, 3), (3, 15, 17, 7, 3), (4, 9, 8, 3, 1), (1, 10, 11, 1, 0),
                                         (2, 12, 13, 5, 2), (3, 11, 11, 4, 0), (3, 14, 9, 3, 2)])
def test_space_to_depth_conv_has_the_same_sums(c, h, w, r, pad):
    """The stride-1 conv over the 2x2 space-to-depth input gives every int32 sum of the stride-2 conv."""
    rng = np.random.default_rng(c * 100 + h + r)
    g = ConvGeometry(2, h, w, c, 5, r, r, (2, 2), (pad, pad))
    g2 = space_to_depth_conv(g)
    assert g2 is not None and (g2.p, g2.q) == (g.p, g.q) and g2.stride == (1, 1) and g2.c == 4 * c
    x = rng.integers(-128, 128, (2, c, h, w))
    wq = rng.integers(-128, 128, (5, c, r, r)).astype(np.int8)
    want = _conv_int(x, wq, 2, g.pad, g.p, g.q)
    w2 = space_to_depth_kernel(wq, g)
    assert w2.shape == (5, 4 * c, g2.r, g2.s) and np.abs(w2.astype(np.int64)).sum() == np.abs(wq.astype(np.int64)).sum()
    got = _conv_int(_space_to_depth(x, g2.h, g2.w), w2, 1, g2.pad, g2.p, g2.q)
    np.testing.assert_array_equal(got, want)


def test_space_to_depth_applies_only_to_stride2_few_channels():
    assert space_to_depth_conv(ConvGeometry(1, 8, 8, 5, 4, 3, 3, (2, 2), (1, 1))) is None
    assert space_to_depth_conv(ConvGeometry(1, 8, 8, 3, 4, 3, 3, (1, 1), (1, 1))) is None
    assert space_to_depth_conv(ConvGeometry(1, 8, 8, 3, 4, 3, 3, (2, 2), (1, 1), (2, 2))) is None


def test_stem_lowers_to_space_to_depth_and_a_vectorized_quantize():
    net, _ = nets.conv_net(np.random.default_rng(4), 2, 3, 32, 32, 64, 7, 2, 3, nets.RELU)
    low = lower(net, net.layers, list(net.outputs))
    quant, conv = low.ops[:2]  # then the output's dequantize
    assert quant.kind == "quant8" and quant.info["s2d"] and quant.label == "quant_x_s2d"
    g = conv.info["geom"]
    assert (g.c, g.r, g.s, g.stride, g.h, g.w, g.p, g.q) == (12, 4, 4, (1, 1), 16, 16, 16, 16)
    assert low.slots[quant.writes[0]].phys_shape == (2, 16, 16, 16)
    # the same input at stride 1 is quantized by the plain vectorized kernel
    net, _ = nets.conv_net(np.random.default_rng(5), 2, 3, 8, 8, 16, 3, 1, 1, nets.RELU)
    low = lower(net, net.layers, list(net.outputs))
    assert low.ops[0].kind == "quant8" and not low.ops[0].info["s2d"]


def test_pointwise_tactic_is_a_plan_tactic_and_a_misfit_falls_back_to_the_tiles(monkeypatch):
    """'s8pw' is a tactic a plan may name; on a layer the pointwise kernel does not take (3x3) the
    lowering gives the tiles' heuristic instead, and on a 1x1 it keeps it where the module compiles."""
    from backends.gpu.kernels import int8_pw
    from backends.gpu.kernels.int8 import Tactic8
    from backends.gpu.kernels.int8_pw import PointwiseTactic8
    from backends.gpu.tactics import compiled_tactic

    assert compiled_tactic("s8pw") and not compiled_tactic("s8pw_k2")
    monkeypatch.setattr(int8_pw, "pointwise8_usable", lambda: True)
    for r, pad, want in ((3, 1, Tactic8), (1, 0, PointwiseTactic8)):
        net, _ = nets.conv_net(np.random.default_rng(1), 2, 32, 8, 8, 48, r, 1, pad)
        low = lower(net, net.layers, list(net.outputs), {net.layers[0].name: "s8pw"})
        (op,) = [op for op in low.ops if op.kind == "conv8"]
        assert isinstance(op.info["tactic"], want), op.info["tactic"]


def test_timing_cache_digest_covers_the_pointwise_kernel(monkeypatch):
    """A timing taken before the pointwise kernel's text changed is not reused: the kernels digest in
    every timing-cache key reads ``PW8_SRC``."""
    from backends.gpu import tactics
    from backends.gpu.kernels import int8_pw_src

    digest = tactics._kernels_digest.__wrapped__  # the cached one keeps the first answer
    before = digest()
    monkeypatch.setattr(int8_pw_src, "PW8_SRC", int8_pw_src.PW8_SRC + "\n// edited\n")
    assert digest() != before


def test_streaming_tactic_is_a_plan_tactic_and_a_misfit_falls_back_to_the_tiles(monkeypatch):
    """An 's8stream_…' name of a compiled tile is a tactic a plan may name (another tile's is not);
    on a layer the streaming kernel does not take (3x3) the lowering gives the tiles' heuristic
    instead, on a 1x1 it keeps the named tile where the module compiles, and where it does not
    compile (no GPU) the heuristic again."""
    from backends.gpu.kernels import int8_stream
    from backends.gpu.kernels.int8 import Tactic8
    from backends.gpu.kernels.int8_stream import STREAM8_TILES, StreamTactic8
    from backends.gpu.tactics import compiled_tactic

    name = StreamTactic8(STREAM8_TILES[1]).name
    assert compiled_tactic(name) and not compiled_tactic("s8stream_96x64_w2x2_s3")
    for usable, r, pad, want in ((True, 3, 1, Tactic8), (True, 1, 0, StreamTactic8), (False, 1, 0, Tactic8)):
        monkeypatch.setattr(int8_stream, "stream8_usable", lambda u=usable: u)
        net, _ = nets.conv_net(np.random.default_rng(1), 2, 64, 8, 8, 96, r, 1, pad)
        low = lower(net, net.layers, list(net.outputs), {net.layers[0].name: name})
        (op,) = [op for op in low.ops if op.kind == "conv8"]
        assert isinstance(op.info["tactic"], want), (usable, r, op.info["tactic"])
        if want is StreamTactic8:
            assert op.info["tactic"].tile == STREAM8_TILES[1] and op.workspace == 0


def test_timing_cache_digest_covers_the_streaming_kernel(monkeypatch):
    """A timing taken before the streaming kernel's text or tiles changed is not reused."""
    from backends.gpu import tactics
    from backends.gpu.kernels import int8_stream, int8_stream_src

    digest = tactics._kernels_digest.__wrapped__
    before = digest()
    monkeypatch.setattr(int8_stream_src, "STREAM8_BODY", int8_stream_src.STREAM8_BODY + "\n// edited\n")
    assert digest() != before
    monkeypatch.undo()
    monkeypatch.setattr(int8_stream, "STREAM8_TILES", int8_stream.STREAM8_TILES[:-1])
    assert digest() != before


def test_wgmma_plan_tactic_falls_back_to_the_tiles_where_the_module_does_not_compile(monkeypatch):
    """A plan built on Hopper names an 's8wgmma_…' tile; where the sm_90a module does not compile
    (another GPU, or none) the lowering gives the heuristic tile instead, and keeps it where it does."""
    from backends.gpu.kernels import int8
    from backends.gpu.kernels.int8 import TILES8_WG, Tactic8, Tile8Wg

    name = Tactic8(TILES8_WG[0]).name
    for usable in (False, True):
        monkeypatch.setattr(int8, "wgmma_usable8", lambda u=usable: u)
        net, _ = nets.conv_net(np.random.default_rng(2), 2, 64, 8, 8, 128, 3, 1, 1)
        low = lower(net, net.layers, list(net.outputs), {net.layers[0].name: name})
        (op,) = [op for op in low.ops if op.kind == "conv8"]
        assert isinstance(op.info["tactic"].tile, Tile8Wg) == usable, (usable, op.info["tactic"])


@pytest.mark.parametrize("fc_scale,flat_out", [(1.0, False), (1.0, True), (1.5, False)])
def test_flatten_of_a_pooled_int8_tensor_is_an_alias(fc_scale, flat_out):
    """Global pooling -> flatten -> fully connected: the (N, C, 1, 1) int8 tensor already is the
    (N, C) rows the FC reads, so at the same scale no launch sits between them (no dequantize,
    reshape, quantize); a float reader of the flattened tensor still gets its dequantize, and a
    different scale still requantizes through float."""
    net, _ = nets.classifier_net(np.random.default_rng(3), fc_scale=fc_scale, flat_out=flat_out)
    low = lower(net, net.layers, list(net.outputs))
    labels = [op.label for op in low.ops]
    fc = next(op for op in low.ops if op.label == "fc")
    gap = next(op for op in low.ops if op.label == "gap")
    if fc_scale == 1.0:
        flat = low.slots[fc.reads[0]]
        assert flat.alias == gap.writes[0] and flat.layout == "rows16" and flat.phys_shape == (3, 48)
        assert labels.index("fc") == labels.index("gap") + 1 or flat_out
        assert [lb for lb in labels if lb.startswith("quant_")] == ["quant_x"]
    else:
        assert low.slots[fc.reads[0]].alias is None
        assert any(lb.startswith("quant_") and "flatten" in lb for lb in labels), labels
    assert any(lb.startswith("dequant_") for lb in labels) == (flat_out or fc_scale != 1.0), labels
