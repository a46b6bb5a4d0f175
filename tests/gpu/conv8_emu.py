"""One INT8 convolution set up as the GPU kernels take it, and their output checked bit for bit
against the reference backend: shared by the emulator tests of the tensor-core and pointwise kernels.

Inputs are quantized with the reference's own ``quantize`` into the GPU layouts (int8 NHWC,
channels padded to 16); int8 outputs are compared after the reference's ``dequantize`` (float32
bits), float outputs directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import int8_nets as nets
import numpy as np

from backends.gpu.kernels.int8 import DeviceEpilogue, cp16, epilogue_params, quantized_kernel
from backends.gpu.layout import round_up
from backends.reference import int8 as ref8
from engine.ir import int8_annotation as annotation
from engine.ir.int8_math import dequantize, quantize
from engine.ir.network import Layer


@dataclass
class Conv8Case:
    """The layer, its reference output and its operands in the kernels' layouts (numpy)."""

    layer: Layer
    want: np.ndarray  # the reference's float32 NCHW output
    wq: np.ndarray  # the int8 IR kernel (K, C/groups, R, S)
    epi: DeviceEpilogue
    xq: np.ndarray
    rq: np.ndarray | None
    ldy: int
    float_out: bool

    @property
    def k(self) -> int:
        return self.want.shape[1]

    def output(self, n: int, p: int, q: int) -> np.ndarray:
        """A fresh output buffer: NaN for a float output, 0x5A for int8 (padded channels must be
        overwritten with 0)."""
        if self.float_out:
            return np.full((n, p, q, self.ldy), np.nan, np.float32)
        return np.full((n, p, q, self.ldy), 0x5A, np.int8)

    def check(self, y: np.ndarray, padded_zero: bool = True, label: str = "") -> None:
        """``y`` (the kernel's NHWC output) equals the reference bit for bit; with ``padded_zero``
        an int8 output's channels K.. must be zeros."""
        k = self.k
        got = np.ascontiguousarray(y[..., :k].transpose(0, 3, 1, 2))
        if not self.float_out:
            if padded_zero:
                assert (y[..., k:] == 0).all(), "padded channels must be written as zeros"
            got = dequantize(got, np.float32(annotation.read(self.layer).output_scale))
        want = self.want
        assert np.abs(want).max() > 0, "an all-zero reference proves nothing"
        bad = np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))
        assert bad.size == 0, (f"{label}{bad.size} of {got.size} differ: {got.reshape(-1)[bad[:5]]} vs "
                               f"{want.reshape(-1)[bad[:5]]}")


def conv8_case(rng: np.random.Generator, n: int, c: int, h: int, k: int, r: int, stride: int, pad: int, act: Any,
               residual: bool, float_out: bool, groups: int = 1) -> Conv8Case:
    """``int8_nets.conv_net``'s layer on an h x h input, its reference output and its operands."""
    net, feeds = nets.conv_net(rng, n, c, h, h, k, r, stride, pad, act, residual,
                               s_out=None if float_out else "auto", groups=groups)
    layer = net.layers[0]
    spec = annotation.read(layer)
    x, res = feeds["x"], feeds.get("res")
    want = ref8.convolution(layer, [x] + ([res] if residual else []))[0]
    wq = quantized_kernel(layer)
    rs = spec.input_scales[1] if residual else None
    epi = DeviceEpilogue.upload(epilogue_params(layer, layer.params.activation, rs, wq), np)
    xq = nets.nhwc16(quantize(x, np.float32(spec.input_scales[0])))
    rq = nets.nhwc16(quantize(res, np.float32(rs))) if residual else None
    return Conv8Case(layer, want, wq, epi, xq, rq, round_up(k, 8) if float_out else cp16(k), float_out)
