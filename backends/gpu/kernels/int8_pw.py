"""The INT8 pointwise kernel (``int8_pw_src.pw_s8``) as a tactic of the INT8 convolution.

It is timed beside the tensor-core tiles (``tactics.time_conv8``) on the layers it fits, so a layer
takes it only where the build measured it faster; its integers are the tiles', so the choice never
changes an output bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from backends.gpu.kernels.compile import decided_once, get_function
from backends.gpu.kernels.conv import ConvGeometry, KernelLaunch, enqueue
from backends.gpu.kernels.int8_pw_src import PW8_SRC, PW8_THREADS, PW8_WORDS
from backends.gpu.layout import round_up

PW8_NAMES = [f"pw_s8<{cw}, {nl}>" for cw in PW8_WORDS for nl in ("false", "true")]


@dataclass(frozen=True)
class PointwiseTactic8:
    """``pw_s8`` as an INT8 tactic (no tile, no split-K, no workspace)."""

    splits: int = 1
    tile: None = None
    name: str = "s8pw"

    def workspace_bytes(self, g: ConvGeometry) -> int:
        return 0


POINTWISE8 = PointwiseTactic8()


def pointwise8_fits(g: ConvGeometry, ldy: int | None = None) -> bool:
    """Whether ``pw_s8`` runs the layer: 1x1, stride 1, no padding, one group, 16-64 input channels,
    at most 4 * PW8_THREADS output channels and an output row no wider than Kp."""
    cw, kp = round_up(g.c, 16) // 4, round_up(g.k, 16)
    return ((g.r, g.s) == (1, 1) and g.stride == (1, 1) and g.pad == (0, 0) and g.pad_end in (None, (0, 0))
            and g.groups == 1 and cw in PW8_WORDS and kp // 4 <= PW8_THREADS and (ldy is None or ldy <= kp))


def pointwise8_launch(x: Any, w: Any, y: Any, g: ConvGeometry, epi: Any, residual: Any, ldy: int) -> KernelLaunch:
    """The launch of ``pw_s8`` (``epi``: an ``int8.DeviceEpilogue``); raises ValueError where it does not fit."""
    if not pointwise8_fits(g, ldy):
        raise ValueError(f"the INT8 pointwise kernel does not take {g}")
    cw, kp = round_up(g.c, 16) // 4, round_up(g.k, 16)
    kg = kp // 4
    pb = max(1, PW8_THREADS // kg)
    pix = 4 if cw <= 8 else 2  # int8_pw_src: PwPix
    grid = (-(-g.m // (pb * pix)),)
    return KernelLaunch(f"pw_s8<{cw}, {epi.nl_instance}>", grid, kg * pb,
                        (x, w, np.int32(g.m), np.int32(g.k), *epi.args(residual, kp, y, ldy)))


def pointwise8(x: Any, w: Any, y: Any, g: ConvGeometry, epi: Any, residual: Any, ldy: int) -> None:
    """Enqueue ``pw_s8`` on the current stream (layouts in ``int8_pw_src``)."""
    enqueue([pointwise8_launch(x, w, y, g, epi, residual, ldy)], PW8_SRC, PW8_NAMES)


@decided_once
def pointwise8_usable() -> bool:
    """Whether the module compiles here (once; a compiler that rejects it leaves the tiles)."""
    try:
        for name in PW8_NAMES:
            get_function(PW8_SRC, name, name_expressions=PW8_NAMES)
        return True
    except Exception:  # no GPU, no CuPy, an NVRTC that rejects the text
        return False


def pointwise8_runs(g: ConvGeometry, ldy: int | None = None) -> bool:
    """Whether a layer may take 's8pw' here: ``pw_s8`` fits it and its module compiles."""
    return pointwise8_fits(g, ldy) and pointwise8_usable()
