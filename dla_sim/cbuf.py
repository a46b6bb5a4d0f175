"""Convolution buffer (CBUF) allocation: which working mode a convolution runs in, and what it refetches.

The CBUF is shared between input data and weights, allocated in whole banks [PG].  The compiler
picks, in order of preference [PG] "working modes":

1. ``full``: whole input and all weights resident -> everything fetched once.
2. ``partial_weight``: whole input resident, weights streamed through >= 2 kernel-group slots
   (ping-pong) -> everything still fetched once.
3. ``split_h``: the input does not fit; it is cut into H chunks.  Each chunk re-reads the
   ``(R-1)*dilation + 1 - stride`` overlapping lines of its predecessor.  Weights either stay resident
   (fetched once) or, when they do not fit next to a chunk, are streamed again for every chunk.
4. ``split_k``: weights split into parts that fit next to the minimum input window; the input is
   streamed once per part.  (The [PRIMER] rule: "if CBUF holds 1/n of the weights, input x n".)

Among feasible split modes the one with the fewest bytes moved is chosen (what a compiler would do).
When weight compression is enabled one bank is reserved for the weight mask (WMB) [IAS].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import DlaConfig
from .ops import ConvOp


@dataclass(frozen=True)
class CbufPlan:
    mode: str
    data_banks: int
    weight_banks: int
    input_fetches: float  # how many times the input cube is read (1.0 = once)
    weight_fetches: float  # how many times the weights are read
    h_chunks: int = 1
    k_parts: int = 1
    batch_parts: int = 1  # multi-batch layers split into sub-batches that fit (weights refetched)


def _banks(nbytes: float, bank: int) -> int:
    return max(1, math.ceil(nbytes / bank))


def input_window_lines(op: ConvOp) -> int:
    """Input lines needed to produce one output line (the minimum split-H slice)."""
    return (op.kernel[0] - 1) * op.dilation[0] + 1


def plan(op: ConvOp, cfg: DlaConfig, input_bytes: int, weight_bytes: int, kgroup_bytes: int) -> CbufPlan:
    """Choose the CBUF working mode of ``op``.

    ``input_bytes``: the input cube as stored in CBUF (all batches); ``weight_bytes``: all weights
    as stored (compressed / Winograd-transformed); ``kgroup_bytes``: one kernel group (atomic-K kernels).
    A multi-batch layer whose line of all N images does not fit is run as sub-batches (halving N until
    a mode is feasible); the weights are then fetched once per sub-batch.
    """
    n = max(op.input.n, 1)
    nb = n
    while True:
        try:
            p = _plan(op, cfg, input_bytes * nb / n, weight_bytes, kgroup_bytes)
        except ValueError:
            if nb == 1:
                raise
            nb = -(-nb // 2)
            continue
        parts = -(-n // nb)
        if parts == 1:
            return p
        return CbufPlan(p.mode, p.data_banks, p.weight_banks, p.input_fetches, p.weight_fetches * parts,
                        p.h_chunks, p.k_parts, parts)


def _plan(op: ConvOp, cfg: DlaConfig, input_bytes: float, weight_bytes: int, kgroup_bytes: int) -> CbufPlan:
    bank = cfg.cbuf.bank_bytes
    banks = cfg.cbuf.banks - (1 if op.weight_compression > 0 else 0)
    db = _banks(input_bytes, bank)
    wb = _banks(weight_bytes, bank)
    wmin = min(wb, _banks(2 * kgroup_bytes, bank))  # ping-pong kernel-group slots
    if db + wb <= banks:
        return CbufPlan("full", db, wb, 1.0, 1.0)
    if db + wmin <= banks:
        return CbufPlan("partial_weight", db, wmin, 1.0, 1.0)

    h = max(op.input.h, 1)
    line_bytes = input_bytes / h
    win = input_window_lines(op)
    sy = op.stride[0]
    overlap = max(win - sy, 0)
    min_lines = min(h, win + sy)  # one output line plus the next stride, double-buffered
    dmin = _banks(min_lines * line_bytes, bank)
    options: list[tuple[float, CbufPlan]] = []

    def h_split(data_banks: int) -> tuple[int, float] | None:
        """(chunks, input read factor) when the input streams through ``data_banks`` banks."""
        if db <= data_banks:
            return 1, 1.0
        lines_per_chunk = int(data_banks * bank // max(line_bytes, 1))
        step = lines_per_chunk - overlap
        if lines_per_chunk < min_lines or step <= 0:
            return None
        chunks = max(1, math.ceil((h - overlap) / step))
        return chunks, (h + (chunks - 1) * overlap) / h

    def add_split_h(data_banks: int, wbanks: int, w_per_chunk: bool) -> None:
        hs = h_split(data_banks)
        if hs is None:
            return
        chunks, in_f = hs
        w_f = float(chunks) if w_per_chunk else 1.0
        p = CbufPlan("split_h", data_banks, wbanks, in_f, w_f, h_chunks=chunks)
        options.append((in_f * input_bytes + w_f * weight_bytes, p))

    if wb + dmin <= banks:  # weights resident, input in H chunks
        add_split_h(banks - wb, wb, False)
    if wmin + dmin <= banks:  # weights streamed again for every H chunk
        add_split_h(banks - wmin, wmin, True)
    w1 = min(wb, _banks(kgroup_bytes, bank))  # single kernel-group slot: no ping-pong, still legal
    if w1 + dmin <= banks:
        add_split_h(banks - w1, w1, True)
    for wbanks in range(1, banks - dmin + 1):  # weights in K parts, input streamed once per part
        parts = math.ceil(weight_bytes / (wbanks * bank))
        hs = h_split(banks - wbanks)
        if parts < 2 or hs is None or wbanks * bank < kgroup_bytes:
            continue
        chunks, in_f = hs
        p = CbufPlan("split_k", banks - wbanks, wbanks, parts * in_f, 1.0, h_chunks=chunks, k_parts=parts)
        options.append((parts * in_f * input_bytes + weight_bytes, p))
    if not options:
        raise ValueError(
            f"{op.name or 'conv'}: CBUF of {cfg.cbuf.banks} banks cannot hold a {win}-line input window "
            f"and one kernel group"
        )
    return min(options, key=lambda t: t[0])[1]
