import pytest

from engine.ir.dtypes import Precision
from engine.ir.errors import BuildError
from engine.ir.platforms import KNOWN_PLATFORMS
from scheduler.cost import transition_cost_s
from scheduler.platforms import PLATFORMS, get_platform

# NVIDIA DLA-SW README: peak sparse INT8 TOPS of the Orin GPU per power mode
DLASW_GPU_SPARSE_TOPS = {"MAXN": 171, "50W": 109, "30W": 41, "15W": 14}


def test_every_platform_is_registered_and_well_formed():
    for name, p in PLATFORMS.items():
        assert name in KNOWN_PLATFORMS
        assert p.default_mode in p.modes
        for m in p.modes.values():
            assert m.gpu_static_w >= 0 and m.soc_static_w >= 0 and m.dram_gbps > 0
            rails = p.static_power_w(m)
            assert set(rails) == {"gpu", "soc", *(f"dla{k}" for k in range(p.dla_cores))}
            assert rails["soc"] == m.soc_static_w and rails["gpu"] == m.gpu_static_w
        assert p.transition.fixed_s["gpu->dla"] > 0 and p.transition.fixed_s["dla->gpu"] > 0


@pytest.mark.parametrize("mode", sorted(DLASW_GPU_SPARSE_TOPS))
def test_orin_gpu_peaks_match_the_spec_sheet(mode):
    p = get_platform("orin-agx-64gb")
    sparse = 2 * p.gpu_peak_tops(p.mode(mode), Precision.INT8)
    assert sparse == pytest.approx(DLASW_GPU_SPARSE_TOPS[mode], rel=0.02)  # the README rounds to whole TOPS


def test_xavier_gpu_peaks_match_the_spec_sheet():
    p = get_platform("xavier-agx")
    m = p.mode("MAXN")
    assert p.gpu_peak_tops(m, Precision.INT8) == pytest.approx(22.6, rel=0.01)
    assert p.gpu_peak_tops(m, Precision.FP16) == pytest.approx(11.3, rel=0.01)
    assert p.dla_cores == 2 and p.dla_version == 1


def test_dla_clocks_come_from_dla_sim():
    from dla_sim.config import ORIN, XAVIER

    for name, cfg in (("orin-agx-64gb", ORIN), ("xavier-agx", XAVIER)):
        for m in get_platform(name).modes.values():
            assert m.dla_clock_mhz == cfg.clocks_mhz[m.name]


def test_xavier_maxn_transition_inside_haxconn_range():
    p = get_platform("xavier-agx")
    nbytes = 28 * 28 * 480 * 2  # a GoogLeNet inception output in FP16
    to_dla, _ = transition_cost_s(p, p.mode("MAXN"), nbytes, "gpu", "dla0")
    to_gpu, _ = transition_cost_s(p, p.mode("MAXN"), nbytes, "dla0", "gpu")
    assert 0.045e-3 <= to_dla <= 0.074e-3
    assert 0.010e-3 <= to_gpu <= 0.043e-3


def test_transitions_grow_with_size_and_in_low_power_modes():
    p = get_platform("orin-agx-64gb")
    small = transition_cost_s(p, p.mode("30W"), 1 << 10, "gpu", "dla0")[0]
    big = transition_cost_s(p, p.mode("30W"), 1 << 22, "gpu", "dla0")[0]
    assert big > small
    assert transition_cost_s(p, p.mode("15W"), 1 << 20, "gpu", "dla0")[0] > \
        transition_cost_s(p, p.mode("MAXN"), 1 << 20, "gpu", "dla0")[0]


def test_unknown_platform_and_mode_are_clear_errors():
    with pytest.raises(BuildError, match="unknown platform 'orin-nano'.*orin-agx-64gb"):
        get_platform("orin-nano")
    with pytest.raises(BuildError, match="no power mode '60W'.*MAXN"):
        get_platform("orin-agx-64gb").mode("60W")
    assert get_platform("orin-agx-64gb").mode("30w").name == "30W"
