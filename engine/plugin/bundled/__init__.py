"""Plugins shipped with hetrt, registered when ``engine.plugin`` is imported."""

from engine.plugin.bundled import nms, reorg  # noqa: F401 (registration)
