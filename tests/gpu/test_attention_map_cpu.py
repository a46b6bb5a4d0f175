"""The fused attention kernel with a map of the scores (an optimizer-fused pointwise chain between
Q·Kᵀ and the softmax, as Swin V2's cosine attention exports: the product times a per-head logit
scale plus a relative position bias), without CUDA: the kernel in the emulator and the matched
block of a network against float64 numpy on fresh random data (fp16 tolerance), and the chains
the matcher must leave unfused."""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emu import EmulatedModule, compiler
from emu_lowered import run_lowered
from test_attention_cpu import FP16_REL, _contiguous, _numpy_attention, _rel

from backends.gpu.kernels import attention_src as att
from backends.gpu.kernels.common import COMMON_SRC
from backends.gpu.lower import lower
from engine.ir.dtypes import Precision
from engine.ir.layers import (
    MatrixMultiplyParams,
    PointwiseParams,
    PointwiseStep,
    ReduceOp,
    ReduceParams,
    ShuffleParams,
    SoftMaxParams,
)
from engine.ir.network import Network

needs_emulator = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")
SCALE_THEN_BIAS = ("float v = X0; { float a = v, b = X1; v = a * b; } { float a = v, b = X2; v = a + b; } "
                   "y = v;")


@needs_emulator
@pytest.mark.parametrize("map_dtype", ["float16", "float32"])
def test_kernel_maps_every_score_before_the_bias(tmp_path, map_dtype):
    """scores = 0.8 · (per-head scale · (0.5 · Q·Kᵀ) + position bias) + 0.7 · mask, over two
    query blocks and a ragged key tile."""
    rng = np.random.default_rng()
    batch, sq, sk, d = (2, 3), 70, 90, 32
    q, k, v = (rng.standard_normal((*batch, n, d)).astype(np.float16) for n in (sq, sk, sk))
    head_scale = rng.uniform(1, 10, (3, 1, 1)).astype(map_dtype)
    pos = rng.standard_normal((3, sq, sk)).astype(map_dtype)
    mask = np.where(rng.random((2, 1, sq, sk)) < 0.2, -100.0, 0.0).astype(np.float32)
    smap = att.ScoreMap(SCALE_THEN_BIAS, ((att.AttentionOperand((0, 1), 0, 0), map_dtype),
                                          (att.AttentionOperand((0, sq * sk), sk, 1), map_dtype)), 0.5)
    geom = att.AttentionGeometry(batch, sq, sk, d, d, 0.8)
    mask_op = att.AttentionOperand((sq * sk, 0), sk, 1)
    src = att.attention_kernel("attn", geom, *(_contiguous(t.shape) for t in (q, k, v)),
                               [att.AttentionBias(mask_op, "float32", 0.7)], score_map=smap)
    y = np.full((*batch, sq, d), np.nan, np.float16)
    EmulatedModule(COMMON_SRC + src, tmp_path).run("attn", geom.grid, att.THREADS, [y, q, k, v, mask, head_scale, pos],
                                                   att.shared_bytes(geom))
    qk = np.einsum("...qd,...kd->...qk", q.astype(np.float64), k.astype(np.float64))
    scores = 0.8 * (head_scale.astype(np.float64) * 0.5 * qk + pos) + 0.7 * mask
    # the reference's own scale is 1 and its bias the whole score minus Q·Kᵀ
    assert _rel(y, _numpy_attention(q, k, v, 1.0, scores - qk)) < FP16_REL


def _normalized(net: Network, x: str, axis: int, name: str) -> str:
    """x / max(||x||_2 over ``axis``, eps), as the optimizer leaves F.normalize: a ReduceL2 and a
    pointwise layer reading the norm and x."""
    r = net.add_layer(ReduceParams(ReduceOp.L2, (axis,), True), [x], name=f"{name}_norm").outputs[0]
    steps = (PointwiseStep("elementwise", "max", operand_weight="eps"),
             PointwiseStep("elementwise", "div", operand_input=1, reverse=True))
    return net.add_layer(PointwiseParams(steps), [r, x], {"eps": np.array(1e-6, np.float32)}, name=name).outputs[0]


