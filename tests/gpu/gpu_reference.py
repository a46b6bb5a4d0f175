"""float64 numpy references for the GPU kernels (NHWC, true channel counts)."""

from __future__ import annotations

import math

import numpy as np


def act_ref(v: np.ndarray, code: int, a: float = 0.0, b: float = 0.0) -> np.ndarray:
    """The activation codes of backends.gpu.activations, in float64."""
    from scipy.special import erf

    sp = np.logaddexp(0.0, v)
    table = {
        0: lambda: v,
        1: lambda: np.maximum(v, 0),
        2: lambda: np.clip(v, a, b),
        3: lambda: np.where(v > 0, v, v * a),
        4: lambda: 1 / (1 + np.exp(-v)),
        5: lambda: v / (1 + np.exp(-v)),
        6: lambda: v * np.clip(v / 6 + 0.5, 0, 1),
        7: lambda: np.tanh(v),
        8: lambda: np.clip(a * v + b, 0, 1),
        9: lambda: 0.5 * v * (1 + erf(v / math.sqrt(2))),
        10: lambda: 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3))),
        11: lambda: np.where(v > 0, v, a * np.expm1(v)),
        12: lambda: sp,
        13: lambda: v * np.tanh(sp),
        14: lambda: b * np.where(v > 0, v, a * np.expm1(v)),
        15: lambda: np.maximum(v, 0) + np.minimum(0, a * np.expm1(v / a)),
        16: lambda: v / (1 + np.abs(v)),
        17: lambda: np.where(v > a, v, 0.0),
    }
    return table[code]()


def conv_ref(x: np.ndarray, w: np.ndarray, stride=(1, 1), pad=(0, 0), dilation=(1, 1),
             pad_end=None, groups: int = 1) -> np.ndarray:
    """x (N, H, W, C), w (K, C/groups, R, S) -> (N, P, Q, K), float64, one matmul per (r, s)."""
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    n, h, wd, c = x.shape
    k, cg, r, s = w.shape
    pe = pad_end or pad
    xp = np.zeros((n, h + pad[0] + pe[0], wd + pad[1] + pe[1], c))
    xp[:, pad[0]:pad[0] + h, pad[1]:pad[1] + wd] = x
    p = (xp.shape[1] - dilation[0] * (r - 1) - 1) // stride[0] + 1
    q = (xp.shape[2] - dilation[1] * (s - 1) - 1) // stride[1] + 1
    out = np.zeros((n, p, q, k))
    kg = k // groups
    for i in range(r):
        for j in range(s):
            hs, ws_ = i * dilation[0], j * dilation[1]
            patch = xp[:, hs:hs + (p - 1) * stride[0] + 1:stride[0], ws_:ws_ + (q - 1) * stride[1] + 1:stride[1]]
            for g in range(groups):
                out[..., g * kg:(g + 1) * kg] += patch[..., g * cg:(g + 1) * cg] @ w[g * kg:(g + 1) * kg, :, i, j].T
    return out


def pool_ref(x: np.ndarray, window, stride, pad, pad_end, p: int, q: int, average: bool,
             count_pad: bool) -> np.ndarray:
    """x (N, H, W, C) float64 -> (N, p, q, C); windows may run past the padded input."""
    x = x.astype(np.float64)
    n, h, wd, c = x.shape
    out = np.zeros((n, p, q, c))
    for i in range(p):
        for j in range(q):
            h0, w0 = i * stride[0] - pad[0], j * stride[1] - pad[1]
            h1, w1 = h0 + window[0], w0 + window[1]
            win = x[:, max(h0, 0):min(h1, h), max(w0, 0):min(w1, wd)]
            if average:
                cnt = ((min(h1, h + pad_end[0]) - max(h0, -pad[0])) * (min(w1, wd + pad_end[1]) - max(w0, -pad[1]))
                       if count_pad else win.shape[1] * win.shape[2])
                out[:, i, j] = win.sum(axis=(1, 2)) / cnt
            else:
                out[:, i, j] = win.max(axis=(1, 2))
    return out


def assert_close(out: np.ndarray, ref: np.ndarray, rtol: float = 1e-2, atol_frac: float = 2e-3) -> None:
    """fp16 check: |out - ref| <= rtol*|ref| + atol_frac*max|ref| everywhere, and relative L2 < rtol/2.

    The absolute term scales with the output's magnitude: fp16 keeps 11 significant bits, so values
    near zero carry the rounding error of the large partial sums that produced them.
    """
    out = out.astype(np.float64)
    assert np.isfinite(out).all(), "output has NaN/Inf (unwritten or overflowed elements)"
    scale = float(np.abs(ref).max())
    assert scale > 0, "reference is all zeros: the check would prove nothing"
    np.testing.assert_allclose(out, ref, rtol=rtol, atol=atol_frac * scale)
    rel = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
    assert rel < rtol / 2, f"relative L2 error {rel:.2e}"
