"""Platforms as data: Jetson AGX Orin 64GB, Jetson AGX Xavier, and ``host`` (see each module).

``get_platform(name)`` returns a frozen :class:`Platform`; ``platform.mode("30W")`` one of its
power modes. Unknown names are a ``BuildError`` that lists the known ones.
"""

from __future__ import annotations

from types import MappingProxyType

from engine.ir.errors import BuildError
from engine.ir.platforms import KNOWN_PLATFORMS, register_platform

from .host import HOST
from .jetson import ORIN_AGX_64GB, XAVIER_AGX
from .model import DLA_TO_GPU, GPU_TO_DLA, GpuArch, Platform, PowerMode, TransitionSpec

PLATFORMS: MappingProxyType = MappingProxyType({p.name: p for p in (ORIN_AGX_64GB, XAVIER_AGX, HOST)})

for _p in PLATFORMS.values():  # the plan format knows every platform the scheduler models
    if _p.name not in KNOWN_PLATFORMS:
        register_platform(_p.name, _p.description)


def get_platform(name: str) -> Platform:
    key = str(name).strip().lower()
    if key not in PLATFORMS:
        raise BuildError(f"unknown platform '{name}'; known platforms: {', '.join(sorted(PLATFORMS))}")
    return PLATFORMS[key]


def platform_names() -> list[str]:
    return sorted(PLATFORMS)


__all__ = ["DLA_TO_GPU", "GPU_TO_DLA", "PLATFORMS", "GpuArch", "Platform", "PowerMode", "TransitionSpec",
           "get_platform", "platform_names"]
