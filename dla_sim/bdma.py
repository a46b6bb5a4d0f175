"""BDMA, the bridge DMA: copies between DRAM and on-chip SRAM (also DRAM->DRAM, SRAM->SRAM).

[IAS] "Bridge DMA": two 512-bit interfaces, bursts of at most 4 beats (256 B), a line repeat
(lines separated by a line stride make a surface) and a surface repeat (surfaces separated by a
surface stride make a cube). The two directions cannot run at the same time.

Functional model: gathers ``lines x surfaces`` lines of ``line_bytes`` from a source byte buffer
and scatters them into a destination buffer with the destination strides (gaps stay zero).

Timing: each line is split into ceil(line_bytes / 256) bursts; the copy streams at the slower of
the source read and destination write bandwidth (DRAM: ``cfg.dram_bytes_per_cycle()``, SRAM:
``cfg.sram_bytes_per_cycle()``), plus one source-memory latency to fill the pipe.
"""

from __future__ import annotations

import numpy as np

from .limits import DlaLimitError, require_within_limits
from .ops import BdmaOp, UnitTiming

__all__ = ["BURST_BYTES", "dst_size", "run", "src_size", "timing"]

BURST_BYTES = 4 * 64  # burst length 4 x 512-bit beats [IAS]


def _extent(op: BdmaOp, line_stride: int, surf_stride: int) -> int:
    return (op.surfaces - 1) * surf_stride + (op.lines - 1) * line_stride + op.line_bytes


def src_size(op: BdmaOp) -> int:
    """Bytes of source buffer the copy spans."""
    return _extent(op, op.src_line_stride, op.src_surface_stride)


def dst_size(op: BdmaOp) -> int:
    """Bytes of destination buffer the copy spans."""
    return _extent(op, op.dst_line_stride, op.dst_surface_stride)


def _line_offsets(op: BdmaOp, line_stride: int, surf_stride: int) -> np.ndarray:
    s = np.arange(op.surfaces)[:, None] * surf_stride + np.arange(op.lines)[None, :] * line_stride
    return (s.reshape(-1)[:, None] + np.arange(op.line_bytes)[None, :]).reshape(-1)


def _check_strides(op: BdmaOp) -> None:
    for side in ("src", "dst"):
        ls, ss = getattr(op, f"{side}_line_stride"), getattr(op, f"{side}_surface_stride")
        if op.lines > 1 and ls < op.line_bytes:
            raise DlaLimitError(f"BDMA {side} line stride {ls} B < line size {op.line_bytes} B (lines overlap)")
        if op.surfaces > 1 and ss < (op.lines - 1) * ls + op.line_bytes:
            raise DlaLimitError(f"BDMA {side} surface stride {ss} B overlaps its {op.lines} lines")


def run(op: BdmaOp, src: np.ndarray, *, cfg) -> np.ndarray:
    """Copy from the uint8 buffer ``src``; returns the destination span as a uint8 buffer."""
    require_within_limits(op, cfg)
    _check_strides(op)
    src = np.asarray(src, dtype=np.uint8).reshape(-1)
    if src.size < src_size(op):
        raise ValueError(f"BDMA source buffer of {src.size} B is smaller than the span {src_size(op)} B")
    dst = np.zeros(dst_size(op), dtype=np.uint8)
    dst[_line_offsets(op, op.dst_line_stride, op.dst_surface_stride)] = src[
        _line_offsets(op, op.src_line_stride, op.src_surface_stride)
    ]
    return dst


def _bw(cfg, memory: str, write: bool) -> float:
    if memory == "dram":
        return cfg.dram_bytes_per_cycle()
    bw = cfg.sram_bytes_per_cycle(write)
    if not bw:
        raise DlaLimitError(f"{cfg.name} has no SRAM interface")
    return bw


def timing(op: BdmaOp, cfg) -> UnitTiming:
    require_within_limits(op, cfg)
    _check_strides(op)
    nbytes = op.bytes
    bursts = op.lines * op.surfaces * -(-op.line_bytes // BURST_BYTES)
    # a burst always moves whole 64-B beats
    moved = op.lines * op.surfaces * -(-op.line_bytes // 64) * 64
    stream = max(moved / _bw(cfg, op.src_memory, False), moved / _bw(cfg, op.dst_memory, True))
    latency = cfg.mem.dram_latency if op.src_memory == "dram" else cfg.mem.sram_latency
    rd = {"dram": 0, "sram": 0}
    wr = {"dram": 0, "sram": 0}
    rd[op.src_memory] += nbytes
    wr[op.dst_memory] += nbytes
    return UnitTiming(
        unit="bdma",
        cycles=float(stream + latency),
        compute_cycles=0.0,
        dram_read_bytes=rd["dram"],
        dram_write_bytes=wr["dram"],
        sram_read_bytes=rd["sram"],
        sram_write_bytes=wr["sram"],
        notes=(f"{bursts} bursts of <= {BURST_BYTES} B, {op.src_memory}->{op.dst_memory}",),
    )
