"""RUBIK: data-layout engine without arithmetic -- contract (deconvolution), split, merge.

* contract ([IAS] "RUBIK / Contract"; [PG] "Deconvolution"): a stride (sy, sx) deconvolution runs
  as sy*sx convolutions whose outputs are appended along C (phase p = py*sx + px, x fastest); the
  contract de-interleaves that channel-extended cube: input (N, sy*sx*K, H, W) -> output
  (N, K, H*sy, W*sx) with ``out[:, k, oy*sy+py, ox*sx+px] = in[:, p*K + k, oy, ox]``.
  Requirements: C % (sx*sy*32 B) == 0 and every dimension <= 8192 ([IAS]; checked in limits).
* split: feature cube -> M-planar (one pitch-linear plane per channel, lines and planes 64-B
  aligned); merge: the inverse. On logical NCHW arrays both are the identity; what changes is the
  memory layout, which the timing counts.

Timing: memory bound. Bytes read + written over the interface bandwidth; contract efficiency is
100 % when line strides are 256-B multiples and 80 % otherwise (the [IAS] range 80-100 %).
"""

from __future__ import annotations

import numpy as np

from .formats import align_up
from .limits import DlaLimitError, require_within_limits
from .ops import RubikOp, UnitTiming

__all__ = ["contract", "planar_bytes", "run", "timing"]


def contract(x: np.ndarray, stride: tuple[int, int]) -> np.ndarray:
    """De-interleave the channel-extended cube of a stride-(sy, sx) deconvolution."""
    sy, sx = stride
    n, c, h, w = x.shape
    if c % (sy * sx):
        raise ValueError(f"contract: C={c} not divisible by sy*sx={sy * sx}")
    k = c // (sy * sx)
    v = x.reshape(n, sy, sx, k, h, w)  # channel = (py*sx + px)*K + k
    return np.ascontiguousarray(v.transpose(0, 3, 4, 1, 5, 2).reshape(n, k, h * sy, w * sx))


def planar_bytes(n: int, c: int, h: int, w: int, bpe: int) -> int:
    """Bytes of an M-planar cube: one plane per channel, 64-B aligned lines ([IAS])."""
    return n * c * h * align_up(w * bpe, 64)


def run(op: RubikOp, x: np.ndarray, *, cfg) -> np.ndarray:
    require_within_limits(op, cfg)
    x = np.asarray(x)
    if x.shape != op.input.shape:
        raise ValueError(f"RUBIK input shape {x.shape} does not match op input {op.input.shape}")
    if op.mode == "contract":
        y = contract(x, op.stride)
    elif op.mode in ("split", "merge"):
        y = x.copy()
    else:
        raise NotImplementedError(f"RUBIK mode {op.mode!r}")
    if y.shape != op.output.shape:
        raise ValueError(f"RUBIK output {op.output.shape} does not match the {op.mode} result {y.shape}")
    return y


def timing(op: RubikOp, cfg) -> UnitTiming:
    require_within_limits(op, cfg)
    inp, out = op.input, op.output
    bpe = inp.precision.bytes
    eff = 1.0
    if op.mode == "contract":
        rd, wr = inp.payload_bytes, out.payload_bytes
        if inp.line_stride % 256 or out.line_stride % 256:
            eff = 0.8
    elif op.mode == "split":
        rd, wr = inp.payload_bytes, planar_bytes(*out.shape, bpe)
    elif op.mode == "merge":
        rd, wr = planar_bytes(*inp.shape, bpe), out.payload_bytes
    else:
        raise NotImplementedError(f"RUBIK mode {op.mode!r}")
    traffic = {"dram": 0.0, "sram": 0.0}
    traffic[inp.memory] += rd
    traffic[out.memory] += wr
    cyc = traffic["dram"] / cfg.dram_bytes_per_cycle()
    if traffic["sram"]:
        if not cfg.mem.sram_bits:
            raise DlaLimitError(f"{cfg.name} has no SRAM interface, but RUBIK {op.name!r} uses SRAM")
        cyc += traffic["sram"] / cfg.sram_bytes_per_cycle()
    cyc /= eff
    return UnitTiming(
        unit="rubik",
        cycles=float(cyc),
        compute_cycles=0.0,
        dram_read_bytes=int(rd if inp.memory == "dram" else 0),
        dram_write_bytes=int(wr if out.memory == "dram" else 0),
        sram_read_bytes=int(rd if inp.memory == "sram" else 0),
        sram_write_bytes=int(wr if out.memory == "sram" else 0),
        notes=(f"{op.mode}, memory efficiency {eff:.0%}",),
    )
