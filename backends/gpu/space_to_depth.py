"""2x2 space-to-depth for stride-2 convolutions on few channels (no CUDA).

A stride-2 convolution on C <= 4 channels wastes most of a tensor-core reduction on channel padding
(the 7x7 ResNet stem on 3 channels pads to 8 in FP16, 16 in INT8). Over the input's 2x2
space-to-depth, channel (v * 2 + u) * C + c of pixel (i, j) = x[c, 2i + v, 2j + u], the same
convolution is a stride-1 one on 4C channels whose taps are the original ones regrouped: the same
products, so the same integer sums (FP16 sums in another order). The conversion kernels that write
that layout are ``direct_src.nchw_f32_to_s2d_f16`` and ``int8_src.quant_nchw_s8``.
"""

from __future__ import annotations

import numpy as np

from backends.gpu.kernels.conv import ConvGeometry


def space_to_depth_conv(g: ConvGeometry) -> ConvGeometry | None:
    """The stride-1 convolution over the 2x2 space-to-depth input that computes the stride-2
    convolution ``g`` on C <= 4 channels: the 7x7 stem on C = 3 reduces over 4*4*16 = 256 int8
    instead of 7*7*16 = 784. None where it does not apply (another stride, dilation, more channels)."""
    if g.stride != (2, 2) or g.dilation != (1, 1) or g.c > 4:
        return None
    (ph, pw), (r, s) = g.pad, (g.r, g.s)
    r2 = (r - 1 - ph) // 2 + (ph + 1) // 2 + 1
    s2 = (s - 1 - pw) // 2 + (pw + 1) // 2 + 1
    h2, w2 = -(-g.h // 2), -(-g.w // 2)
    pad = ((ph + 1) // 2, (pw + 1) // 2)
    end = (g.p - 1 + r2 - h2 - pad[0], g.q - 1 + s2 - w2 - pad[1])
    out = ConvGeometry(g.n, h2, w2, 4 * g.c, g.k, r2, s2, (1, 1), pad, (1, 1), end)
    assert (out.p, out.q) == (g.p, g.q)
    return out


def space_to_depth_kernel(wq: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """IR kernel (K, C, R, S) of ``g`` (int8 or float) -> the (K, 4C, R', S') kernel of ``space_to_depth_conv(g)``:
    tap (u, u') of channel (v * 2 + v') * C + c is the original tap (2(u - pad') + v + ph, same for s)."""
    g2 = space_to_depth_conv(g)
    assert g2 is not None
    k, c, r, s = wq.shape
    out = np.zeros((k, 4 * c, g2.r, g2.s), wq.dtype)
    for u in range(g2.r):
        for v in range(2):
            rr = 2 * (u - g2.pad[0]) + v + g.pad[0]
            if not 0 <= rr < r:
                continue
            for u2 in range(g2.s):
                for v2 in range(2):
                    ss = 2 * (u2 - g2.pad[1]) + v2 + g.pad[1]
                    if 0 <= ss < s:
                        out[:, (v * 2 + v2) * c:(v * 2 + v2 + 1) * c, u, u2] = wq[:, :, rr, ss]
    return out
