"""The one error for a model that still has unsupported nodes after folding: it lists all of them.

A user who meets ``op type Mod is not supported`` wants to know at once whether ``ScatterND`` is
next, so the parser keeps converting past an unsupported node (what depends on it is skipped) and
reports every unsupported node with its op type, domain and opset in one ``UnsupportedOpsError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.ir.errors import UnsupportedError


@dataclass(frozen=True)
class UnsupportedNode:
    """One node hetrt can neither fold at build time nor convert to layers."""

    node: str
    op_type: str
    domain: str
    opset: int
    reason: str

    def describe(self) -> str:
        return f"node '{self.node}' (op {self.op_type}, domain {self.domain}, opset {self.opset}): {self.reason}"


class UnsupportedOpsError(UnsupportedError):
    """Every unsupported node of a model (``nodes``), after build-time constants were folded."""

    def __init__(self, nodes: list[UnsupportedNode], also: str | None = None) -> None:
        self.nodes = list(nodes)
        ops = sorted({(n.domain, n.op_type) for n in nodes})
        head = (f"{len(nodes)} node(s) of the model use ops hetrt does not support "
                f"(after folding build-time constants): "
                + ", ".join(op if dom == "ai.onnx" else f"{dom}::{op}" for dom, op in ops))
        lines = [head, *("  " + n.describe() for n in nodes)]
        if also:
            lines.append(f"  conversion then stopped at: {also}")
        super().__init__("\n".join(lines))


def strip_where(message: str, where: str) -> str:
    """A converter's message without its ``node '...' (op ..., opset ...): `` prefix."""
    prefix = f"{where}: "
    return message[len(prefix):] if message.startswith(prefix) else message
