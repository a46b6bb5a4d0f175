"""Where DLA support answers and DLA layer costs come from: the DLA backend (``backends.dla``).

The backend's interface (its ``INTERFACE.md``): ``supports(layer, network, precision, cfg) ->
Support(ok, reason)`` and ``DlaBackend(cfg, core).layer_costs(network, precision) -> {layer:
(time_s, energy_J)}``, costed by dla_sim for each layer in its context (fusion into hardware layers,
CBUF fit). This module adapts it to the cost model and fixes the DLA configuration per platform
power mode: dla_sim's configuration at the mode's clock, with the mode's DRAM bandwidth.

Voltage: dla_sim's energy figures hold at the configuration's ``energy.vdd`` (the top of the DLA's
DVFS curve). At a mode whose DLA rail runs at ``mode.dla_vdd`` the on-chip switching energy is
C x V^2 at that voltage: the configuration given to dla_sim carries ``vdd = mode.dla_vdd`` (which
scales its per-operation post-processing, CBUF and SRAM energies) and its published whole-core pJ
per MAC x ``(mode.dla_vdd / energy.vdd)^2``; DRAM energy and static power are left as they are.

Energy convention: dla_sim's energy includes its core's static power over the run
(``dla_sim.energy``: ``static_mw`` x time). The CostGraph charges static power per rail for the whole
inference, so the static part is removed here (clamped at zero) to avoid counting it twice.

A source other than the backend (``DlaCostSource`` protocol) is only for tests of ordering and
synchronization; it never produces reported DLA numbers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from dla_sim.config import DlaConfig, EnergyConfig, get_config
from engine.ir.dtypes import Precision
from engine.ir.errors import UnsupportedError
from engine.ir.network import Layer, Network

from .platforms import Platform, PowerMode

FP32_ON_DLA = "the DLA runs FP16 and INT8 only; add --fp16 or --int8"


class DlaCostSource(Protocol):
    name: str

    def supports(self, layer: Layer, network: Network, precision: Precision) -> tuple[bool, str]: ...

    def layer_costs(self, network: Network, precision: Precision, core: int) -> dict[str, tuple[float, float]]: ...


def dla_config(platform: Platform, mode: PowerMode) -> DlaConfig:
    """dla_sim's configuration of ``platform`` at ``mode``: its clock, DRAM bandwidth and rail voltage."""
    base = get_config(platform.dla_config)
    clock_mode = next((m for m, c in base.clocks_mhz.items() if abs(c - mode.dla_clock_mhz) < 1e-6), None)
    if clock_mode is None:
        raise UnsupportedError(f"dla_sim configuration '{base.name}' has no power mode at {mode.dla_clock_mhz} MHz "
                               f"(platform {platform.name} mode {mode.name})")
    cfg = base.with_mode(clock_mode)
    return replace(cfg, mem=replace(cfg.mem, dram_gbps=mode.dram_gbps), energy=mode_energy(cfg.energy, mode))


def mode_energy(e: EnergyConfig, mode: PowerMode) -> EnergyConfig:
    """``e`` at the mode's DLA rail voltage: C x V^2 scaling of the on-chip energies (see module doc)."""
    if mode.dla_vdd <= 0:
        return e
    k = (mode.dla_vdd / e.vdd) ** 2
    return replace(e, vdd=mode.dla_vdd,
                   mac_pj_int8=None if e.mac_pj_int8 is None else e.mac_pj_int8 * k,
                   mac_pj_fp16=None if e.mac_pj_fp16 is None else e.mac_pj_fp16 * k)


def _backend():
    try:
        import backends.dla as dla
    except ImportError as e:  # pragma: no cover - the package exists in this tree
        raise UnsupportedError(f"DLA costs need the DLA backend (backends.dla): {e}") from None
    missing = [n for n in ("supports", "DlaBackend") if not hasattr(dla, n)]
    if missing:
        raise UnsupportedError(f"DLA placement needs backends.dla.{' and backends.dla.'.join(missing)}, which this "
                               "installation does not provide yet; place with --policy gpu-only")
    return dla


class BackendDlaSource:
    """The real DLA: support and costs from ``backends.dla`` on dla_sim."""

    name = "dla_sim (backends.dla)"

    def __init__(self, platform: Platform, mode: PowerMode) -> None:
        self.platform = platform
        self.mode = mode
        self.cfg = dla_config(platform, mode)
        self._dla = _backend()

    def supports(self, layer: Layer, network: Network, precision: Precision) -> tuple[bool, str]:
        s = self._dla.supports(layer, network, precision, self.cfg)
        ok = bool(getattr(s, "ok", s[0] if isinstance(s, tuple) else s))
        reason = getattr(s, "reason", s[1] if isinstance(s, tuple) and len(s) > 1 else "")
        return ok, str(reason or "")

    def layer_costs(self, network: Network, precision: Precision, core: int) -> dict[str, tuple[float, float]]:
        raw = self._dla.DlaBackend(self.cfg, core).layer_costs(network, precision)
        static_w = self.cfg.energy.static_mw * 1e-3
        return {name: (float(t), max(0.0, float(e) - static_w * float(t))) for name, (t, e) in raw.items()}
