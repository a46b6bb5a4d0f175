"""Jetson power model: its inputs are the cited constants, energy grows with work, and the DLA / GPU
perf-per-watt ratio follows from the model's parts (two derivations, and it moves when a part moves)."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dla_sim.config as dla_config
from engine.ir.dtypes import Precision
from engine.model_loading import load_network
from scheduler.gpu_model import gpu_layer_cost
from scheduler.layer_work import LayerWork
from scheduler.platforms import PLATFORMS
from scheduler.platforms.jetson import orin_gpu_energy_per_tpc_cycle
from scheduler.studies.power_model import power_rows, ratio_from_energy

ORIN_PLAT = PLATFORMS["orin-agx-64gb"]
# The cited facts, typed in again here so a changed constant anywhere fails this file:
BLOG_W, BLOG_INT8_TOPS, BLOG_FP16_TFLOPS = 1.5, 5.0, 2.5  # NVIDIA on Xavier's DLA, per core
FORUM_RAIL_W = {"MAXN": 40.4, "50W": 18.4, "30W": 7.6, "15W": 5.2}  # AGX Orin VDD_GPU_SOC under GPU stress
NVP_GPU = {"MAXN": (1301.25, 8), "50W": (828.75, 8), "30W": (624.75, 4), "15W": (420.75, 2)}  # MHz, TPCs


def test_dla_energy_per_mac_is_the_published_power_over_the_published_rate():
    static = 0.15
    xavier_int8 = (BLOG_W - static) / (BLOG_INT8_TOPS * 1e12 / 2) * 1e12
    xavier_fp16 = (BLOG_W - static) / (BLOG_FP16_TFLOPS * 1e12 / 2) * 1e12
    assert dla_config.XAVIER.energy.mac_pj_int8 == pytest.approx(xavier_int8, rel=1e-12)
    assert dla_config.XAVIER.energy.mac_pj_fp16 == pytest.approx(xavier_fp16, rel=1e-12)
    cv2 = (8 / 12) * (0.7 / 0.75) ** 2  # 12 nm 0.75 V -> 8 nm 0.7 V
    assert dla_config.ORIN.energy.mac_pj_int8 == pytest.approx(xavier_int8 * cv2, rel=1e-12)
    assert dla_config.ORIN.energy.mac_pj_fp16 == pytest.approx(xavier_fp16 * cv2, rel=1e-12)
    # the open NVDLA configs keep the per-operation [HOR] model
    assert dla_config.NV_FULL.energy.mac_pj_int8 is None


@pytest.mark.parametrize("mode", list(FORUM_RAIL_W))
def test_gpu_full_load_power_is_energy_per_tpc_cycle_times_tpcs_times_clock(mode):
    m = ORIN_PLAT.mode(mode)
    clock, tpcs = NVP_GPU[mode]
    assert (m.gpu_clock_mhz, m.gpu_active_sms) == (clock, 2 * tpcs)
    e = orin_gpu_energy_per_tpc_cycle(mode)
    assert e == pytest.approx((FORUM_RAIL_W[mode] - m.gpu_static_w) / (tpcs * clock * 1e6), rel=1e-12)
    assert m.gpu_active_w == pytest.approx(e * tpcs * clock * 1e6, rel=1e-12)
    assert "[FORUM]" in m.sources["gpu_active_w"]


def _conv(c: int, batch: int) -> LayerWork:
    m, n, k = batch * 28 * 28, c, c * 9
    return LayerWork("conv", "Convolution", m * n * k, 0, m * c, m * c, n * k, 1, (m, n, k))


@settings(max_examples=30, deadline=None)
@given(c=st.sampled_from([16, 32, 64, 128, 256]), batch=st.integers(1, 8),
       mode=st.sampled_from(list(FORUM_RAIL_W)), prec=st.sampled_from([Precision.INT8, Precision.FP16]))
def test_gpu_energy_positive_and_monotone_in_work(c, batch, mode, prec):
    m = ORIN_PLAT.mode(mode)
    small = gpu_layer_cost(_conv(c, batch), ORIN_PLAT, m, prec).energy_j
    more_batch = gpu_layer_cost(_conv(c, batch + 1), ORIN_PLAT, m, prec).energy_j
    more_chan = gpu_layer_cost(_conv(2 * c, batch), ORIN_PLAT, m, prec).energy_j
    assert 0 < small < more_batch and small < more_chan


@pytest.fixture(scope="module")
def rows():
    return power_rows(load_network("resnet18_small"), "orin-agx-64gb", ["30W", "MAXN"])


def test_dla_energy_positive_and_grows_with_batch():
    one, = power_rows(load_network("resnet18_small", 1), "orin-agx-64gb", ["MAXN"])
    two, = power_rows(load_network("resnet18_small", 2), "orin-agx-64gb", ["MAXN"])
    for d in ("dla0", "dla1"):
        assert 0 < one.dla.energy_mj_per_img[d] < two.dla.energy_mj_per_img[d]
    assert 0 < one.gpu.energy_mj_per_img["gpu"] < two.gpu.energy_mj_per_img["gpu"]


def test_ratio_two_ways_and_power_adds_up(rows):
    for r in rows:
        assert r.dla is not None, r.dla_refused
        assert r.ratio == pytest.approx(ratio_from_energy(r), rel=1e-9)
        static = sum(ORIN_PLAT.static_power_w(ORIN_PLAT.mode(r.mode)).values())
        for run in (r.gpu, r.dla):
            assert run.static_w == pytest.approx(static)
            dyn = sum(run.energy_mj_per_img[d] / 1e3 * f for d, f in run.per_device_fps.items())
            assert run.dynamic_w == pytest.approx(dyn, rel=1e-9)


def test_ratio_moves_with_the_dla_energy_input(rows, monkeypatch):
    """Doubling the DLA's published per-MAC energy raises the DLA's power and lowers the ratio, the GPU
    untouched: the ratio is an output of the inputs, not a constant."""
    orin = dla_config.ORIN
    hot = dataclasses.replace(orin, energy=dataclasses.replace(
        orin.energy, mac_pj_int8=2 * orin.energy.mac_pj_int8, mac_pj_fp16=2 * orin.energy.mac_pj_fp16))
    monkeypatch.setattr(dla_config, "CONFIGS", MappingProxyType({**dla_config.CONFIGS, "orin": hot}))
    base = next(r for r in rows if r.mode == "MAXN")
    new, = power_rows(load_network("resnet18_small"), "orin-agx-64gb", ["MAXN"])
    assert new.gpu.power_w == pytest.approx(base.gpu.power_w)
    assert new.dla.throughput_fps == pytest.approx(base.dla.throughput_fps)
    assert new.dla.power_w > base.dla.power_w and new.ratio < base.ratio
