"""Resize on the DLA: which resizes TensorRT's DLA runs, and the integer factors of a nearest one.

TensorRT 10.x DLA restrictions [TRTDOC]: Resize needs 4 scales with the first two (N, C) equal to 1,
integer H/W scales in [1, 32] for nearest and [1, 4] for bilinear. dla_sim lowers nearest only: a
nearest upsampling by (fy, fx) replicates each pixel, which the hardware does as ``fy*fx`` 1x1
depthwise copies placed side by side along C and one RUBIK contract (the deconvolution path [IAS]).
Bilinear is refused with that reason (TensorRT runs it; dla_sim has no interpolating path).
"""

from __future__ import annotations

from fractions import Fraction

from engine.ir.errors import UnsupportedError
from engine.ir.layers import ResizeMode, ResizeParams

MAX_NEAREST = 32  # [TRTDOC]
MAX_LINEAR = 4  # [TRTDOC]
HALF = Fraction(1, 2)


def _source(i: int, out_len: int, in_len: int, scale: Fraction, mode: str) -> Fraction:
    x = Fraction(i)
    if mode in ("half_pixel", "pytorch_half_pixel"):
        return (x + HALF) / scale - HALF
    if mode == "asymmetric":
        return x / scale
    if mode == "half_pixel_symmetric":
        off = Fraction(in_len, 2) * (1 - Fraction(out_len) / (scale * in_len))
        return off + (x + HALF) / scale - HALF
    raise UnsupportedError(f"nearest resize with coordinate mode '{mode}': it does not replicate pixels, so "
                           f"the DLA's copy-and-contract lowering does not reproduce it")


_ROUND = {"round_prefer_floor": lambda c: -((HALF - c) // 1), "round_prefer_ceil": lambda c: (c + HALF) // 1,
          "floor": lambda c: c // 1, "ceil": lambda c: -((-c) // 1)}


def _replicates(out_len: int, in_len: int, f: int, scale: Fraction, p: ResizeParams) -> bool:
    """Every output index o maps to input o // f (the pixel replication the lowering builds)."""
    rnd = _ROUND[p.nearest_mode]
    for o in range(out_len):
        src = min(max(int(rnd(_source(o, out_len, in_len, scale, p.coordinate_transformation))), 0), in_len - 1)
        if src != o // f:
            return False
    return True


def nearest_factors(p: ResizeParams, in_shape: tuple[int, ...]) -> tuple[int, int]:
    """(fy, fx) of a resize the DLA lowering runs, or UnsupportedError naming the limit."""
    out_shape = tuple(p.output_shape)
    if len(in_shape) != 4:
        raise UnsupportedError(f"Resize of a rank-{len(in_shape)} tensor: the DLA resizes 4-D tensors")
    if out_shape[:2] != tuple(in_shape[:2]):
        raise UnsupportedError(f"Resize of N/C {in_shape[:2]} -> {out_shape[:2]}: the DLA needs the first two "
                               f"scales equal to 1")
    factors = []
    for o, i in zip(out_shape[2:], in_shape[2:]):
        if o % i:
            raise UnsupportedError(f"Resize {in_shape[2:]} -> {out_shape[2:]}: the DLA resizes by integer scales")
        factors.append(o // i)
    mode = ResizeMode(p.mode)
    if mode is not ResizeMode.NEAREST:
        if max(factors) > MAX_LINEAR:
            _raise(f"bilinear Resize by {factors[0]}x{factors[1]}: the DLA's limit is 1-{MAX_LINEAR}")
        _raise(f"{mode.value} Resize: TensorRT's DLA runs bilinear scales 1-{MAX_LINEAR}, but dla_sim models "
               f"no interpolating path (use nearest, or let the GPU run it)")
    if max(factors) > MAX_NEAREST:
        _raise(f"nearest Resize by {factors[0]}x{factors[1]}: the DLA's limit is 1-{MAX_NEAREST}")
    scales = [Fraction(float(s)) for s in p.scales[2:]] if p.scales is not None else \
        [Fraction(f) for f in factors]
    for o, i, f, s in zip(out_shape[2:], in_shape[2:], factors, scales):
        if not _replicates(o, i, f, s, p):
            _raise(f"nearest Resize ({p.coordinate_transformation}, {p.nearest_mode}) by {f}: its index mapping is "
                   f"not pixel replication, which the DLA lowering builds")
    return factors[0], factors[1]


def _raise(msg: str):
    raise UnsupportedError(msg)


__all__ = ["MAX_LINEAR", "MAX_NEAREST", "nearest_factors"]
