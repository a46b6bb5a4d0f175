"""DLA loadables and DLA partition records, checked against dla_sim before a plan is accepted.

A plan's DLA partitions carry opaque loadable bytes (``dla_sim.loadable``) and a record in the
placement (core, loadable index, boundary tensors, configuration). The loadable's own parser checks
its container and wiring; it does not check field types (a descriptor's ``kernel`` may be a
string) nor the hardware limits, which dla_sim otherwise enforces only when an op runs. Here every
descriptor and tensor entry is checked against its annotation, every op against ``dla_sim.limits``
for the plan's DLA configuration and against its unit's output arithmetic, the whole loadable is
simulated once for timing, and loadables up to ``ResourceLimits.dla_dry_run_macs`` run once on zero
inputs, so a forged loadable fails at load with a ``PlanError`` naming the partition, op and field.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engine.ir.errors import PlanError
from engine.ir.network import Network

from .limits import ResourceLimits
from .schema import SchemaError, check_record, json_depth_exceeds


def dla_config_for(platform_tag: str, placement: dict) -> Any:
    """dla_sim's configuration for the plan's platform and power mode (PlanError when there is none)."""
    from scheduler.dla_source import dla_config
    from scheduler.platforms import PLATFORMS

    plat = PLATFORMS.get(platform_tag)
    if plat is None or not getattr(plat, "dla_cores", 0):
        raise PlanError(f"plan placement: DLA partitions on platform '{platform_tag}', which has no DLA")
    mode = placement.get("power_mode")
    if mode is not None and not isinstance(mode, str):
        raise PlanError(f"plan placement: 'power_mode' must be a string, got {type(mode).__name__}")
    try:
        return dla_config(plat, plat.mode(mode))
    except Exception as e:  # BuildError/UnsupportedError for an unknown mode
        raise PlanError(f"plan placement: power_mode {mode!r}: {e}") from None


def validate_loadable(blob: bytes, cfg: Any, where: str, limits: ResourceLimits) -> Any:
    """Parse ``blob`` with dla_sim and check every tensor and op; returns the ``Loadable``."""
    from dla_sim import limits as hw_limits
    from dla_sim import simulator
    from dla_sim.loadable import Loadable, TensorEntry

    try:
        ld = Loadable.from_bytes(bytes(blob))
    except RecursionError:
        raise PlanError(f"{where}: manifest nests too deep") from None
    except Exception as e:  # LoadableError, and TypeError/ValueError from descriptors of forged fields
        raise PlanError(f"{where}: {type(e).__name__}: {e}") from None
    if json_depth_exceeds(ld.meta, limits.max_json_depth):
        raise PlanError(f"{where}: meta nests deeper than {limits.max_json_depth}")
    if ld.config_name and ld.config_name != cfg.name:
        raise PlanError(f"{where}: built for DLA configuration '{ld.config_name}', the plan's platform has "
                        f"'{cfg.name}'")
    sram = getattr(cfg.mem, "sram_bytes", 0)
    try:
        for t in ld.tensors.values():
            check_record(t, TensorEntry, f"tensor '{t.name}'")
            if t.cube is not None and min(t.cube.shape) < 1:
                raise SchemaError(f"tensor '{t.name}': cube {t.cube.shape} is empty or negative")
            if t.memory == "sram" and t.offset + t.size > sram:
                raise SchemaError(f"tensor '{t.name}': bytes [{t.offset}, {t.offset + t.size}) outside the "
                                  f"{sram}-byte SRAM")
        for i, op in enumerate(ld.ops):
            check_record(op, type(op), f"op {i} ('{op.name}')")
    except SchemaError as e:
        raise PlanError(f"{where}: {e}") from None
    for i, op in enumerate(ld.ops):
        try:
            reasons = _positive(op) or (hw_limits.check(op, cfg) + _geometry(op))
        except Exception as e:  # a checker tripping over a value the annotations allow
            raise PlanError(f"{where}: op {i} ('{op.name}'): {type(e).__name__}: {e}") from None
        if reasons:
            raise PlanError(f"{where}: op {i} ('{op.name}', {op.unit}) exceeds the DLA's limits: "
                            + "; ".join(reasons))
    _check_meta(ld.meta, ld.tensors, where)
    try:
        simulator.simulate(ld, cfg, timing_only=True)
    except Exception as e:  # anything the timing model cannot follow would fail the first execute
        raise PlanError(f"{where}: does not simulate: {type(e).__name__}: {e}") from None
    if sum(op.macs for op in ld.ops if op.unit == "conv") <= limits.dla_dry_run_macs:
        _dry_run(ld, cfg, where)
    return ld


def _dry_run(ld: Any, cfg: Any, where: str) -> None:
    """Run the loadable once on zero inputs: every cube, operand and wire the functional model needs
    is then known to fit (the wiring between ops is too rich to restate here)."""
    from backends.dla.runner import run

    feeds = {}
    for name, _ in ld.meta.get("inputs", []):
        cube = ld.tensors[name].cube
        if cube is None:
            raise PlanError(f"{where}: input tensor '{name}' has no cube description")
        try:
            feeds[name] = np.zeros(cube.shape, cube.precision.dtype)
        except (ValueError, TypeError, MemoryError) as e:
            raise PlanError(f"{where}: input tensor '{name}': cube {cube.shape}: {e}") from None
    try:
        env = run(ld, cfg, feeds)
    except Exception as e:  # the functional model's own checks (shapes, operands, limits)
        raise PlanError(f"{where}: does not run on dla_sim: {type(e).__name__}: {e}") from None
    missing = [name for name, _ in ld.meta.get("outputs", []) if name not in env]
    if missing:
        raise PlanError(f"{where}: outputs {missing[:3]} are never computed")


def _positive(op: Any) -> list[str]:
    """Window fields that divide or count: each value at least 1, cube dimensions too."""
    bad = [f"{name} {getattr(op, name)} must be >= 1" for name in ("kernel", "stride", "dilation")
           if isinstance(getattr(op, name, None), tuple) and min(getattr(op, name), default=1) < 1]
    if getattr(op, "groups", 1) < 1:
        bad.append(f"groups {op.groups} must be >= 1")
    for cube in ("input", "output"):
        c = getattr(op, cube, None)
        if c is not None and hasattr(c, "shape") and min(c.shape) < 1:
            bad.append(f"{cube} cube {c.shape} is empty")
    return bad


def _geometry(op: Any) -> list[str]:
    """Output cubes that the unit's arithmetic would not produce (dla_sim checks them only when the
    op runs)."""
    from dla_sim import conv_core, pdp

    unit = op.unit
    if unit == "conv" and (op.output.h, op.output.w) != conv_core.output_hw(op):
        return [f"output {op.output.shape} does not match the convolution arithmetic {conv_core.output_hw(op)}"]
    if unit == "pdp" and op.output.shape != pdp.output_shape(op):
        return [f"output {op.output.shape} does not match the window arithmetic {pdp.output_shape(op)}"]
    if unit in ("sdp", "cdp") and op.output.shape != op.input.shape:
        return [f"output {op.output.shape} differs from input {op.input.shape}"]
    if unit in ("conv", "sdp", "pdp", "cdp") and min(op.input.shape + op.output.shape) < 1:
        return ["empty cube"]
    return []


def _check_meta(meta: dict, tensors: dict, where: str) -> None:
    """The meta fields the DLA backend reads: boundary names, owners, boundary representations."""
    for key in ("inputs", "outputs"):
        items = meta.get(key, [])
        if not isinstance(items, list) or not all(isinstance(x, list) and len(x) == 2 and isinstance(x[0], str)
                                                  and x[0] in tensors for x in items):
            raise PlanError(f"{where}: meta '{key}' must be a list of [tensor name, format] pairs naming tensors "
                            f"of the loadable")
    owners = meta.get("owners", [])
    if not isinstance(owners, list) or not all(isinstance(o, str) for o in owners):
        raise PlanError(f"{where}: meta 'owners' must be a list of strings")
    boundary = meta.get("boundary") or {}
    if not isinstance(boundary, dict) or not all(isinstance(v, dict) for v in boundary.values()):
        raise PlanError(f"{where}: meta 'boundary' must map tensor names to objects")
    for name, rep in boundary.items():
        try:
            from backends.dla.int8 import Rep

            scale = Rep.from_json(rep).scale
            if scale is not None and not (math.isfinite(scale) and scale > 0):
                raise ValueError(f"scale {scale} must be finite and > 0")
        except Exception as e:
            raise PlanError(f"{where}: meta boundary '{name}': {type(e).__name__}: {e}") from None


def _names(record: dict, key: str, network: Network, where: str) -> list[str]:
    value = record.get(key, [])
    if not isinstance(value, list) or not all(isinstance(n, str) and n in network.tensors for n in value):
        raise PlanError(f"{where}: '{key}' must list tensors of the network")
    return value


def validate_dla_partitions(records: list[dict], loadables: list[bytes], network: Network, platform: str,
                            placement: dict, limits: ResourceLimits) -> None:
    """Every DLA partition record and the loadable it names."""
    dla = [(i, r) for i, r in enumerate(records) if r.get("device") == "dla"]
    if not dla:
        return
    cfg = dla_config_for(platform, placement)
    used: dict[int, int] = {}
    for i, r in dla:
        where = f"plan placement: DLA partition {i}"
        idx = r.get("loadable")
        if type(idx) is not int or not 0 <= idx < len(loadables):
            raise PlanError(f"{where}: 'loadable' {idx!r} is not an index of the plan's {len(loadables)} loadables")
        if idx in used:
            raise PlanError(f"{where}: loadable {idx} is already used by partition {used[idx]}")
        used[idx] = i
        if r.get("backend", "dla") != "dla":
            raise PlanError(f"{where}: backend {r.get('backend')!r} cannot run a DLA partition")
        config = r.get("dla_config")
        if config not in (None, "", cfg.name):
            raise PlanError(f"{where}: 'dla_config' {config!r} is not the platform's DLA '{cfg.name}'")
        ins, outs = _names(r, "dla_inputs", network, where), _names(r, "dla_outputs", network, where)
        ld = validate_loadable(loadables[idx], cfg, f"{where}, loadable {idx}", limits)
        for key, names in (("inputs", ins), ("outputs", outs)):
            have = sorted(x[0] for x in ld.meta.get(key, []))
            if sorted(names) != have:
                raise PlanError(f"{where}: 'dla_{key}' {sorted(names)[:3]} are not the loadable's {key} {have[:3]}")
