"""The plan verifier: everything a decoded plan says, checked before anything executes.

``engine.plan`` calls :func:`verify_contents` at the end of ``deserialize`` and at the start of
``serialize``, so the runtime never sees a plan that fails it and the builder never writes one.
Each check is linear in the size of the plan (layers, tensors, partitions, tactics).
"""

from __future__ import annotations

from typing import Any

from engine.ir.errors import PlanError
from engine.ir.network import Network

from .dla_loadable import validate_dla_partitions
from .gpu_tactics import validate_tactics
from .limits import DEFAULT_LIMITS, ResourceLimits
from .network import check_network
from .schema import json_depth_exceeds

DEVICES = ("gpu", "dla")
FREE_DICTS = ("build_config", "placement", "tactics", "memory_plan", "metadata")


def check_json_depth(manifest: Any, limits: ResourceLimits = DEFAULT_LIMITS) -> None:
    if json_depth_exceeds(manifest, limits.max_json_depth):
        raise PlanError(f"plan manifest nests deeper than {limits.max_json_depth} levels")


def check_partitions(placement: dict, network: Network) -> list[dict]:
    """The placement's partition records: known layers, each in one partition, known devices."""
    raw = placement.get("partitions", [])
    if not isinstance(raw, list):
        raise PlanError("plan placement: 'partitions' must be a list")
    layers = {layer.name for layer in network.layers}
    seen: dict[str, int] = {}
    for i, p in enumerate(raw):
        where = f"plan placement: partition {i}"
        if not isinstance(p, dict) or not isinstance(p.get("layers"), list):
            raise PlanError(f"{where} must be an object with a 'layers' list")
        device, backend = p.get("device", "gpu"), p.get("backend", "reference")
        if device not in DEVICES:
            raise PlanError(f"{where}: device {device!r} is not one of {list(DEVICES)}")
        if not isinstance(backend, str):
            raise PlanError(f"{where}: backend must be a string, got {type(backend).__name__}")
        for name in p["layers"]:
            if not isinstance(name, str) or name not in layers:
                raise PlanError(f"{where} names unknown layer {name!r}")
            if name in seen:
                raise PlanError(f"plan placement: layer '{name}' is in partitions {seen[name]} and {i}")
            seen[name] = i
        if device == "dla" and (type(p.get("core")) is not int or p["core"] < 0):
            raise PlanError(f"{where}: DLA 'core' must be an integer >= 0, got {p.get('core')!r}")
    return raw


def verify_contents(contents: Any, limits: ResourceLimits | None = None, *, network_checked: bool = False) -> None:
    """Every field of ``contents`` (a ``PlanContents``); raises PlanError naming what is wrong."""
    limits = limits or DEFAULT_LIMITS
    network = contents.network
    if not network_checked:
        check_network(network, limits)
    for key in FREE_DICTS:
        value = getattr(contents, key)
        if not isinstance(value, dict):
            raise PlanError(f"plan {key} must be an object, got {type(value).__name__}")
        if json_depth_exceeds(value, limits.max_json_depth):
            raise PlanError(f"plan {key} nests deeper than {limits.max_json_depth} levels")
    records = check_partitions(contents.placement, network)
    validate_tactics(contents.tactics, network)
    validate_dla_partitions(records, list(contents.loadables), network, contents.platform, contents.placement,
                            limits)
