"""Spreadsheet mode reproduces the NVDLA performance spreadsheet's published results [PERF]."""

from __future__ import annotations

import pytest

from dla_sim import conv_core, networks, simulator
from dla_sim.config import SPREADSHEET
from dla_sim.ops import ConvOp, CubeDesc


def _run(name: str) -> simulator.SimResult:
    return simulator.simulate(networks.NETWORKS[name](hw_modes=False), SPREADSHEET, timing_only=True)


def test_res2a_branch2b_exactly_25088_mac_cycles():
    net = networks.resnet50(hw_modes=False)
    op = next(o for o in net.ops if o.name == "res2a_branch2b")
    assert isinstance(op, ConvOp)
    assert conv_core.spreadsheet_timing(op, SPREADSHEET).compute_cycles == 25088
    assert conv_core.compute_cycles(op, SPREADSHEET) == 25088  # the hardware rule agrees


def test_resnet50_7_11_ms_within_3_percent():
    r = _run("resnet50")
    assert r.ms_per_frame == pytest.approx(7.11, rel=0.03)


def test_alexnet_1117_fps_within_5_percent():
    assert _run("alexnet").fps == pytest.approx(1117, rel=0.05)


def test_googlenet_818_fps_within_5_percent():
    assert _run("googlenet").fps == pytest.approx(818, rel=0.05)


def test_dram_cycles_follow_the_bandwidth():
    # halving the sheet's DRAM bandwidth makes a DRAM-bound layer twice as slow
    from dataclasses import replace

    op = ConvOp(input=CubeDesc(c=512, h=7, w=7), output=CubeDesc(c=2048, h=7, w=7), kernel=(1, 1))
    slow = replace(SPREADSHEET, mem=replace(SPREADSHEET.mem, dram_gbps=5.0))
    a, b = conv_core.spreadsheet_timing(op, SPREADSHEET), conv_core.spreadsheet_timing(op, slow)
    assert a.notes[-1] == "DRAM"
    assert b.cycles == pytest.approx(2 * a.cycles, abs=1)


def test_weight_refetch_when_cbuf_too_small():
    # 512x512x3x3 Winograd weights (4 MB) do not fit next to the input: the input is refetched
    op = ConvOp(input=CubeDesc(c=512, h=7, w=7), output=CubeDesc(c=512, h=7, w=7), kernel=(3, 3),
                pad=(1, 1, 1, 1), mode="winograd")
    t = conv_core.spreadsheet_timing(op, SPREADSHEET)
    plain = 512 * 49 + 512 * 512 * 16 + 512 * 49  # in + transformed weights + out, no refetch
    assert t.dram_bytes == pytest.approx(plain, rel=1e-6)  # weights are the larger operand: kept streaming
    big_in = ConvOp(input=CubeDesc(c=256, h=56, w=56), output=CubeDesc(c=4096, h=56, w=56), kernel=(1, 1))
    t2 = conv_core.spreadsheet_timing(big_in, SPREADSHEET)
    assert t2.dram_read_bytes > 256 * 56 * 56 + 256 * 4096  # the input stays, the weights are refetched
