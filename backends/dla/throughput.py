"""Whole-network DLA throughput through the builder's lowering: the path users' networks take
(ONNX -> parser -> optimizer -> ``lower`` -> dla_sim), which is the one the calibration anchors of
the reference notes §3 are checked on (``bench/dla_validation.py``, ``tests/dla_backend``)."""

from __future__ import annotations

from dataclasses import dataclass

from dla_sim import simulator
from dla_sim.config import DlaConfig
from dla_sim.simulator import SimResult
from engine.ir.dtypes import Precision
from engine.ir.errors import UnsupportedError
from engine.ir.network import Network

from .cubes import cube_shape
from .lower import lower
from .support import supports


@dataclass(frozen=True)
class DlaThroughput:
    """Every layer on the DLA: images per second over ``cores`` cores and the simulation behind it."""

    fps: float
    batch: int
    cores: int
    result: SimResult


def network_throughput(network: Network, precision: Precision, cfg: DlaConfig, cores: int = 1) -> DlaThroughput:
    """Images per second with the whole ``network`` on ``cores`` DLA cores of ``cfg`` (the batch split
    over the cores). Raises UnsupportedError naming the first layer the DLA refuses."""
    precision = Precision(precision)
    for layer in network.layers:
        s = supports(layer, network, precision, cfg)
        if not s.ok:
            raise UnsupportedError(f"layer '{layer.name}' cannot run on the DLA: {s.reason}")
    lowered = lower(network, [la.name for la in network.layers], precision, cfg, with_weights=False)
    batch = cube_shape(network.tensors[network.inputs[0]].shape)[0]
    res = simulator.simulate(lowered.ops, cfg, timing_only=True, cores=cores, batch=batch)
    return DlaThroughput(res.fps, batch, cores, res)


__all__ = ["DlaThroughput", "network_throughput"]
