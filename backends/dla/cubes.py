"""IR tensor shapes as DLA feature cubes, and the precision mapping between the IR and dla_sim.

The DLA holds every feature tensor as an N×C×H×W cube in 32-byte channel atoms (dla_sim.ops
CubeDesc). IR tensors of rank 4 map one to one; rank 2 (N, C) — fully connected activations —
maps to (N, C, 1, 1), which is how the DLA runs FC layers as 1×1 convolutions. Other ranks have no
cube and cannot live on the DLA.
"""

from __future__ import annotations

from dla_sim.ops import CubeDesc
from dla_sim.ops import Precision as HwPrecision
from engine.ir.dtypes import Precision
from engine.ir.errors import UnsupportedError

MAX_DIM = 8192  # non-batch dims (13-bit W/H/C fields [REG], TensorRT's DLA limit)
MAX_BATCH = 4096  # TensorRT's DLA batch limit (product of non-CHW dims)


def cube_shape(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(N, C, H, W) of an IR tensor shape, or UnsupportedError naming the rank."""
    if len(shape) == 4:
        return tuple(int(d) for d in shape)  # type: ignore[return-value]
    if len(shape) == 2:
        return (int(shape[0]), int(shape[1]), 1, 1)
    raise UnsupportedError(f"rank-{len(shape)} tensor {tuple(shape)}: DLA feature cubes are N×C×H×W "
                           f"(rank 4, or rank 2 for fully connected layers)")


def hw_precision(precision: Precision) -> HwPrecision:
    """The dla_sim precision of an IR build precision; FP32 has none."""
    if precision is Precision.FP16:
        return HwPrecision.FP16
    if precision is Precision.INT8:
        return HwPrecision.INT8
    raise UnsupportedError(f"{precision.value.upper()} requested: the DLA runs FP16 and INT8 only")


def make_cube(name: str, shape: tuple[int, ...], precision: HwPrecision) -> CubeDesc:
    n, c, h, w = cube_shape(shape)
    return CubeDesc(n=n, c=c, h=h, w=w, precision=precision, name=name)


def atom_channels(precision: HwPrecision) -> int:
    """Channels per 32-byte atom: 16 (FP16) or 32 (INT8); concatenation/slicing by addressing
    works only at these channel boundaries."""
    return precision.atom_channels()
