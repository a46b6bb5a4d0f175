"""DLA backend: support rules, lowering of IR partitions to dla_sim loadables, execution and cost."""

from .backend import BoundaryTensor, DlaBackend, DlaPartition, DlaRunStats
from .support import Support, supports

__all__ = ["BoundaryTensor", "DlaBackend", "DlaPartition", "DlaRunStats", "Support", "supports"]
