"""Per-backend layer tables: every ``LayerKind`` maps to an implementation or to ``Unsupported``.

Each backend dispatches a layer the same way: it looks the layer's kind up in its table. A kind
a backend cannot run is not missing from the table but carries an explicit ``Unsupported`` entry
with the reason, so adding a layer kind means adding one entry per table (``check_complete``
fails for a table that lacks a kind), and the reason a backend refuses a kind is written once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from engine.ir.errors import UnsupportedError
from engine.ir.layers import LayerKind
from engine.ir.network import Layer

T = TypeVar("T")


@dataclass(frozen=True)
class Unsupported:
    """A table entry for a layer kind the backend does not run, with the reason why."""

    reason: str

    def __post_init__(self) -> None:
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise ValueError("an Unsupported table entry needs a non-empty reason")


def check_complete(table: Mapping[LayerKind, object], backend: str) -> None:
    """Raise ``ValueError`` unless every ``LayerKind`` has an entry (an implementation or ``Unsupported``)."""
    missing = [k.value for k in LayerKind if k not in table]
    if missing:
        raise ValueError(f"{backend} layer table has no entry for {missing}; add an implementation or "
                         f"Unsupported('reason')")
    empty = [k.value for k, v in table.items() if v is None]
    if empty:
        raise ValueError(f"{backend} layer table maps {empty} to None; use Unsupported('reason')")


def lookup(table: Mapping[LayerKind, T | Unsupported], layer: Layer, backend: str) -> T:
    """The implementation of ``layer``'s kind, or ``UnsupportedError`` naming the layer and the reason."""
    entry = table.get(layer.kind)
    if entry is None:
        raise UnsupportedError(f"layer {layer.describe()}: kind '{layer.kind.value}' has no entry in the "
                               f"{backend} layer table")
    if isinstance(entry, Unsupported):
        raise UnsupportedError(f"layer {layer.describe()}: {entry.reason}")
    return entry


def implemented(table: Mapping[LayerKind, object]) -> frozenset[LayerKind]:
    """The kinds a table implements (entries that are not ``Unsupported``)."""
    return frozenset(k for k, v in table.items() if v is not None and not isinstance(v, Unsupported))


__all__ = ["Unsupported", "check_complete", "implemented", "lookup"]
