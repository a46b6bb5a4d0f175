"""The fused attention kernel and its matching, without CUDA.

The kernel runs in the CUDA emulator on fresh random fp16 data against a float64 numpy
softmax(scale·Q·Kᵀ + bias)·V (fp16 tolerance: the probabilities are rounded to fp16 before the
second product, as the unfused layers round them), over geometries that exercise every path:
ragged query and key tiles, head dims that are no multiple of 16, strided views, element-wise and
16-byte loads, a broadcast bias in fp16 and fp32, masked keys. The matcher is checked on networks
built with the network API: which blocks it fuses, and which it must leave alone.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from cuda_emu import EmulatedModule, compiler
from emu_lowered import run_lowered

from backends.gpu.kernels import attention_src as att
from backends.gpu.kernels import gen
from backends.gpu.kernels.common import COMMON_SRC
from backends.gpu.lower import lower
from engine.ir.dtypes import Precision
from engine.ir.layers import (
    FullyConnectedParams,
    GatherParams,
    LayerKind,
    MatrixMultiplyParams,
    ShuffleParams,
    SoftMaxParams,
)
from engine.ir.network import Network

needs_emulator = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")
FP16_REL = 2e-3  # relative L2 against float64: fp16 inputs, fp16 probabilities, fp32 accumulation


def _numpy_attention(q, k, v, scale, bias=None, bias_scale=1.0):
    s = np.einsum("...qd,...kd->...qk", q.astype(np.float64), k.astype(np.float64)) * scale
    if bias is not None:
        s = s + bias_scale * bias.astype(np.float64)
    with np.errstate(invalid="ignore"):
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
    return np.einsum("...qk,...kv->...qv", p, v.astype(np.float64))


def _contiguous(shape) -> att.AttentionOperand:
    st = gen.row_major(shape)
    return att.AttentionOperand(tuple(st[:-2]), st[-2], st[-1])


def _rel(got, want) -> float:
    return float(np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want))


@needs_emulator
@pytest.mark.parametrize("batch, sq, sk, d, dv", [
    ((2, 3), 70, 130, 64, 64),  # two query blocks, three key tiles, the last ragged
    ((1,), 5, 3, 24, 40),  # fewer keys than a tile; Dv no multiple of 16
    ((2,), 17, 65, 128, 72),  # the largest head dim
    ((3,), 9, 20, 20, 9),  # D and Dv no multiple of 8: element-wise loads, an odd Dv's stores
])
def test_kernel_matches_float64(tmp_path, batch, sq, sk, d, dv):
    rng = np.random.default_rng()
    q = rng.standard_normal((*batch, sq, d)).astype(np.float16)
    k = rng.standard_normal((*batch, sk, d)).astype(np.float16)
    v = rng.standard_normal((*batch, sk, dv)).astype(np.float16)
    scale = float(rng.uniform(0.5, 1.5) / np.sqrt(d))
    geom = att.AttentionGeometry(batch, sq, sk, d, dv, scale)
    src = att.attention_kernel("attn", geom, _contiguous(q.shape), _contiguous(k.shape), _contiguous(v.shape))
    assert ("uint4 val" in src) == (d % 8 == 0)
    y = np.full((*batch, sq, dv), np.nan, np.float16)
    EmulatedModule(COMMON_SRC + src, tmp_path).run("attn", geom.grid, att.THREADS, [y, q, k, v],
                                                   att.shared_bytes(geom))
    assert _rel(y, _numpy_attention(q, k, v, scale)) < FP16_REL


@needs_emulator
def test_double_buffered_tiles_land_in_time(tmp_path):
    """The K/V copies of the next tile go to the other stage while this one is read: landing them
    at issue (the earliest moment the hardware may) must give the bits of landing them at their
    wait (the latest), over five key tiles with a ragged last one and query rows past Sq."""
    rng = np.random.default_rng()
    batch, sq, sk, d = (2,), 70, 300, 64
    q, k, v = (rng.standard_normal((*batch, n, d)).astype(np.float16) for n in (sq, sk, sk))
    geom = att.AttentionGeometry(batch, sq, sk, d, d, 0.125)
    src = att.attention_kernel("attn", geom, *(_contiguous(t.shape) for t in (q, k, v)))
    assert "cp_async16" in src and att.shared_bytes(geom) == 2 * 2 * att.BLOCK_KEYS * 2 * (d + 8)
    mod = EmulatedModule(COMMON_SRC + src, tmp_path)
    ys = []
    for early in (False, True):
        mod.land_copies_at_issue(early)
        ys.append(np.full((*batch, sq, d), np.nan, np.float16))
        mod.run("attn", geom.grid, att.THREADS, [ys[-1], q, k, v], att.shared_bytes(geom))
    np.testing.assert_array_equal(ys[0], ys[1])
    assert _rel(ys[0], _numpy_attention(q, k, v, 0.125)) < FP16_REL


@needs_emulator
@pytest.mark.parametrize("bias_dtype", ["float16", "float32"])
def test_kernel_reads_strided_views_and_a_broadcast_bias(tmp_path, bias_dtype):
    """Q, K and V as views of one (S, B, 3·H·D) projection (torch's MultiheadAttention layout),
    a bias broadcast over the batch with a scale of its own, and keys masked by -inf."""
    rng = np.random.default_rng()
    B, H, S, D = 2, 3, 33, 16
    qkv = rng.standard_normal((S, B, 3 * H * D)).astype(np.float16)
    bias = rng.standard_normal((1, H, S, S)).astype(bias_dtype)
    bias[0, 1, :, 5:9] = -np.inf  # masked keys of one head

    def view(i: int) -> att.AttentionOperand:  # q[b, h, s, d] = qkv[s, b, i·H·D + h·D + d]
        return att.AttentionOperand((3 * H * D, D), B * 3 * H * D, 1, i * H * D)

    geom = att.AttentionGeometry((B, H), S, S, D, D, 0.25)
    src = att.attention_kernel("attn", geom, view(0), view(1), view(2),
                               [att.AttentionBias(att.AttentionOperand((0, S * S), S, 1), bias_dtype, 0.5)])
    y = np.full((B, H, S, D), np.nan, np.float16)
    EmulatedModule(COMMON_SRC + src, tmp_path).run("attn", geom.grid, att.THREADS, [y, qkv, qkv, qkv, bias],
                                                   att.shared_bytes(geom))
    q, k, v = qkv.reshape(S, B, 3, H, D).transpose(2, 1, 3, 0, 4)
    assert _rel(y, _numpy_attention(q, k, v, 0.25, bias, 0.5)) < FP16_REL


@needs_emulator
def test_a_fully_masked_row_is_nan_as_softmax_gives(tmp_path):
    rng = np.random.default_rng()
    q, k, v = (rng.standard_normal((1, 4, 8)).astype(np.float16) for _ in range(3))
    bias = np.zeros((1, 4, 4), np.float32)
    bias[0, 2] = -np.inf
    geom = att.AttentionGeometry((1,), 4, 4, 8, 8, 1.0)
    src = att.attention_kernel("attn", geom, *(_contiguous(t.shape) for t in (q, k, v)),
                               [att.AttentionBias(_contiguous(bias.shape), "float32")])
    y = np.zeros((1, 4, 8), np.float16)
    EmulatedModule(COMMON_SRC + src, tmp_path).run("attn", geom.grid, att.THREADS, [y, q, k, v, bias],
                                                   att.shared_bytes(geom))
    want = _numpy_attention(q, k, v, 1.0, bias)
    assert np.isnan(y[0, 2]).all() and np.isnan(want[0, 2]).all()
    keep = [0, 1, 3]
    assert _rel(y[0, keep], want[0, keep]) < FP16_REL


@pytest.mark.parametrize("d, dv, views, bounded", [(64, 64, True, True), (32, 32, True, False),
                                                    (128, 128, True, False), (64, 64, False, False)])
def test_four_ctas_an_sm_only_where_measured(d, dv, views, bounded):
    """The 128-register bound applies to the double-buffered kernel at head dims 64 only (it spilled
    and lost at 32 and 128); an operand without 16-byte loads keeps one stage and no bound."""
    geom = att.AttentionGeometry((2,), 70, 70, d, dv, 0.1)
    op = _contiguous((2, 70, d)) if views else att.AttentionOperand((70 * d,), d, 1, 1)  # odd base: no vectors
    src = att.attention_kernel("attn", geom, op, op, _contiguous((2, 70, dv)))
    assert ("cp_async16" in src) == (d <= 64 and views)
    assert ("__launch_bounds__(128, 4)" in src) == bounded


def test_geometry_limits_are_named():
    assert "head dims" in att.supported(att.AttentionGeometry((1,), 4, 4, 160, 64, 1.0))
    assert "grid" in att.supported(att.AttentionGeometry((70000,), 4, 4, 64, 64, 1.0))
    with pytest.raises(ValueError, match="head dims"):
        att.attention_kernel("a", att.AttentionGeometry((1,), 4, 4, 256, 64, 1.0), *[_contiguous((4, 256))] * 3)


# ------------------------------------------------------------------------------ matching


S, B, H, D = 11, 2, 2, 8


def attention_net(variant: str = "plain", precision: Precision = Precision.FP16) -> tuple[Network, dict]:
    """x (S, B, 3·H·D) -> relu (the projection) -> head split -> scaled attention -> (B, S, H·D)."""
    net = Network(f"attn_{variant}")
    x = net.add_input("x", (S, B, 3 * H * D))
    proj = net.add_activation(x, "relu", name="proj").name
    split = net.add_layer(ShuffleParams(reshape=(S, B, 3, H, D), second_perm=(2, 1, 3, 0, 4)), [proj], name="split")
    heads = []
    for i in range(3):
        g = net.add_layer(GatherParams(axis=0), split.outputs, {"indices": np.array(i, np.int64)}, name=f"g{i}")
        heads.append(g.outputs[0])
    q, k, v = heads
    scale = net.add_constant(np.array([0.5], np.float32), name="scale").name
    qs = net.add_elementwise(q, scale, "prod", name="q_scaled").name
    kt = net.add_layer(ShuffleParams(first_perm=(0, 1, 3, 2)), [k], name="kt").outputs[0]
    ks = net.add_elementwise(kt, scale, "prod", name="k_scaled").name
    s = net.add_layer(MatrixMultiplyParams(), [qs, ks], name="qk").outputs[0]
    extra = {}
    if variant == "bias":
        bias = net.add_constant(np.random.default_rng().standard_normal((H, S, S)).astype(np.float32), name="bias")
        s = net.add_elementwise(s, bias.name, "sum", name="add_bias").name
        extra["bias"] = net.layer("bias").weights["value"]
    p = net.add_layer(SoftMaxParams(axis=-1 if variant != "axis" else 2), [s], name="softmax").outputs[0]
    o = net.add_layer(MatrixMultiplyParams(), [p, v], name="pv").outputs[0]
    out = net.add_layer(ShuffleParams(first_perm=(0, 2, 1, 3), reshape=(B, S, H * D)), [o], name="merge")
    net.mark_output(out.outputs[0])
    if variant == "scores_out":
        net.mark_output(s)
    for la in net.layers:
        la.precision = precision
    return net, extra


def _fused(net: Network) -> list[str]:
    low = lower(net, net.layers, list(net.outputs))
    return [op.label for op in low.ops if "pv" in op.label.split(" + ") and op.block == att.THREADS]


def test_attention_block_is_fused_and_reads_the_projection():
    net, _ = attention_net()
    low = lower(net, net.layers, list(net.outputs))
    fused = [op for op in low.ops if op.block == att.THREADS]
    assert len(fused) == 1
    # kt, the transpose of K, is the kernel's operand orientation
    assert set(fused[0].label.split(" + ")) == {"q_scaled", "kt", "k_scaled", "qk", "softmax", "pv", "merge"}
    proj = next(op for op in low.ops if op.label == "proj").writes[0]
    assert fused[0].reads == [proj]  # Q, K and V are views of the projection: no copies
    assert not {"g0", "g1", "g2", "kt", "split", "merge"} & {op.label for op in low.ops}  # O lands merged


@pytest.mark.parametrize("variant, precision", [("scores_out", Precision.FP16), ("axis", Precision.FP16),
                                                ("plain", Precision.FP32)])
def test_blocks_the_kernel_cannot_take_stay_unfused(variant, precision):
    """Scores read outside the block, a softmax over another axis, an FP32 build."""
    net, _ = attention_net(variant, precision)
    assert _fused(net) == []


def _numpy_net(x: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    q, k, v = np.maximum(x.astype(np.float64), 0).reshape(S, B, 3, H, D).transpose(2, 1, 3, 0, 4)
    o = _numpy_attention(q, k, v, 0.25, bias)
    return o.transpose(0, 2, 1, 3).reshape(B, S, H * D)


@needs_emulator
@pytest.mark.parametrize("variant", ["plain", "bias"])
def test_fused_block_runs_like_numpy(tmp_path, variant):
    net, extra = attention_net(variant)
    assert len(_fused(net)) == 1
    x = np.random.default_rng().standard_normal((S, B, 3 * H * D)).astype(np.float16).astype(np.float32)
    got = run_lowered(lower(net, net.layers, list(net.outputs)), {"x": x}, tmp_path)
    (out,) = got.values()
    bias = extra.get("bias")
    assert _rel(out, _numpy_net(x, None if bias is None else bias.astype(np.float16))) < FP16_REL


# ------------------------------------------------------------------------------ random blocks


def _random_block(rng: np.random.Generator) -> tuple[Network, dict, Callable, list[str]]:
    """A random attention block as exporters may write it: batch rank 0-2, transposed operands
    by flag or by layer, scales on Q, on K or on the scores (multiply or divide, before or after
    a bias of a random broadcast shape), and the float64 numpy of the same math."""
    batch = tuple(int(d) for d in rng.integers(1, 4, size=int(rng.integers(0, 3))))
    sq, sk = int(rng.integers(1, 80)), int(rng.integers(1, 80))
    d, dv = int(rng.choice([8, 16, 24, 40, 64])), int(rng.choice([8, 16, 32, 48]))
    ta, tb, tv = (bool(rng.integers(2)) for _ in range(3))
    net = Network("random_attention")
    feeds: dict[str, np.ndarray] = {}

    def operand(name: str, shape: tuple[int, ...]) -> str:
        feeds[name] = rng.standard_normal(shape).astype(np.float16).astype(np.float32)
        return net.add_activation(net.add_input(name, shape), "tanh", name=f"{name}_dev").name  # device fp16

    def scalar(v: float) -> str:
        return net.add_constant(np.array([v], np.float32)).name

    q = operand("q", (*batch, d, sq) if ta else (*batch, sq, d))
    k = operand("k", (*batch, sk, d) if tb else (*batch, d, sk))
    v = operand("v", (*batch, dv, sk) if tv else (*batch, sk, dv))
    cq = float(rng.uniform(0.2, 1.0))
    qs = net.add_elementwise(q, scalar(cq), "prod").name
    ck = float(rng.uniform(1.0, 3.0))
    swap = ShuffleParams(first_perm=(*range(len(batch)), len(batch) + 1, len(batch)))
    order = int(rng.integers(3))  # K transposed by a layer, undone by the flag: none, before, after its scale
    ks = net.add_layer(swap, [k]).outputs[0] if order == 1 else k
    ks = net.add_elementwise(ks, scalar(ck), "div").name if rng.integers(2) else ks
    ck = ck if net.producers()[ks].kind is LayerKind.ELEMENTWISE else 1.0
    ks = net.add_layer(swap, [ks]).outputs[0] if order == 2 else ks
    s = net.add_layer(MatrixMultiplyParams(transpose_a=ta, transpose_b=tb != (order > 0)), [qs, ks]).outputs[0]
    q_k_path = [la.name for la in net.layers if la.kind in (LayerKind.SHUFFLE, LayerKind.ELEMENTWISE)]
    full = (*batch, sq, sk)
    bias_shape = tuple(int(x) if rng.integers(2) else 1 for x in full)[int(rng.integers(0, len(full))):]
    bias = rng.standard_normal(bias_shape).astype(np.float32) if rng.integers(3) else None
    post, early = float(rng.uniform(0.5, 1.5)), bool(rng.integers(2))
    if early:
        s = net.add_elementwise(s, scalar(post), "prod").name
    if bias is not None:
        s = net.add_elementwise(net.add_constant(bias).name, s, "sum").name
    if not early:
        s = net.add_elementwise(s, scalar(post), "prod").name
    p = net.add_layer(SoftMaxParams(axis=-1), [s]).outputs[0]
    o = net.add_layer(MatrixMultiplyParams(transpose_b=tv), [p, v]).outputs[0]
    net.mark_output(net.add_activation(o, "relu", name="after").name)  # O stays inside the segment
    for la in net.layers:
        la.precision = Precision.FP16

    def reference(f: dict) -> np.ndarray:
        t = {n: np.tanh(f[n].astype(np.float64)) for n in "qkv"}
        qq = np.swapaxes(t["q"], -1, -2) if ta else t["q"]
        kk = t["k"] if tb else np.swapaxes(t["k"], -1, -2)
        vv = np.swapaxes(t["v"], -1, -2) if tv else t["v"]
        scale = cq / ck * post
        b = None if bias is None else bias.astype(np.float16) * (post if not early else 1.0)
        return np.maximum(_numpy_attention(qq, kk, vv, scale, b), 0)

    return net, feeds, reference, q_k_path


@needs_emulator
def test_random_attention_blocks_fuse_and_run_like_numpy(tmp_path):
    rng = np.random.default_rng()
    for i in range(3):  # fresh structures every run
        net, feeds, reference, q_k_path = _random_block(rng)
        low = lower(net, net.layers, list(net.outputs))
        fused = [op for op in low.ops if op.block == att.THREADS]
        assert len(fused) == 1, [la.kind.value for la in net.layers]
        assert set(q_k_path) <= set(fused[0].label.split(" + "))  # scales and transposes on the way are the kernel's
        (tmp_path / str(i)).mkdir()
        (got,) = run_lowered(low, feeds, tmp_path / str(i)).values()
        want = reference(feeds)
        assert got.shape == want.shape
        assert _rel(got, want) < 3e-3, (i, [la.kind.value for la in net.layers])


def test_an_fc_computing_the_bias_keeps_its_output_for_the_attention():
    """The bias of the scores made by an FC: the add is the attention's, not a residual folded into
    that FC (both fusions claimed it, and the lowering failed on the scores' missing slot)."""
    rng = np.random.default_rng()
    b, h, s, d = 2, 2, 16, 16
    net = Network("fc_bias")
    q, k, v, z = (net.add_activation(net.add_input(n, (b, h, s, d)), "tanh", name=f"{n}_dev").name for n in "qkvz")
    scores = net.add_layer(MatrixMultiplyParams(transpose_b=True), [q, k], name="qk").outputs[0]
    fc = net.add_layer(FullyConnectedParams(s), [z], {"kernel": rng.standard_normal((s, d)).astype(np.float32)},
                       name="bias_fc").outputs[0]
    scores = net.add_elementwise(scores, fc, "sum", name="add").name
    p = net.add_layer(SoftMaxParams(axis=-1), [scores], name="softmax").outputs[0]
    o = net.add_layer(MatrixMultiplyParams(), [p, v], name="pv").outputs[0]
    net.mark_output(net.add_activation(o, "relu", name="after").name)
    for la in net.layers:
        la.precision = Precision.FP16
    low = lower(net, net.layers, list(net.outputs))
    (fused,) = [op for op in low.ops if op.block == att.THREADS]
    assert "add" in fused.label.split(" + ")
    bias_fc = next(op for op in low.ops if op.label == "bias_fc")
    assert bias_fc.info["res"] is None and bias_fc.writes[0] in fused.reads


# ------------------------------------------------------------------------------ shifted windows


def test_refine_and_expand_batch_dims():
    from backends.gpu.lowering.attention import expand, refine

    assert refine([(6, 3), (2, 3, 3)]) == (2, 3, 3)
    assert refine([(4, 3), (2, 6)]) == (2, 2, 3)
    assert refine([(4, 3), (3, 4)]) is None  # cuts at 4 and at 3: no common dims
    assert refine([(1, 12), (12,)]) == (12,)
    # an operand over (6, 3) with strides (30, 10), over the refinement (2, 3, 3)
    assert expand((30, 10), (6, 3), (2, 3, 3)) == (90, 30, 10)
    assert expand((0, 10), (1, 3), (3,)) == (10,)
    a = np.arange(6 * 3 * 10).reshape(6, 3, 10)
    fine = np.lib.stride_tricks.as_strided(a, (2, 3, 3), [s * a.itemsize for s in (90, 30, 10)])
    np.testing.assert_array_equal(fine, a[..., 0].reshape(2, 3, 3))


def shifted_window_net(rng) -> tuple[Network, dict, dict]:
    """torchvision's Swin attention on shifted windows: scores (N·W, H, n, n) + a relative position
    bias (H, n, n), viewed as (N, W, H, n, n) + the window mask (W, 1, n, n), viewed back, softmax."""
    n_img, win, heads, n, d = 2, 4, 3, 9, 16
    b = n_img * win
    net = Network("shifted_window")
    feeds = {t: rng.standard_normal((b, heads, n, d)).astype(np.float16).astype(np.float32) for t in "qkv"}
    q, k, v = (net.add_activation(net.add_input(t, (b, heads, n, d)), "tanh", name=f"{t}_dev").name for t in "qkv")
    qs = net.add_elementwise(q, net.add_constant(np.array([d ** -0.5], np.float32)).name, "prod").name
    s = net.add_layer(MatrixMultiplyParams(transpose_b=True), [qs, k], name="qk").outputs[0]
    rel = rng.standard_normal((heads, n, n)).astype(np.float32)
    mask = np.where(rng.random((win, 1, n, n)) < 0.3, -100.0, 0.0).astype(np.float32)
    s = net.add_elementwise(s, net.add_constant(rel).name, "sum", name="rel_bias").name
    s = net.add_layer(ShuffleParams(reshape=(n_img, win, heads, n, n)), [s], name="to_windows").outputs[0]
    s = net.add_elementwise(s, net.add_constant(mask).name, "sum", name="mask").name
    s = net.add_layer(ShuffleParams(reshape=(b, heads, n, n)), [s], name="from_windows").outputs[0]
    p = net.add_layer(SoftMaxParams(axis=-1), [s], name="softmax").outputs[0]
    o = net.add_layer(MatrixMultiplyParams(), [p, v], name="pv").outputs[0]
    net.mark_output(net.add_activation(o, "relu", name="after").name)
    for la in net.layers:
        la.precision = Precision.FP16
    return net, feeds, {"rel": rel, "mask": mask, "shape": (n_img, win, heads, n, d)}


@needs_emulator
def test_shifted_window_attention_fuses_both_biases_and_runs_like_numpy(tmp_path):
    rng = np.random.default_rng()
    net, feeds, c = shifted_window_net(rng)
    low = lower(net, net.layers, list(net.outputs))
    fused = [op for op in low.ops if op.block == att.THREADS]
    assert len(fused) == 1
    assert {"rel_bias", "to_windows", "mask", "from_windows", "softmax", "qk", "pv"} <= set(fused[0].label.split(" + "))
    (got,) = run_lowered(low, feeds, tmp_path).values()
    n_img, win, heads, n, d = c["shape"]
    t = {x: np.tanh(feeds[x].astype(np.float64)) for x in "qkv"}
    bias = (c["rel"].astype(np.float16)[None] + np.zeros((n_img, win, heads, n, n))
            + c["mask"].astype(np.float16)[None]).reshape(n_img * win, heads, n, n)
    want = np.maximum(_numpy_attention(t["q"], t["k"], t["v"], d ** -0.5, bias), 0)
    assert _rel(got, want) < FP16_REL
