"""PDP, the planar data processor: max / min / average pooling within each channel plane.

Functional semantics (cmod ``pdp/NV_NVDLA_pdp.cpp``; [IAS] "Planar Data Processor"):

* Window 1-8, stride 1-16, padding 0-7 per side (:mod:`dla_sim.limits`). Output size
  ``(H + pad_t + pad_b - kh) // sy + 1`` (trailing input lines no window reaches are not read:
  the programming guide requires ``in + PL == (out - 1) * stride + kernel``, software crops).
* max/min: padded positions do not take part (the line buffer only compares real samples).
* average: every padded position adds ``pad_value`` to the window sum (the hardware adds
  PAD_VALUE_{n}X = n * pad value per padded run, which lets software compensate an input offset),
  and the divisor is always the full window kh*kw. There is no exclude-padding average; a
  lowering that needs one must not use padding here.
* The divide is a reciprocal multiply, done twice: ``t = round(sum * RECIP_W / 2**16)``, then
  ``round(t * RECIP_H / 2**16)`` (round half away from zero), RECIP_{W,H} = round(2**16 / k)
  [U: the register value is software's; nearest rounding assumed]. INT results saturate to int8.
  FP16: sum in float32, multiplied by the fp16 reciprocals 1/kw and 1/kh, rounded to fp16.

On-the-fly vs off-line ([IAS] "on-fly operation condition"): after SDP the PDP keeps partial
results in a share-line buffer of 7 KB = 512 entries of 112 bits per plane group; a layer fits
if ``W_out <= 512 / f(ceil(kh / sy))`` with f = 1, 2, 4, 8 for 1, 2, 3-4, > 4. Otherwise it must
run off-line from memory, optionally split into ``split_width`` column slices each obeying the
rule; slices overlap by ``max(kw - sx, 0)`` input columns, which are read twice.

Timing: input elements (channel padded) / ``post.pdp`` per cycle [SPEC]; off-line reads the input
(plus split overlap) and writes the output over the memory interface; the slower side wins.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .formats import rshift_round, saturate, to_fp16
from .limits import DlaLimitError, require_within_limits
from .ops import PdpOp, Precision, UnitTiming

__all__ = ["flying_max_width", "output_shape", "recip", "run", "timing"]

_ENTRY_BITS = 112  # share-line buffer entry width [IAS]


def output_shape(op: PdpOp) -> tuple[int, int, int, int]:
    (kh, kw), (sy, sx) = op.kernel, op.stride
    t, lft, b, r = op.pad
    n, c, h, w = op.input.shape
    return (n, c, (h + t + b - kh) // sy + 1, (w + lft + r - kw) // sx + 1)


def recip(k: int) -> int:
    """RECIP_KERNEL register: 2**16 / k in 16.16 fixed point (nearest)."""
    return int(math.floor(65536 / k + 0.5))


def flying_max_width(op: PdpOp, cfg) -> int:
    """Largest output width the share-line buffer holds for this window/stride ([IAS] rule)."""
    entries = cfg.post.pdp_buffer_bytes * 8 // _ENTRY_BITS
    m = -(-op.kernel[0] // op.stride[0])
    f = 1 if m == 1 else 2 if m == 2 else 4 if m <= 4 else 8
    return entries // f


def _check_mode(op: PdpOp, cfg) -> None:
    w_out = output_shape(op)[3]
    lim = flying_max_width(op, cfg)
    if op.source == "flying" and w_out > lim:
        raise DlaLimitError(
            f"PDP on-the-fly output width {w_out} exceeds {lim} (share-line buffer "
            f"{cfg.post.pdp_buffer_bytes} B, ceil(kh/sy)={-(-op.kernel[0] // op.stride[0])}); run it off-line"
        )
    if op.source == "memory" and -(-w_out // op.split_width) > lim:
        raise DlaLimitError(
            f"PDP off-line slice width {-(-w_out // op.split_width)} (output {w_out} / split {op.split_width}) "
            f"exceeds {lim}; use split_width >= {-(-w_out // lim)}"
        )


def _windows(x: np.ndarray, op: PdpOp, fill) -> np.ndarray:
    (kh, kw), (sy, sx) = op.kernel, op.stride
    t, lft, b, r = op.pad
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (lft, r)), constant_values=fill)
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))
    _, _, ho, wo = output_shape(op)
    return win[:, :, : (ho - 1) * sy + 1 : sy, : (wo - 1) * sx + 1 : sx]


def _reduce_taps(x: np.ndarray, op: PdpOp, fill, ufunc) -> np.ndarray:
    """``ufunc`` folded over the kh*kw window taps, each a strided view of the padded input (no
    window copies), in ``x``'s dtype."""
    (kh, kw), (sy, sx) = op.kernel, op.stride
    t, lft, b, r = op.pad
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (lft, r)), constant_values=fill) if any(op.pad) else x
    _, _, ho, wo = output_shape(op)
    out = None
    for i in range(kh):
        for j in range(kw):
            tap = xp[:, :, i: i + (ho - 1) * sy + 1: sy, j: j + (wo - 1) * sx + 1: sx]
            out = tap.copy() if out is None else ufunc(out, tap, out=out)
    return out


