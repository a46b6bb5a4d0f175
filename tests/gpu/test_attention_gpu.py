"""The fused attention kernel on the GPU: the matcher's test networks (a QKV projection split into
heads as views, scalar scales, with and without an additive bias) through ``GpuPartition``, and
a larger ViT-sized block, against float64 numpy on fresh random data at fp16 tolerance.
Skipped without CUDA."""

from __future__ import annotations

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

from test_attention_cpu import FP16_REL, B, D, H, S, _numpy_attention, _numpy_net, _rel, attention_net  # noqa: E402

from backends.gpu.backend import GpuPartition  # noqa: E402
from backends.gpu.kernels import attention_src as att  # noqa: E402
from backends.gpu.kernels.common import COMMON_SRC  # noqa: E402
from backends.gpu.kernels.compile import get_function  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("variant", ["plain", "bias"])
def test_fused_block_on_the_gpu_matches_float64(variant):
    net, extra = attention_net(variant)
    part = GpuPartition(net, [la.name for la in net.layers])
    blocks = [op.block for u in part.units if u.lowered for op in u.lowered.ops]
    assert blocks.count(att.THREADS) == 1
    x = np.random.default_rng().standard_normal((S, B, 3 * H * D)).astype(np.float16).astype(np.float32)
    (got,) = part.create_context().execute({"x": x}).values()
    bias = extra.get("bias")
    assert _rel(got, _numpy_net(x, None if bias is None else bias.astype(np.float16))) < FP16_REL


@pytest.mark.parametrize("batch, sq, d", [((4, 12), 197, 64), ((2, 3), 300, 128), ((5,), 50, 40)])
def test_kernel_on_the_gpu_matches_float64(batch, sq, d):
    import cupy

    rng = np.random.default_rng()
    q, k, v = (rng.standard_normal((*batch, sq, d)).astype(np.float16) for _ in range(3))
    geom = att.AttentionGeometry(batch, sq, sq, d, d, 1 / np.sqrt(d))
    st = att.AttentionOperand(tuple(np.array(q.strides[:-2]) // 2), d, 1)
    fn = get_function(COMMON_SRC + att.attention_kernel("attn", geom, st, st, st), "attn")
    y = cupy.empty(q.shape, cupy.float16)
    fn(geom.grid, (att.THREADS,), (y, cupy.asarray(q), cupy.asarray(k), cupy.asarray(v)),
       shared_mem=att.shared_bytes(geom))
    assert _rel(y.get(), _numpy_attention(q, k, v, 1 / np.sqrt(d))) < FP16_REL


def test_shifted_window_attention_on_the_gpu_matches_float64():
    from test_attention_cpu import shifted_window_net

    rng = np.random.default_rng()
    net, feeds, c = shifted_window_net(rng)
    part = GpuPartition(net, [la.name for la in net.layers])
    assert [op.block for u in part.units if u.lowered for op in u.lowered.ops].count(att.THREADS) == 1
    (got,) = part.create_context().execute(feeds).values()
    n_img, win, heads, n, d = c["shape"]
    t = {x: np.tanh(feeds[x].astype(np.float64)) for x in "qkv"}
    bias = (c["rel"].astype(np.float16)[None] + np.zeros((n_img, win, heads, n, n))
            + c["mask"].astype(np.float16)[None]).reshape(n_img * win, heads, n, n)
    assert _rel(got, np.maximum(_numpy_attention(t["q"], t["k"], t["v"], d ** -0.5, bias), 0)) < FP16_REL


@pytest.mark.parametrize("normalize_axis, d", [(None, 16), (3, 16), (3, 20), (3, 32)])
def test_cosine_window_attention_with_its_score_map_on_the_gpu_matches_float64(normalize_axis, d):
    """The score map, and Q and K rows normalized in the kernel (16-byte and element-wise loads)."""
    from test_attention_map_cpu import cosine_window_net, cosine_window_reference

    net, feeds, c = cosine_window_net(np.random.default_rng(), normalize_axis=normalize_axis, d=d)
    part = GpuPartition(net, [la.name for la in net.layers])
    assert [op.block for u in part.units if u.lowered for op in u.lowered.ops].count(att.THREADS) == 1
    (got,) = part.create_context().execute(feeds).values()
    assert _rel(got, cosine_window_reference(feeds, c)) < FP16_REL
