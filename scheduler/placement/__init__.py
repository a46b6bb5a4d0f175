"""Placement policies: where each layer of a network runs (GPU, DLA core 0, DLA core 1)."""

from scheduler.placement.baselines import best_single_cut, dla_first, gpu_only
from scheduler.placement.exact import optimal
from scheduler.placement.result import Placement, PlacementError

__all__ = ["Placement", "PlacementError", "best_single_cut", "dla_first", "gpu_only", "optimal"]