def run(op: PdpOp, x: np.ndarray, *, cfg) -> np.ndarray:
    """Pool NCHW ``x`` (int8 for INT8, float16/float32 for FP16)."""
    require_within_limits(op, cfg)
    _check_mode(op, cfg)
    x = np.asarray(x)
    if x.shape != op.input.shape:
        raise ValueError(f"PDP input shape {x.shape} does not match op input {op.input.shape}")
    if output_shape(op) != op.output.shape:
        raise ValueError(f"PDP output {op.output.shape} does not match the window arithmetic {output_shape(op)}")
    kh, kw = op.kernel
    is_int = op.input.precision.is_int
    if op.mode in ("max", "min"):
        if is_int and x.dtype == op.output.precision.dtype and x.dtype.kind == "i":
            # every window holds a real sample (padding < window, checked above), so a fill at the
            # dtype's own extreme never wins and the reduction stays in the input's integers
            info = np.iinfo(x.dtype)
            fill = info.min if op.mode == "max" else info.max
            return _reduce_taps(x, op, fill, np.maximum if op.mode == "max" else np.minimum)
        if is_int:
            info = np.iinfo(np.int64)
            fill = info.min if op.mode == "max" else info.max
            v = x.astype(np.int64)
        else:
            fill = -np.inf if op.mode == "max" else np.inf
            v = x.astype(np.float32)
        win = _windows(v, op, fill)
        red = win.max(axis=(-2, -1)) if op.mode == "max" else win.min(axis=(-2, -1))
        return red.astype(op.output.precision.dtype)
    if op.mode != "avg":
        raise NotImplementedError(f"PDP pooling mode {op.mode!r}")
    if is_int:
        pv = float(op.pad_value)
        if pv != round(pv):
            raise DlaLimitError(f"PDP INT pad value {pv} must be an integer")
        s = _reduce_taps(x.astype(np.int64), op, int(pv), np.add)
        t = rshift_round(s * recip(kw), 16)
        y = rshift_round(t * recip(kh), 16)
        bits = 8 if op.output.precision is Precision.INT8 else 16
        return saturate(y, bits).astype(op.output.precision.dtype)
    s = _windows(x.astype(np.float32), op, np.float32(np.float16(op.pad_value))).sum(axis=(-2, -1), dtype=np.float32)
    rw, rh = np.float32(np.float16(1.0 / kw)), np.float32(np.float16(1.0 / kh))
    return to_fp16(s * rw * rh)


def timing(op: PdpOp, cfg) -> UnitTiming:
    require_within_limits(op, cfg)
    _check_mode(op, cfg)
    if cfg.post.pdp <= 0:
        raise DlaLimitError(f"PDP has no throughput on {cfg.name}")
    inp, out = op.input, op.output
    elems = inp.n * inp.c_padded * inp.h * inp.w
    compute = elems / cfg.post.pdp
    rd = {"dram": 0, "sram": 0}
    wr = {"dram": 0, "sram": 0}
    notes = []
    if op.source == "memory":
        overlap = max(op.kernel[1] - op.stride[1], 0) * (op.split_width - 1)
        rd[inp.memory] += inp.payload_bytes + inp.n * inp.surfaces * inp.h * overlap * inp.atom_bytes
        notes.append(f"off-line, split_width={op.split_width}, overlap columns re-read={overlap}")
    wr[out.memory] += out.payload_bytes
    dram = (rd["dram"] + wr["dram"]) / cfg.dram_bytes_per_cycle()
    sram = 0.0
    if rd["sram"] or wr["sram"]:
        if not cfg.mem.sram_bits:
            raise DlaLimitError(f"{cfg.name} has no SRAM interface, but PDP {op.name!r} uses SRAM")
        sram = rd["sram"] / cfg.sram_bytes_per_cycle(False) + wr["sram"] / cfg.sram_bytes_per_cycle(True)
    return UnitTiming(
        unit="pdp",
        cycles=float(max(compute, dram, sram)),
        compute_cycles=float(compute),
        dram_read_bytes=int(rd["dram"]),
        dram_write_bytes=int(wr["dram"]),
        sram_read_bytes=int(rd["sram"]),
        sram_write_bytes=int(wr["sram"]),
        elem_ops=int(elems),
        notes=tuple(notes),
    )
