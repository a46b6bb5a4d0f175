"""DepthToSpace and SpaceToDepth (pixel shuffle and its inverse) as two shuffle layers.

Each is a rank-6 reshape, a transpose and a reshape back to rank 4 (ONNX's own definition), so
every backend runs them as data movement and the optimizer can merge them with their neighbours.
DCR mode orders the channels as (block row, block column, channel), CRD as (channel, block row,
block column); SpaceToDepth's mode (an attribute since opset 24) defaults to DCR.
"""

from __future__ import annotations

from engine.ir.layers import ShuffleParams
from engine.onnx_parser.registry import converter


def _block(nc) -> int:
    b = int(nc.attr("blocksize", 0))
    if b < 1:
        raise nc.error(f"attribute 'blocksize' must be a positive integer, got {b}")
    return b


def _rank4(nc, x) -> tuple[int, int, int, int]:
    shape = nc.shape(x)
    if len(shape) != 4:
        raise nc.error(f"input must be (N, C, H, W), got shape {shape}")
    return shape


@converter("DepthToSpace")
def depth_to_space(nc):
    x = nc.input(0)
    b = _block(nc)
    n, c, h, w = _rank4(nc, x)
    if c % (b * b):
        raise nc.error(f"{c} channels are not divisible by blocksize² = {b * b}")
    mode = nc.attr("mode", "DCR")
    if mode == "DCR":
        split, perm = (n, b, b, c // (b * b), h, w), (0, 3, 4, 1, 5, 2)
    elif mode == "CRD":
        split, perm = (n, c // (b * b), b, b, h, w), (0, 1, 4, 2, 5, 3)
    else:
        raise nc.error(f"attribute 'mode' must be DCR or CRD, got '{mode}'")
    t = nc.add1(ShuffleParams(reshape=split), [x], final=False)
    return [nc.add1(ShuffleParams(first_perm=perm, reshape=(n, c // (b * b), h * b, w * b)), [t])]


@converter("SpaceToDepth")
def space_to_depth(nc):
    x = nc.input(0)
    b = _block(nc)
    n, c, h, w = _rank4(nc, x)
    if h % b or w % b:
        raise nc.error(f"spatial size {h}x{w} is not divisible by blocksize {b}")
    mode = nc.attr("mode", "DCR")  # an attribute since opset 24; before, always DCR's order
    perms = {"DCR": (0, 3, 5, 1, 2, 4), "CRD": (0, 1, 3, 5, 2, 4)}
    if mode not in perms:
        raise nc.error(f"attribute 'mode' must be DCR or CRD, got '{mode}'")
    t = nc.add1(ShuffleParams(reshape=(n, c, h // b, b, w // b, b)), [x], final=False)
    return [nc.add1(ShuffleParams(first_perm=perms[mode], reshape=(n, c * b * b, h // b, w // b)), [t])]
