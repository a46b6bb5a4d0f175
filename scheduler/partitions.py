"""Partitions of a placement: maximal runs of consecutive layers (execution order) on one device.

A partition is what one device executes per submission (a DLA loadable, a GPU graph). Its boundary
tensors (``engine.ir.partition_io``) are the tensors it reads from outside (network inputs or other
partitions' outputs) and the tensors it writes that someone outside reads (other partitions or the
network outputs), with
the format each crosses the boundary in: the DLA's native kCHW16 (FP16) / kCHW32 (INT8) on the DLA
side, linear on the GPU side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine.ir.dtypes import Precision
from engine.ir.network import Network
from engine.ir.partition_io import partition_io


@dataclass(frozen=True)
class PartitionSpec:
    index: int
    device: str  # "gpu" | "dla"
    core: int | None  # DLA core, None on the GPU
    layers: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    formats: Mapping[str, str]

    @property
    def lane(self) -> str:
        return "gpu" if self.device == "gpu" else f"dla{self.core}"

    def to_dict(self) -> dict:
        return {"device": self.device, "core": self.core, "layers": list(self.layers), "inputs": list(self.inputs),
                "outputs": list(self.outputs), "formats": dict(self.formats)}


def dla_format(precision: Precision | str) -> str:
    return "kCHW32" if Precision(precision) is Precision.INT8 else "kCHW16"


def split_partitions(network: Network, devices: Mapping[str, str], precision: Precision | str) -> list[PartitionSpec]:
    """``devices``: layer -> 'gpu' | 'dla0' | 'dla1'. Partitions in execution order."""
    runs: list[tuple[str, list[str]]] = []
    for layer in network.layers:
        d = devices[layer.name]
        if runs and runs[-1][0] == d:
            runs[-1][1].append(layer.name)
        else:
            runs.append((d, [layer.name]))
    out: list[PartitionSpec] = []
    for i, (d, names) in enumerate(runs):
        io = partition_io(network, names)
        ins, outs = io.inputs, io.outputs
        is_dla = d.startswith("dla")
        fmt = dla_format(precision) if is_dla else "linear"
        out.append(PartitionSpec(i, "dla" if is_dla else "gpu", int(d[3:]) if is_dla else None, tuple(names),
                                 ins, outs, {t: fmt for t in (*ins, *outs)}))
    return out


def specs_from_records(network: Network, records: list[dict], precision: Precision | str) -> list[PartitionSpec]:
    """Partition specs from a plan's partition records (boundaries recomputed from the network)."""
    devices: dict[str, str] = {}
    for r in records:
        core = r.get("core")
        lane = "gpu" if r.get("device", "gpu") != "dla" else f"dla{int(core or 0)}"
        for name in r["layers"]:
            devices[name] = lane
    for layer in network.layers:
        devices.setdefault(layer.name, "gpu")
    specs = split_partitions(network, devices, precision)
    return specs
