"""Reference policies: GPU only, TensorRT's DLA-first default, and the best single-cut placement."""

from __future__ import annotations

import logging
import time

import numpy as np

from scheduler.costgraph import DEVICES, DLA_CORES, GPU, TRT_MAX_LOADABLES_PER_CORE, CostGraph
from scheduler.objectives import Constraints, Objective, evaluate_many
from scheduler.placement.result import Placement, PlacementError, make_placement

log = logging.getLogger("hetrt.scheduler")


def gpu_only(g: CostGraph, objective: Objective | str = "latency") -> Placement:
    """Every layer on the GPU."""
    objective = Objective.parse(objective)
    t0 = time.perf_counter()
    for n in g.nodes:
        if not n.supports(GPU):
            raise PlacementError(f"gpu-only: layer {n.name!r} cannot run on the GPU: {n.why_not(GPU)}")
    devices = [GPU] * len(g)
    reasons = {n.name: "gpu-only policy" for n in g.nodes}
    return make_placement(g, devices, objective, "gpu-only", time.perf_counter() - t0, reasons)


def dla_first(
    g: CostGraph,
    core: int = 0,
    objective: Objective | str = "latency",
    max_loadables: int = TRT_MAX_LOADABLES_PER_CORE,
) -> Placement:
    """TensorRT's default with ``kGPU_FALLBACK``: every layer the DLA core can run goes there.

    Unsupported layers go to the GPU, each logged with its reason (pseudo nodes, the network's
    I/O, are pinned to the GPU silently: TensorRT has no such layers). The DLA layers then form
    loadables (maximal runs in execution order, see ``scheduler.objectives``). Rule for the cap:
    the first ``max_loadables`` runs in execution order stay on the DLA; every later run falls
    back to the GPU as a whole, with TensorRT's message "DLA supports only 16 subgraphs per DLA
    core. Switching to GPU for layer ...". Moving a whole run to the GPU never merges two other
    runs (its neighbours are GPU layers already), so exactly ``max_loadables`` runs remain.
    """
    objective = Objective.parse(objective)
    t0 = time.perf_counter()
    dla = DLA_CORES[core]
    devices: list[str] = []
    reasons: dict[str, str] = {}
    messages: list[str] = []
    for n in g.nodes:
        if n.supports(dla):
            devices.append(dla)
            reasons[n.name] = f"dla-first: {dla} can run it"
        elif n.supports(GPU) and n.pseudo:
            devices.append(GPU)
            reasons[n.name] = f"pinned to gpu ({n.why_not(dla)})"
        elif n.supports(GPU):
            devices.append(GPU)
            msg = f"Layer '{n.name}': unsupported on DLA ({n.why_not(dla)}). Switching this layer's device type to GPU."
            messages.append(msg)
            reasons[n.name] = f"dla-first fallback: {n.why_not(dla)}"
            log.info(msg)
        else:
            raise PlacementError(
                f"dla-first: layer {n.name!r} runs neither on {dla} ({n.why_not(dla)}) "
                f"nor on the GPU ({n.why_not(GPU)})"
            )
    run = 0
    for i, n in enumerate(g.nodes):
        if devices[i] != dla:
            continue
        if i == 0 or devices[i - 1] != dla:
            run += 1
        if run > max_loadables:
            if not n.supports(GPU):
                raise PlacementError(
                    f"dla-first: DLA loadable {run} on {dla} exceeds the cap of {max_loadables} and layer "
                    f"{n.name!r} cannot fall back to the GPU ({n.why_not(GPU)})"
                )
            devices[i] = GPU
            msg = f"DLA supports only {max_loadables} subgraphs per DLA core. Switching to GPU for layer '{n.name}'."
            messages.append(msg)
            reasons[n.name] = f"dla-first fallback: loadable {run} on {dla} exceeds the cap of {max_loadables}"
            log.info(msg)
    return make_placement(g, devices, objective, f"dla-first({dla})", time.perf_counter() - t0, reasons, messages)


def single_cut_candidates(n: int) -> np.ndarray:
    """All placements with at most one device switch along the execution order: (rows, n)."""
    rows = [np.full(n, i, dtype=np.int8) for i in range(len(DEVICES))]
    for cut in range(1, n):
        for a in range(len(DEVICES)):
            for b in range(len(DEVICES)):
                if a != b:
                    r = np.full(n, b, dtype=np.int8)
                    r[:cut] = a
                    rows.append(r)
    return np.array(rows, dtype=np.int8).reshape(len(rows), n)


def best_single_cut(
    g: CostGraph, objective: Objective | str = "latency", constraints: Constraints | None = None
) -> Placement:
    """AxoNN/HaX-CoNN-style: the best placement that switches device at most once.

    A prefix of the execution order runs on one device and the rest on another (any of gpu, dla0,
    dla1), or everything runs on one device. All 6(n-1)+3 candidates are evaluated exactly."""
    objective = Objective.parse(objective)
    constraints = constraints or Constraints()
    t0 = time.perf_counter()
    cand = single_cut_candidates(len(g))
    bm = evaluate_many(g, cand)
    ok = bm.feasible(constraints)
    if not ok.any():
        raise PlacementError("no single-cut placement meets the constraints " + str(constraints))
    val = np.where(ok, objective.value(bm.latency, bm.energy), np.inf)
    best = int(np.argmin(val))
    devices = [DEVICES[i] for i in cand[best]]
    cut = next((i for i in range(1, len(g)) if cand[best][i] != cand[best][i - 1]), None)
    where = (
        "no switch" if cut is None else f"switch {devices[cut - 1]}->{devices[cut]} before layer {g.nodes[cut].name!r}"
    )
    reasons = {n.name: f"best single cut ({where})" for n in g.nodes}
    return make_placement(
        g, devices, objective, "best-single-cut", time.perf_counter() - t0, reasons, constraints=constraints
    )
