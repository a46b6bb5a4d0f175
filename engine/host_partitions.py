"""The builder's last placement step: layers the GPU backend cannot run become host partitions.

Placement gives layers to the GPU; the GPU backend's kernels do not cover every layer. Rather than
let the backend quietly send such layers to the reference backend at run time (a second placement
nobody sees), the builder asks the backend (``supports`` of the backend contract) and cuts each
GPU partition around the layers it refuses: those run as partitions of the ``reference`` backend
on the host, with the reason written into the plan (``reason`` and ``reasons`` of the partition
record), logged here and shown by ``hetrt inspect``. The runtime executes the placement as written.
"""

from __future__ import annotations

from backends.contract import Backend, partition_io
from engine.ir.logger import Logger
from engine.ir.network import Network

HOST_BACKEND = "reference"


def _record(network: Network, base: dict, layers: list[str], backend: str, reasons: dict[str, str]) -> dict:
    ins, outs = partition_io(network, layers)
    rec = {**base, "backend": backend, "layers": list(layers)}
    if "inputs" in base:  # the scheduler's records carry their boundary tensors and formats
        rec.update(inputs=list(ins), outputs=list(outs), formats={t: "linear" for t in (*ins, *outs)})
    if reasons:
        rec["reasons"] = dict(reasons)
        rec["reason"] = "; ".join(f"'{n}': {why}" for n, why in reasons.items())
    return rec


def split_host_layers(network: Network, placement: dict, backend: Backend, logger: Logger) -> int:
    """Cut every partition of ``backend`` around the layers it refuses (in place); returns how
    many layers became host layers."""
    by_name = {la.name: la for la in network.layers}
    records: list[dict] = []
    moved = 0
    for rec in placement.get("partitions", []):
        if rec.get("backend") != backend.name:
            records.append(rec)
            continue
        runs: list[tuple[str, list[str], dict[str, str]]] = []
        for name in rec["layers"]:
            why = backend.supports(by_name[name], network)
            target = backend.name if why is None else HOST_BACKEND
            if why is not None:
                moved += 1
                logger.info(f"layer '{name}' ({by_name[name].kind.value}) has no {backend.name.upper()} kernel "
                            f"({why}); it runs on the reference backend on the host")
            if runs and runs[-1][0] == target:
                runs[-1][1].append(name)
            else:
                runs.append((target, [name], {}))
            if why is not None:
                runs[-1][2][name] = why
        records += [_record(network, rec, layers, target, reasons) for target, layers, reasons in runs]
    placement["partitions"] = records
    if moved:
        n_host = sum(1 for r in records if r.get("backend") == HOST_BACKEND and r.get("reasons"))
        logger.info(f"{moved} layer(s) placed on the host (reference backend) in {n_host} partition(s): the GPU "
                    f"backend has no kernel for them")
    return moved