def cosine_window_net(rng: np.random.Generator, wide_operand: bool = False, normalize_axis: int | None = None,
                      d: int = 16) -> tuple[Network, dict, dict]:
    """Swin V2's window attention after the optimizer: one pointwise layer maps Q·Kᵀ (times a
    per-head scale, plus a position bias and, as an input, a per-window term); ``wide_operand``:
    that input has a leading dim the scores lack (the chain's output is wider than Q·Kᵀ);
    ``normalize_axis``: Q and K are first normalized over that axis (3: their rows, as Swin V2's
    cosine attention; K then reaches the product through a transpose of its last two dims)."""
    b, heads, n = 4, 3, 20
    net = Network("cosine_window")
    feeds = {t: rng.standard_normal((b, heads, n, d)).astype(np.float16).astype(np.float32) for t in "qkv"}
    q, k, v = (net.add_activation(net.add_input(t, (b, heads, n, d)), "tanh", name=f"{t}_dev").name for t in "qkv")
    if normalize_axis is not None:
        q, k = (_normalized(net, t, normalize_axis, f"{t[0]}_hat") for t in (q, k))
        k = net.add_layer(ShuffleParams(first_perm=(0, 1, 3, 2)), [k], name="k_t").outputs[0]
    qs = net.add_elementwise(q, net.add_constant(np.array([0.5], np.float32)).name, "prod", name="q_scale").name
    s = net.add_layer(MatrixMultiplyParams(transpose_b=normalize_axis is None), [qs, k], name="qk").outputs[0]
    term_shape = (2, b, 1, n, n) if wide_operand else (b, 1, n, n)
    feeds["term"] = rng.standard_normal(term_shape).astype(np.float16).astype(np.float32)
    term = net.add_activation(net.add_input("term", term_shape), "tanh", name="term_dev").name
    c = {"head_scale": rng.uniform(1, 10, (heads, 1, 1)).astype(np.float32),
         "pos": rng.standard_normal((1, heads, n, n)).astype(np.float32), "shape": (b, heads, n, d),
         "normalize_axis": normalize_axis}
    steps = (PointwiseStep("elementwise", "prod", operand_weight="head_scale"),
             PointwiseStep("elementwise", "sum", operand_weight="pos"),
             PointwiseStep("elementwise", "sum", operand_input=1))
    s = net.add_layer(PointwiseParams(steps), [s, term], {"head_scale": c["head_scale"], "pos": c["pos"]},
                      name="score_map").outputs[0]
    p = net.add_layer(SoftMaxParams(axis=-1), [s], name="softmax").outputs[0]
    o = net.add_layer(MatrixMultiplyParams(), [p, v], name="pv").outputs[0]
    net.mark_output(net.add_activation(o, "relu", name="after").name)
    for la in net.layers:
        la.precision = Precision.FP16
    return net, feeds, c


def cosine_window_reference(feeds: dict, c: dict) -> np.ndarray:
    t = {x: np.tanh(feeds[x].astype(np.float64)) for x in ("q", "k", "v", "term")}
    if c["normalize_axis"] is not None:
        for x in "qk":
            t[x] = t[x] / np.maximum(np.linalg.norm(t[x], axis=c["normalize_axis"], keepdims=True), 1e-6)
    qk = np.einsum("...qd,...kd->...qk", t["q"], t["k"])
    scores = 0.5 * qk * c["head_scale"].astype(np.float16) + c["pos"].astype(np.float16) + t["term"]
    return np.maximum(_numpy_attention(t["q"], t["k"], t["v"], 1.0, scores - qk), 0)  # its bias: all but Q·Kᵀ


def _fused_labels(net: Network) -> list[list[str]]:
    low = lower(net, net.layers, list(net.outputs))
    return [op.label.split(" + ") for op in low.ops if op.block == att.THREADS]


@needs_emulator
def test_a_pointwise_map_of_the_scores_is_fused_and_runs_like_numpy(tmp_path):
    rng = np.random.default_rng()
    net, feeds, c = cosine_window_net(rng)
    assert [sorted(f) for f in _fused_labels(net)] == [sorted(["q_scale", "qk", "score_map", "softmax", "pv"])]
    (got,) = run_lowered(lower(net, net.layers, list(net.outputs)), feeds, tmp_path).values()
    assert _rel(got, cosine_window_reference(feeds, c)) < FP16_REL


