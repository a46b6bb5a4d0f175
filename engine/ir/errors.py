"""The project's exception types: every user-facing failure is one of these."""

from __future__ import annotations


class HetrtError(Exception):
    """Base of every error hetrt raises on purpose."""


class NetworkError(HetrtError, ValueError):
    """A layer or tensor of the network definition is invalid (names the layer or tensor)."""


class ParserError(HetrtError, ValueError):
    """The ONNX model cannot be parsed (names the node, op type and opset where it applies)."""


class UnsupportedError(HetrtError, NotImplementedError):
    """A feature exists in the input but hetrt does not implement it (names what is missing)."""


class PlanError(HetrtError, ValueError):
    """A plan file is truncated, corrupt, foreign, from a newer version or another platform."""


class BuildError(HetrtError, RuntimeError):
    """The builder could not produce a plan (bad configuration or impossible request)."""


class ExecutionError(HetrtError, ValueError):
    """Bad execution request: missing or unknown input, wrong shape or dtype."""


class OutputError(HetrtError, OSError):
    """An output file cannot be written (missing folder, no permission, disk full)."""
