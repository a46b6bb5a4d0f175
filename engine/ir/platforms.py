"""The registry of platform tags a plan may target.

A plan records the platform it was built for; the runtime refuses tags it does not know and, when
asked to, tags other than its own. The SoC models themselves (GPU, DLA cores, DRAM, power modes)
live in ``scheduler``; this module only names them so the plan format does not depend on them.
"""

from __future__ import annotations

KNOWN_PLATFORMS: dict[str, str] = {
    "host": "the machine hetrt runs on (numpy reference backend, CuPy GPU when present)",
    "orin-agx-64gb": "NVIDIA Jetson AGX Orin 64GB (Ampere GPU, 2 DLA v2 cores)",
    "xavier-agx": "NVIDIA Jetson AGX Xavier (Volta GPU, 2 DLA v1 cores)",
}


def register_platform(tag: str, description: str) -> None:
    """Add a platform tag (ASCII, at most 32 characters: it must fit the plan header)."""
    if not tag or len(tag) > 32 or not tag.isascii() or not tag.isprintable():
        raise ValueError(f"platform tag {tag!r} must be 1..32 printable ASCII characters")
    KNOWN_PLATFORMS[tag] = description


def describe_known() -> str:
    return ", ".join(sorted(KNOWN_PLATFORMS))
