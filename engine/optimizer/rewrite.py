"""The record of one graph rewrite, and how the verbose build log words it (TensorRT's phrasing)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rewrite:
    """One change a pass made to the network.

    ``pass_name`` is the TensorRT-style label of the rewrite (``ConvReluFusion``); ``action`` is
    one of ``fuse``, ``merge``, ``remove``, ``fold``, ``absorb``, ``eliminate``, ``restore``,
    ``reorder``; ``layers`` are the names of the layers it consumed (in data-flow order) and
    ``result`` the name of the layer that now stands for them (None when they were removed outright).
    """

    pass_name: str
    action: str
    layers: tuple[str, ...]
    result: str | None = None
    detail: str = ""

    @property
    def message(self) -> str:
        """The line the verbose build log shows for this rewrite."""
        names = self.layers
        if self.action == "fuse":
            text = f"{self.pass_name}: Fusing " + " with ".join(names)
        elif self.action == "merge":
            text = "Merging layers: " + " || ".join(names)
        elif self.action == "remove":
            text = f"Removing {names[0]}"
        elif self.action == "fold":
            text = f"Folding constant layers: {', '.join(names)}"
        elif self.action == "absorb":
            text = f"{self.pass_name}: Absorbing {names[0]} into {names[1]} as {self.result}"
        elif self.action == "eliminate":
            text = f"Eliminating concatenation {names[0]}"
        elif self.action == "restore":
            text = f"Restoring concatenation {names[0]} (its inputs can no longer be written in place)"
        else:
            text = f"{self.pass_name}: {self.action} {', '.join(names)}"
        return f"{text} ({self.detail})" if self.detail else text
