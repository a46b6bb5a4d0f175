"""Inception-style concatenations lowered as NHWC in one pass, without CUDA.

GoogLeNet and Inception merge the 1x1 convolutions that read one tensor (``HorizontalMerge``), so
one branch of the block's concatenation is a channel slice of the merged output, a view, and the
others are convolution outputs. The concatenation must be written NHWC straight from those views
(one launch), not row-major and then converted for the convolutions that read it (two passes over
the block's largest tensor). Its result is checked in the CUDA emulator against float64 numpy on
fresh random data at fp16 tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emu import compiler
from emu_lowered import run_lowered
from test_map_vector_emu_cpu import conv_nchw

from backends.gpu.lower import lower
from engine.ir.dtypes import Precision
from engine.ir.layers import ConcatenationParams, SplitParams
from engine.ir.network import Network

needs_emulator = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")
N, C, H, W = 2, 8, 5, 4


def _weights(rng, k: int, c: int, r: int) -> np.ndarray:
    return (rng.standard_normal((k, c, r, r)) / np.sqrt(c * r * r)).astype(np.float16).astype(np.float32)


def inception_block(rng, widths: tuple[int, int], k3: int) -> tuple[Network, dict]:
    """x -> merged 1x1 conv -> split (a, b); b -> 3x3 conv; concat(a, conv3x3(b)) -> 1x1 conv."""
    net = Network("inception")
    x = net.add_input("x", (N, C, H, W))
    d = {"x": rng.standard_normal((N, C, H, W)).astype(np.float16).astype(np.float32),
         "w1": _weights(rng, sum(widths), C, 1), "w3": _weights(rng, k3, widths[1], 3),
         "wo": _weights(rng, 8, widths[0] + k3, 1)}
    merged = net.add_convolution(x, d["w1"], name="merged")
    a, b = net.add_layer(SplitParams(axis=1, sizes=widths), [merged], name="split").outputs
    c3 = net.add_convolution(b, d["w3"], padding=(1, 1), name="conv3")
    cat = net.add_layer(ConcatenationParams(axis=1), [a, c3], name="cat").outputs[0]
    net.mark_output(net.add_convolution(cat, d["wo"], name="out"))
    for la in net.layers:
        la.precision = Precision.FP16
    return net, d


def _conv(x: np.ndarray, w: np.ndarray, pad: int) -> np.ndarray:
    return conv_nchw(x, w, np.zeros(w.shape[0]), pad)


def numpy_result(d: dict, widths: tuple[int, int]) -> np.ndarray:
    m = _conv(d["x"].astype(np.float64), d["w1"], 0)
    a, b = m[:, :widths[0]], m[:, widths[0]:]
    return _conv(np.concatenate([a, _conv(b, d["w3"], 1)], axis=1), d["wo"], 0)


@pytest.mark.parametrize("widths,k3", [((16, 8), 24), ((8, 16), 8)])
def test_concatenation_of_a_split_view_and_a_conv_is_one_nhwc_pass(widths, k3):
    net, _ = inception_block(np.random.default_rng(), widths, k3)
    low = lower(net, net.layers, list(net.outputs))
    cat = next(op for op in low.ops if op.label == "cat")
    assert low.slots[cat.writes[0]].layout == "nhwc"
    assert not [op.label for op in low.ops if op.label.startswith("to_nhwc_") and "cat" in op.label]


@needs_emulator
@pytest.mark.parametrize("widths,k3", [((16, 8), 24), ((8, 16), 8)])
def test_nhwc_concatenation_matches_numpy(tmp_path, widths, k3):
    rng = np.random.default_rng()
    net, d = inception_block(rng, widths, k3)
    low = lower(net, net.layers, list(net.outputs))
    got = run_lowered(low, {"x": d["x"]}, tmp_path)[net.outputs[0]]
    want = numpy_result(d, widths)
    err = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert err < 1e-2, err
