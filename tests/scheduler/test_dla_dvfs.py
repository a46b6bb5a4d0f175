"""Per-power-mode DLA voltage/frequency scaling: the DLA's clock sets its time, the mode's rail voltage
(the platform's stated DVFS curve) sets its on-chip energy per operation as C x V^2."""

from __future__ import annotations

from dataclasses import replace

import pytest

from backends.dla import DlaBackend
from dla_sim.config import ORIN, XAVIER
from engine.ir.dtypes import Precision
from engine.model_loading import load_network
from scheduler.cost import build_cost_model
from scheduler.dla_source import dla_config
from scheduler.platforms import PLATFORMS
from scheduler.platforms.model import DvfsCurve

# Typed in again so a changed constant fails here: nvpmodel DLA core caps (MHz) and the stated curve.
ORIN_DLA_MHZ = {"15W": 614.4, "30W": 1369.6, "50W": 1404.0, "MAXN": 1600.0}
ORIN_V = (614.4, 0.55, 1600.0, 0.70)
XAVIER_V = (550.0, 0.60, 1395.2, 0.75)


def _v(curve: tuple[float, float, float, float], f: float) -> float:
    f_lo, v_lo, f_hi, v_hi = curve
    return v_lo if f <= f_lo else v_lo + (v_hi - v_lo) * (f - f_lo) / (f_hi - f_lo)


def test_curve_is_linear_between_its_points_and_flat_below():
    c = DvfsCurve(500.0, 0.5, 1500.0, 1.0)
    assert c.volts(500.0) == pytest.approx(0.5) and c.volts(1500.0) == pytest.approx(1.0)
    assert c.volts(1000.0) == pytest.approx(0.75) and c.volts(100.0) == pytest.approx(0.5)
    assert c.energy_scale(1000.0) == pytest.approx(0.5625)
    with pytest.raises(ValueError, match="outside the DVFS curve"):
        c.volts(1600.0)
    with pytest.raises(ValueError):
        DvfsCurve(1500.0, 0.5, 500.0, 1.0)


@pytest.mark.parametrize(("platform", "curve", "clocks"), [
    ("orin-agx-64gb", ORIN_V, ORIN_DLA_MHZ),
    ("xavier-agx", XAVIER_V, {"10W": 550.0, "15W": 750.0, "30W": 1050.0, "MAXN": 1395.2}),
])
def test_mode_voltage_and_energy_per_mac_follow_the_curve(platform, curve, clocks):
    plat = PLATFORMS[platform]
    base = ORIN if platform.startswith("orin") else XAVIER
    assert plat.dla_dvfs.v_hi == base.energy.vdd  # the published per-MAC energy holds at the top clock
    for name, f in clocks.items():
        m = plat.mode(name)
        assert m.dla_clock_mhz == f
        v = _v(curve, f)
        assert m.dla_vdd == pytest.approx(v, rel=1e-12)
        assert m.dla_energy_scale == pytest.approx((v / curve[3]) ** 2, rel=1e-12)
        cfg = dla_config(plat, m)
        assert cfg.clock_mhz == f and cfg.energy.vdd == pytest.approx(v)
        assert cfg.energy.mac_pj_int8 == pytest.approx(base.energy.mac_pj_int8 * (v / curve[3]) ** 2, rel=1e-12)
        assert cfg.energy.mac_pj_fp16 == pytest.approx(base.energy.mac_pj_fp16 * (v / curve[3]) ** 2, rel=1e-12)
        # off-chip DRAM energy and static power do not scale with the DLA rail
        assert cfg.energy.dram_pj_per_byte == base.energy.dram_pj_per_byte
        assert cfg.energy.static_mw == base.energy.static_mw
    assert plat.mode("MAXN").dla_energy_scale == pytest.approx(1.0)


@pytest.fixture(scope="module")
def net():
    return load_network("resnet18_small")


def _on_chip(plat, mode: str):
    """dla_sim's configuration at ``mode`` with DRAM energy and static power removed: what is left is
    the on-chip switching energy (MACs, post-processing, SRAM)."""
    cfg = dla_config(plat, plat.mode(mode))
    return replace(cfg, energy=replace(cfg.energy, dram_pj_per_byte=0.0, static_mw=0.0))


def test_on_chip_dla_energy_scales_as_v_squared_and_time_follows_the_clock(net):
    plat = PLATFORMS["orin-agx-64gb"]
    costs = {m: DlaBackend(_on_chip(plat, m), 0).layer_costs(net, Precision.INT8) for m in ("15W", "MAXN")}
    e = {m: sum(x[1] for x in c.values()) for m, c in costs.items()}
    t = {m: sum(x[0] for x in c.values()) for m, c in costs.items()}
    v15 = _v(ORIN_V, ORIN_DLA_MHZ["15W"])
    assert e["15W"] / e["MAXN"] == pytest.approx((v15 / 0.70) ** 2, rel=1e-9)
    # the slower clock: never faster, and at most the clock ratio slower (DRAM-bound layers gain less)
    assert t["MAXN"] < t["15W"] <= t["MAXN"] * ORIN_DLA_MHZ["MAXN"] / ORIN_DLA_MHZ["15W"] * (1 + 1e-9)
    # full-load dynamic power of the busy compute ~ f x V^2: energy per MAC x MACs per second
    p = {m: dla_config(plat, plat.mode(m)).energy.mac_pj_int8 * ORIN_DLA_MHZ[m] for m in ("15W", "MAXN")}
    assert p["15W"] / p["MAXN"] == pytest.approx(
        ORIN_DLA_MHZ["15W"] / ORIN_DLA_MHZ["MAXN"] * (v15 / 0.70) ** 2, rel=1e-12)


def test_cost_model_dla_energy_per_layer_lower_at_lower_voltage(net):
    lo = build_cost_model(net, "orin-agx-64gb", "30W", Precision.INT8)
    hi = build_cost_model(net, "orin-agx-64gb", "MAXN", Precision.INT8)
    dla = [n for n in hi.graph.nodes if not n.pseudo and n.supports("dla0")]
    assert dla
    lo_nodes = {n.name: n for n in lo.graph.nodes}
    assert sum(lo_nodes[n.name].energy["dla0"] for n in dla) < sum(n.energy["dla0"] for n in dla)
    assert all(lo_nodes[n.name].time["dla0"] >= n.time["dla0"] * (1 - 1e-9) for n in dla)
