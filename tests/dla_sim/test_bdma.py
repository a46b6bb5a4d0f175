"""BDMA: strided copies against an explicit loop, timing from bursts and bandwidth."""

import numpy as np
import pytest

from dla_sim import bdma
from dla_sim.config import get_config
from dla_sim.limits import DlaLimitError
from dla_sim.ops import BdmaOp

NV_FULL = get_config("nv_full")


def _op(**kw):
    base = dict(name="b", line_bytes=96, lines=5, surfaces=3, src_line_stride=128, src_surface_stride=1024,
                dst_line_stride=96, dst_surface_stride=480, src_memory="dram", dst_memory="sram")
    base.update(kw)
    return BdmaOp(**base)


def test_copy_matches_loop():
    rng = np.random.default_rng(91)
    op = _op()
    src = rng.integers(0, 256, bdma.src_size(op)).astype(np.uint8)
    dst = bdma.run(op, src, cfg=NV_FULL)
    ref = np.zeros(bdma.dst_size(op), np.uint8)
    for s in range(3):
        for ln in range(5):
            a = s * 1024 + ln * 128
            b = s * 480 + ln * 96
            ref[b : b + 96] = src[a : a + 96]
    assert np.array_equal(dst, ref)


def test_timing_bandwidth_bound():
    op = _op(line_bytes=4096, lines=64, surfaces=2, src_line_stride=4096, src_surface_stride=64 * 4096,
             dst_line_stride=4096, dst_surface_stride=64 * 4096)
    t = bdma.timing(op, NV_FULL)
    nbytes = 4096 * 128
    assert t.dram_read_bytes == nbytes and t.sram_write_bytes == nbytes
    bw = min(NV_FULL.dram_bytes_per_cycle(), NV_FULL.sram_bytes_per_cycle(True))
    assert t.cycles == pytest.approx(nbytes / bw + NV_FULL.mem.dram_latency)


def test_refusals():
    with pytest.raises(DlaLimitError, match="line stride 64 B < line size 96 B"):
        bdma.run(_op(src_line_stride=64), np.zeros(8192, np.uint8), cfg=NV_FULL)
    with pytest.raises(DlaLimitError, match="not a multiple of 32"):
        bdma.timing(_op(line_bytes=100), NV_FULL)
    with pytest.raises(DlaLimitError, match="BDMA not available on nv_small"):
        bdma.timing(_op(), get_config("nv_small"))
