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


MAX_GROUP_MERGE = 8  # merging m groups multiplies the MACs by m


def group_merge_factor(groups: int, cg: int, kg: int, vector: int = 8) -> int | None:
    """How many adjacent groups of a grouped convolution to merge into one for the tensor-core kernel.

    The kernel reads each group's channels as 16-byte vectors, so a group needs Cg and Kg multiples
    of 8 (``vector``: 16 for the INT8 kernel). Where they are not, m adjacent groups become one group
    of m*Cg inputs and m*Kg outputs
    with block-diagonal weights (``merge_groups``; the zeros keep the groups apart, so the result is
    exact at m x the MACs): the smallest m dividing ``groups`` with m*Cg and m*Kg multiples of 8, if
    m <= 8 (ResNeXt-50's 4-channel groups merge in pairs). None where no such m exists (the
    convolution keeps the direct kernel).
    """
    for m in range(1, min(groups, MAX_GROUP_MERGE) + 1):
        if groups % m == 0 and (m * cg) % vector == 0 and (m * kg) % vector == 0:
            return m
    return None


def merge_groups(kernel: np.ndarray, groups: int, m: int) -> np.ndarray:
    """IR grouped kernel (K, Cg, R, S) -> (K, m*Cg, R, S) of groups/m groups: group j of each run of m
    adjacent groups keeps its weights in input channels j*Cg..(j+1)*Cg of the merged group, zeros
    elsewhere (block-diagonal)."""
    k, cg, r, s = kernel.shape
    if groups % m or k % groups:
        raise ValueError(f"cannot merge {groups} groups of a {kernel.shape} kernel by {m}")
    kg = k // groups
    out = np.zeros((k, m * cg, r, s), kernel.dtype)
    for gi in range(groups):
        j = gi % m
        out[gi * kg:(gi + 1) * kg, j * cg:(j + 1) * cg] = kernel[gi * kg:(gi + 1) * kg]
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
