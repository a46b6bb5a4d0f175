"""Host-side (numpy) packing into the GPU backend's internal layouts.

Activations inside a GPU partition are NHWC fp16 with the channel count padded to a multiple of 8
(16-byte vectors); padded channels always hold zeros. Weights are packed once at build time.
"""

from __future__ import annotations

import numpy as np


def round_up(v: int, m: int) -> int:
    return -(-v // m) * m


def pack_conv_weights(kernel: np.ndarray) -> np.ndarray:
    """IR kernel (K, C, R, S) -> (K, R, S, Cp) fp16, zero in channels C..Cp-1 ("KRSC")."""
    k, c, r, s = kernel.shape
    out = np.zeros((k, r, s, round_up(c, 8)), np.float16)
    out[..., :c] = kernel.transpose(0, 2, 3, 1)
    return out


def pack_depthwise_weights(kernel: np.ndarray) -> np.ndarray:
    """IR depthwise kernel (C, 1, R, S) -> (R, S, Cp) fp16, zero in padded channels."""
    c, one, r, s = kernel.shape
    if one != 1:
        raise ValueError(f"depthwise kernel must be (C, 1, R, S), got {kernel.shape}")
    out = np.zeros((r, s, round_up(c, 8)), np.float16)
    out[..., :c] = kernel[:, 0].transpose(1, 2, 0)
    return out


def pad_bias(bias: np.ndarray | None, k: int) -> np.ndarray:
    """fp32 bias of length Kp (zeros past K, and all zeros for no bias)."""
    out = np.zeros(round_up(k, 8), np.float32)
    if bias is not None:
        out[:k] = bias
    return out


def pad_channels(x: np.ndarray) -> np.ndarray:
    """NHWC (or any channels-last) array -> fp16 with the last axis padded to a multiple of 8."""
    c = x.shape[-1]
    out = np.zeros((*x.shape[:-1], round_up(c, 8)), np.float16)
    out[..., :c] = x
    return out


def to_nhwc(x: np.ndarray) -> np.ndarray:
    """NCHW array -> NHWC fp16 with channels padded to a multiple of 8."""
    return pad_channels(x.transpose(0, 2, 3, 1))


def from_nhwc(y: np.ndarray, c: int) -> np.ndarray:
    """NHWC (channels padded) -> NCHW with the true channel count ``c``."""
    return np.ascontiguousarray(y[..., :c].transpose(0, 3, 1, 2))
