"""Resizes and paddings of NHWC tensors written NHWC, without CUDA.

A detection neck or a U-Net upsamples a convolution's output and concatenates it with another
convolution's along the channels, then convolves; some exports pad explicitly in front of a
convolution. Written row-major, the resize or padding made its concatenation row-major too and
the convolution then needed a conversion: a pass over the block's largest tensor for nothing.
They must keep NHWC, need no conversion before the convolution, and give the reference backend's
result in the CUDA emulator on fresh random data at fp16 tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emu import compiler
from emu_lowered import run_lowered
from gpu_reference import assert_close

from backends import reference
from backends.gpu.lower import lower
from engine.ir.dtypes import Precision
from engine.ir.layers import ConcatenationParams, PaddingParams, ResizeMode, ResizeParams
from engine.ir.network import Network

needs_emulator = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")


def _w(rng, k: int, c: int, r: int) -> np.ndarray:
    return (rng.standard_normal((k, c, r, r)) / np.sqrt(c * r * r)).astype(np.float32)


def neck(rng, mode: str) -> Network:
    """conv -> 2x upsample -> concat with a conv of the finer map -> 3x3 conv."""
    net = Network("neck")
    x, s = net.add_input("x", (2, 16, 4, 5)), net.add_input("s", (2, 8, 8, 10))
    a = net.add_convolution(x, _w(rng, 24, 16, 1), name="lateral")
    linear = mode == "linear"
    up = net.add_layer(ResizeParams(output_shape=(2, 24, 8, 10), mode=ResizeMode(mode),
                                    coordinate_transformation="half_pixel" if linear else "asymmetric",
                                    nearest_mode="floor", scales=(1, 1, 2, 2)), [a], name="up").outputs[0]
    b = net.add_convolution(s, _w(rng, 16, 8, 3), padding=(1, 1), name="fine")
    cat = net.add_layer(ConcatenationParams(axis=1), [up, b], name="cat").outputs[0]
    net.mark_output(net.add_convolution(cat, _w(rng, 8, 40, 3), padding=(1, 1), name="out"))
    return net


def padded(rng, mode: str) -> Network:
    """conv -> explicit padding of H and W -> 3x3 conv without padding of its own."""
    net = Network("padded")
    x = net.add_input("x", (2, 12, 6, 7))
    a = net.add_convolution(x, _w(rng, 16, 12, 1), name="first")
    p = net.add_layer(PaddingParams(pre=(0, 0, 1, 2), post=(0, 0, 2, 1), mode=mode), [a], name="pad").outputs[0]
    net.mark_output(net.add_convolution(p, _w(rng, 8, 16, 3), name="out"))
    return net


def _lowered(net: Network):
    for la in net.layers:
        la.precision = Precision.FP16
    return lower(net, net.layers, list(net.outputs))


@pytest.mark.parametrize("build,mode,label", [(neck, "nearest", "up"), (neck, "linear", "up"),
                                              (padded, "constant", "pad"), (padded, "reflect", "pad")])
def test_resize_and_padding_keep_nhwc(build, mode, label):
    low = _lowered(build(np.random.default_rng(), mode))
    op = next(op for op in low.ops if op.label == label)
    assert low.slots[op.writes[0]].layout == "nhwc"
    conversions = [op.label for op in low.ops if op.label.startswith("to_nhwc_")]
    assert conversions == [f"to_nhwc_{name}" for name in ("x", "s") if any(t == name for t in low.inputs)], conversions


@needs_emulator
@pytest.mark.parametrize("build,mode", [(neck, "nearest"), (neck, "linear"), (padded, "constant"),
                                        (padded, "reflect"), (padded, "edge")])
def test_nhwc_resize_and_padding_match_the_reference(tmp_path, build, mode):
    rng = np.random.default_rng()
    net = build(rng, mode)
    low = _lowered(net)
    feeds = {t: rng.standard_normal(net.tensors[t].shape).astype(np.float16).astype(np.float32) for t in low.inputs}
    got = run_lowered(low, feeds, tmp_path)
    want = reference.execute(net, feeds)
    for t in net.outputs:
        assert_close(got[t].astype(np.float64), want[t].astype(np.float64))


def test_an_upsampling_that_leaves_the_segment_writes_row_major():
    """A segmentation network's last upsampling is its output: NHWC there would cost a conversion."""
    rng = np.random.default_rng()
    net = Network("seg")
    x = net.add_input("x", (2, 8, 4, 5))
    a = net.add_convolution(x, _w(rng, 16, 8, 1), name="classifier")
    net.mark_output(net.add_layer(ResizeParams(output_shape=(2, 16, 16, 20), mode=ResizeMode.LINEAR,
                                               scales=(1, 1, 4, 4)), [a], name="up").outputs[0])
    low = _lowered(net)
    up = next(op for op in low.ops if op.label == "up")
    assert low.slots[up.writes[0]].layout == "linear"
    assert not [op.label for op in low.ops if op.label.startswith("to_linear_")]
