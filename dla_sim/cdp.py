"""CDP, the cross-channel data processor: local response normalisation through the LUT.

[IAS] "Cross Channel Data Processor": out = x * f(sum of x**2 over n neighbouring channels),
f(s) = (k + alpha/n * s)**-beta looked up in the shared LE/LO LUT (:mod:`dla_sim.lut`); the window
is clipped at the first/last channel; n in {3, 5, 7, 9}; always memory to memory.

FP16 pipeline: squares and the window sum in float32 (the hardware keeps fp17/fp32 partials), the
LUT built by :func:`dla_sim.lut.lrn_lut` with its density (LO) table over [0, 16 k/(alpha/n)] --
where f still changes fast -- and its exponential (LE) table above; result x * f rounded to fp16.
The error of f is the LUT's stated relative error (``lrn_build(op).max_rel_error``) on its
stated domain of s (up to the largest FP16 sum, or where f drops below the smallest normal fp16).
The INT8/INT16 pipeline (cdp_in_cvt -> INT LUT -> cdp_out_cvt) is not modelled; TensorRT runs
LRN in FP16 on DLA ([TRTDOC]), so INT input raises NotImplementedError.

Timing: channel-padded elements / ``post.cdp`` per cycle [SPEC] against reading the input and
writing the output over the memory interface.
"""

from __future__ import annotations

import functools

import numpy as np

from . import lut as L
from .formats import to_fp16
from .limits import DlaLimitError, require_within_limits
from .ops import CdpOp, UnitTiming

__all__ = ["lrn_build", "run", "square_sum", "timing"]

_S_MAX = 9 * 65504.0**2  # largest FP16 window sum of squares


@functools.lru_cache(maxsize=32)
def _build(alpha: float, beta: float, k: float, n: int) -> L.LutBuild:
    a = alpha / n
    dense = 16.0 * k / a if a > 0 else 256.0
    # beyond the s where f falls under the smallest normal fp16 (2**-14) the entries lose precision
    s_normal = (2.0 ** (14.0 / beta) - k) / a if (a > 0 and beta > 0) else _S_MAX
    return L.lrn_lut(alpha, beta, k, n, dense_max=dense, s_max=float(min(_S_MAX, max(s_normal, dense))))


def lrn_build(op: CdpOp) -> L.LutBuild:
    """The LUT the CDP is programmed with for ``op`` (and its stated error)."""
    return _build(float(op.alpha), float(op.beta), float(op.k), int(op.local_size))


def square_sum(x: np.ndarray, n: int) -> np.ndarray:
    """Sum of squares over channels [c - n//2, c + n//2] clipped to the cube, float32."""
    sq = np.square(x.astype(np.float32))
    cs = np.concatenate([np.zeros_like(sq[:, :1]), np.cumsum(sq, axis=1, dtype=np.float64)], axis=1)
    c = x.shape[1]
    lo = np.clip(np.arange(c) - n // 2, 0, c)
    hi = np.clip(np.arange(c) + n // 2 + 1, 0, c)
    return (cs[:, hi] - cs[:, lo]).astype(np.float32)


def run(op: CdpOp, x: np.ndarray, *, cfg) -> np.ndarray:
    require_within_limits(op, cfg)
    x = np.asarray(x)
    if x.shape != op.input.shape:
        raise ValueError(f"CDP input shape {x.shape} does not match op input {op.input.shape}")
    if op.input.precision.is_int:
        raise NotImplementedError("CDP INT pipeline (cdp_in_cvt -> INT LUT -> cdp_out_cvt) is not modelled; use FP16")
    if x.dtype.kind != "f":
        raise ValueError(f"FP16 CDP input must be float, got {x.dtype}")
    s = square_sum(x, op.local_size)
    f = L.evaluate(lrn_build(op).lut, s)
    return to_fp16(x.astype(np.float32) * f)


def timing(op: CdpOp, cfg) -> UnitTiming:
    require_within_limits(op, cfg)
    if cfg.post.cdp <= 0:
        raise DlaLimitError(f"CDP has no throughput on {cfg.name}")
    inp, out = op.input, op.output
    elems = inp.n * inp.c_padded * inp.h * inp.w
    compute = elems / cfg.post.cdp
    rd = {"dram": 0, "sram": 0}
    wr = {"dram": 0, "sram": 0}
    rd[inp.memory] += inp.payload_bytes
    wr[out.memory] += out.payload_bytes
    mem = (rd["dram"] + wr["dram"]) / cfg.dram_bytes_per_cycle()
    if rd["sram"] or wr["sram"]:
        if not cfg.mem.sram_bits:
            raise DlaLimitError(f"{cfg.name} has no SRAM interface, but CDP {op.name!r} uses SRAM")
        mem += rd["sram"] / cfg.sram_bytes_per_cycle(False) + wr["sram"] / cfg.sram_bytes_per_cycle(True)
    return UnitTiming(
        unit="cdp",
        cycles=float(max(compute, mem)),
        compute_cycles=float(compute),
        dram_read_bytes=rd["dram"],
        dram_write_bytes=wr["dram"],
        sram_read_bytes=rd["sram"],
        sram_write_bytes=wr["sram"],
        elem_ops=int(elems * (op.local_size + 2)),
    )