def test_a_map_wider_than_the_scores_stays_unfused():
    net, _, _ = cosine_window_net(np.random.default_rng(), wide_operand=True)
    assert _fused_labels(net) == []


@needs_emulator
@pytest.mark.parametrize("d", [16, 20])  # K and V prefetched with 16-byte loads; element-wise loads
def test_q_and_k_row_normalizations_run_inside_the_attention_launch(tmp_path, d):
    rng = np.random.default_rng()
    net, feeds, c = cosine_window_net(rng, normalize_axis=3, d=d)
    low = lower(net, net.layers, list(net.outputs))
    assert len(low.ops) == 6  # four tanh inputs, the attention, the ReLU: no launch of the norms or the transpose
    (fused,) = [set(op.label.split(" + ")) for op in low.ops if op.block == att.THREADS]
    assert {"q_hat_norm", "q_hat", "k_hat_norm", "k_hat", "k_t", "qk", "score_map", "softmax", "pv"} <= fused
    (got,) = run_lowered(low, feeds, tmp_path).values()
    assert _rel(got, cosine_window_reference(feeds, c)) < FP16_REL


@needs_emulator
def test_a_normalization_over_another_axis_stays_a_launch_of_its_own(tmp_path):
    rng = np.random.default_rng()
    net, feeds, c = cosine_window_net(rng, normalize_axis=2)  # over the rows of each column: not a row map
    low = lower(net, net.layers, list(net.outputs))
    (fused,) = [set(op.label.split(" + ")) for op in low.ops if op.block == att.THREADS]
    assert not {"q_hat_norm", "q_hat", "k_hat_norm", "k_hat"} & fused
    (got,) = run_lowered(low, feeds, tmp_path).values()
    assert _rel(got, cosine_window_reference(feeds, c)) < FP16_REL


@needs_emulator
def test_an_elementwise_product_by_a_per_head_scale_is_a_score_map(tmp_path):
    """Unfused by the optimizer: Q·Kᵀ · scale[head] (an element-wise layer reading a constant),
    then a position bias as an add; both inside the launch."""
    rng = np.random.default_rng()
    b, heads, n, d = 2, 3, 24, 16
    net = Network("per_head_scale")
    feeds = {t: rng.standard_normal((b, heads, n, d)).astype(np.float16).astype(np.float32) for t in "qkv"}
    q, k, v = (net.add_activation(net.add_input(t, (b, heads, n, d)), "tanh", name=f"{t}_dev").name for t in "qkv")
    s = net.add_layer(MatrixMultiplyParams(transpose_b=True), [q, k], name="qk").outputs[0]
    head_scale = rng.uniform(1, 10, (heads, 1, 1)).astype(np.float32)
    pos = rng.standard_normal((heads, n, n)).astype(np.float32)
    s = net.add_elementwise(s, net.add_constant(head_scale).name, "prod", name="logit_scale").name
    s = net.add_elementwise(s, net.add_constant(pos).name, "sum", name="pos_bias").name
    p = net.add_layer(SoftMaxParams(axis=-1), [s], name="softmax").outputs[0]
    net.mark_output(net.add_layer(MatrixMultiplyParams(), [p, v], name="pv").outputs[0])
    for la in net.layers:
        la.precision = Precision.FP16
    low = lower(net, net.layers, list(net.outputs))
    (fused,) = [set(op.label.split(" + ")) for op in low.ops if op.block == att.THREADS]
    assert {"qk", "logit_scale", "pos_bias", "softmax", "pv"} <= fused
    (got,) = run_lowered(low, feeds, tmp_path).values()
    t = {x: np.tanh(feeds[x].astype(np.float64)) for x in "qkv"}
    qk = np.einsum("...qd,...kd->...qk", t["q"], t["k"])
    scores = qk * head_scale.astype(np.float16) + pos.astype(np.float16)
    assert _rel(got, _numpy_attention(t["q"], t["k"], t["v"], 1.0, scores - qk)) < FP16_REL
