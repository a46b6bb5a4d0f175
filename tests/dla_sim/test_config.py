"""Configurations as data: values, sources, lookups, derived quantities."""

from __future__ import annotations

import pytest

from dla_sim.config import CONFIGS, NV_FULL, NV_SMALL, ORIN, SPREADSHEET, XAVIER, get_config
from dla_sim.ops import Precision


def test_named_configs_and_lookup():
    assert set(CONFIGS) == {"nv_small", "nv_full", "xavier", "orin", "spreadsheet"}
    assert get_config("Xavier") is XAVIER
    assert get_config("nvdlav1") is NV_FULL
    with pytest.raises(KeyError, match="unknown DLA configuration 'tpu'"):
        get_config("tpu")


def test_mac_arrays_match_atomic_geometry():
    for cfg in (NV_SMALL, NV_FULL, XAVIER):
        assert cfg.conv.atomic_c * cfg.conv.atomic_k == cfg.conv.macs_int8
    assert NV_FULL.conv.atoms(Precision.FP16) == (64, 16)  # 1x1x64 x 16 kernels [IAS]
    assert NV_FULL.cbuf.size_bytes == 512 * 1024 and NV_SMALL.cbuf.size_bytes == 128 * 1024
    assert ORIN.conv.macs_int8 == 4 * XAVIER.conv.macs_int8


def test_peak_tops_match_published():
    # 2 Xavier DLAs: 11.4 TOPS dense at MAXN; 2 Orin DLAs: 105 sparse TOPS at MAXN (reference notes §2)
    xavier = 2 * 2 * XAVIER.conv.macs_int8 * XAVIER.clock_hz / 1e12
    orin_sparse = 2 * 2 * 2 * ORIN.conv.macs_int8 * ORIN.clock_hz / 1e12
    assert xavier == pytest.approx(11.4, rel=0.01)
    assert orin_sparse == pytest.approx(105, rel=0.01)


def test_power_modes():
    assert XAVIER.with_mode("15W").clock_mhz == 750.0
    assert dict(XAVIER.clocks_mhz) == {"MAXN": 1395.2, "30W": 1050.0, "15W": 750.0, "10W": 550.0}
    assert ORIN.with_mode("30W").clock_mhz == 1369.6
    assert get_config("orin", "15W").clock_mhz == 614.4
    with pytest.raises(KeyError, match="unknown power mode '5W'"):
        XAVIER.with_mode("5W")


def test_every_config_cites_sources():
    for cfg in CONFIGS.values():
        for key in ("conv.macs_int8", "cbuf", "mem.dbb_bits", "clocks_mhz"):
            assert cfg.source(key), f"{cfg.name}: no source for {key}"
    assert "calibrated" in XAVIER.source("mem.dram_share") and "calibrated" in ORIN.source("mem.dram_share")


def test_spreadsheet_assumptions():
    assert SPREADSHEET.conv.macs_int8 == 2048 and SPREADSHEET.clock_mhz == 1000.0
    assert SPREADSHEET.mem.dram_gbps == 10.0 and SPREADSHEET.fc_batch == 16
    assert SPREADSHEET.timing_model == "spreadsheet"


def test_bandwidth_per_cycle_is_capped_by_interface():
    assert NV_FULL.dram_bytes_per_cycle() == pytest.approx(25.6)  # 25.6 GB/s at 1 GHz < 64 B/cycle
    assert XAVIER.dram_bytes_per_cycle() <= XAVIER.mem.dbb_bits / 8
    assert NV_SMALL.sram_bytes_per_cycle() == 0.0 and NV_SMALL.atom_bytes == 8


def test_to_dict_is_plain_json():
    import json

    d = json.loads(json.dumps(ORIN.to_dict()))
    assert d["conv"]["macs_int8"] == 8192 and d["clocks_mhz"]["MAXN"] == 1600.0
